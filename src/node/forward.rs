//! Forwarding of writes from a follower to the leader (`/raft/forward`).
//!
//! A follower never proposes: it sends the validated [`Request`] to the
//! leader, whose proposer packs it with its own clients' requests. Whether a
//! failed forward may be retried depends on whether the leader can have taken
//! it; [`ForwardError`] keeps that distinction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::command::{Reply, Request};
use crate::raft::network::SECRET_HEADER;
use crate::raft::NodeId;

/// Body of `POST /raft/forward`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The write to propose.
    pub request: Request,
    /// How long the leader may take, in milliseconds.
    pub timeout_ms: u64,
}

/// Answer of `POST /raft/forward`.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Committed and applied on the leader at this log index.
    Committed {
        /// The state machine's answer.
        reply: Reply,
        /// Log index of the entry; the follower waits to apply it too.
        log_index: u64,
    },
    /// The target is not the leader and did not append the request.
    NotLeader {
        /// Who it thinks leads.
        leader: Option<NodeId>,
    },
    /// The leader proposed it but does not know whether it committed.
    Unknown(String),
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The leader provably did not take the request (connection refused,
    /// or it answered that it is not the leader): safe to retry.
    #[error("leader unavailable: {0}")]
    NotTaken(String),
    /// The request may have been taken: retrying could apply it twice.
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// HTTP client for forwarding to the leader.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    secret: Option<String>,
}

impl Forwarder {
    /// A forwarder that authenticates with `secret` if set.
    pub fn new(secret: Option<String>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client, secret }
    }

    /// Sends `request` to the leader at `leader_url` and waits up to
    /// `timeout` for its answer.
    pub async fn forward(
        &self,
        leader_url: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<ForwardReply, ForwardError> {
        let body = ForwardRequestRef { request, timeout_ms: timeout.as_millis() as u64 };
        let bytes = codec::encode(&body).map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        let mut http = self
            .client
            .post(format!("{}/raft/forward", leader_url.trim_end_matches('/')))
            .timeout(timeout + Duration::from_millis(200))
            .body(bytes);
        if let Some(secret) = &self.secret {
            http = http.header(SECRET_HEADER, secret);
        }
        let response = http.send().await.map_err(|e| {
            if e.is_connect() {
                ForwardError::NotTaken(e.to_string())
            } else {
                ForwardError::Unknown(e.to_string())
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            // The leader's router refused the request before handling it.
            return Err(ForwardError::NotTaken(format!("leader answered {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| ForwardError::Unknown(e.to_string()))?;
        codec::decode(&bytes).map_err(|e| ForwardError::Unknown(e.to_string()))
    }
}

/// Borrowing twin of [`ForwardRequest`] (same encoding).
#[derive(Serialize)]
struct ForwardRequestRef<'a> {
    request: &'a Request,
    timeout_ms: u64,
}

impl Forwarder {
    /// Asks the leader at `leader_url` for its read index (`/raft/read-index`).
    pub async fn read_index(&self, leader_url: &str, timeout: Duration) -> Result<u64, ForwardError> {
        let mut http =
            self.client.post(format!("{}/raft/read-index", leader_url.trim_end_matches('/'))).timeout(timeout);
        if let Some(secret) = &self.secret {
            http = http.header(SECRET_HEADER, secret);
        }
        let response = http.send().await.map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ForwardError::NotTaken(format!("leader answered {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        let answer: Result<u64, String> = codec::decode(&bytes).map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        answer.map_err(ForwardError::NotTaken)
    }
}
