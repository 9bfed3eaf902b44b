//! `synap-chaos` as a library: the pieces its integration tests use.
//!
//! - [`powercut`]: a FUSE file system that loses unsynced writes on demand,
//!   for power-cut faults and the durability tests;
//! - [`process`]: a restartable `synap` process, for the local target and
//!   the integration tests of both crates.

pub mod powercut;
pub mod process;
