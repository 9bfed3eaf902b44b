//! Synap: a clustered, replicated event-stream server.
pub mod codec;
pub mod command;
pub mod raft;
pub mod store;
