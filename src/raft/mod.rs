//! The consensus layer: openraft's type configuration, the sled-backed log
//! store, the state machine adapter and the HTTP network.

// openraft's traits fix `StorageError` (200+ bytes) as the error type of
// every storage call; boxing it is not ours to choose.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::sync::Arc;

use crate::command::{Command, Reply};

/// Identifier of a cluster member (`--id`).
pub type NodeId = u64;

/// What the cluster knows about a member: its advertised base URL.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Synap's openraft type configuration.
    pub TypeConfig:
        // Shared, so that handing an entry out of the log's cache of recent
        // entries (to the state machine and to each follower's replication)
        // is a reference count, not a copy of every event. Serialized as
        // the command itself.
        D = Arc<Command>,
        R = Vec<Reply>,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of this node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Log position.
pub type LogId = openraft::LogId<NodeId>;
/// What openraft reports about this node's Raft.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
/// Storage error as openraft expects it.
pub type StorageError = openraft::StorageError<NodeId>;
