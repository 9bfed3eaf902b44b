//! The operations behind every surface. The REST handlers, the command
//! endpoint, subscriptions and the coming publish socket and consumers call
//! [`Rooms`] and [`Kv`], never the node's write path directly.
//!
//! Inputs are typed and already validated (`api::input` does that at the
//! edge); answers are typed; failures are a [`ServiceError`], which the API
//! turns into its one error answer.

pub mod consumers;
pub mod kv;
pub mod rooms;

pub use consumers::Consumers;
pub use kv::Kv;
pub use rooms::{PageRequest, RoomPage, Rooms};

use crate::command::{Rejection, Reply, Request};
use crate::hub::SubscribeError;
use crate::node::{Node, WriteError};
use crate::store::StoreError;

/// Why an operation did not produce its answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The state machine refused the request (it changed nothing).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// No leader took it, or its outcome is unknown.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// This node's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A subscription could not be opened.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The state machine answered a request with a reply of another kind:
    /// a bug.
    #[error("unexpected reply to {what}: {reply}")]
    Unexpected {
        /// The operation.
        what: &'static str,
        /// The reply, for the log.
        reply: String,
    },
}

impl ServiceError {
    fn unexpected(what: &'static str, reply: Reply) -> Self {
        Self::Unexpected { what, reply: format!("{reply:?}") }
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// What this node has applied (may trail the leader by the replication
    /// lag).
    #[default]
    Local,
    /// Everything the leader had committed when the read arrived
    /// (linearizable).
    Strong,
}

/// Gets `request` committed and applied through `node`; a refusal by the
/// state machine becomes [`ServiceError::Rejected`].
async fn write(node: &Node, request: Request) -> Result<Reply, ServiceError> {
    match node.write(request).await? {
        Reply::Rejected(rejection) => Err(rejection.into()),
        reply => Ok(reply),
    }
}

/// Waits until `node` may serve a read of `consistency`.
async fn read_point(node: &Node, consistency: Consistency) -> Result<(), ServiceError> {
    match consistency {
        Consistency::Local => Ok(()),
        Consistency::Strong => Ok(node.read_barrier().await?),
    }
}
