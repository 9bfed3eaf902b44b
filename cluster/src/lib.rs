//! `synap-chaos` as a library: the pieces its integration tests use.
//!
//! - [`powercut`]: a FUSE file system that loses unsynced writes on demand,
//!   for power-cut faults and the durability tests.

pub mod powercut;
