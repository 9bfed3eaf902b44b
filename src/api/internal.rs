//! The server half of the cluster's internal transport (`/raft/*`):
//! openraft's RPCs, write forwarding and read indexes, all bincode. Guarded
//! by the cluster secret when one is configured.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::codec;
use crate::node::forward::ForwardRequest;
use crate::peer::SECRET_HEADER;

/// Refuses internal requests that do not carry the cluster secret.
pub async fn require_secret(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(secret) = &app.node.config.cluster_secret {
        let given = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, secret.as_bytes()) {
            return ApiError::unauthorized("missing or wrong cluster secret").into_response();
        }
    }
    next.run(request).await
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    codec::decode(body).map_err(|e| ApiError::bad_request(format!("undecodable body: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response, ApiError> {
    let bytes = codec::encode(value).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(bytes.into_response())
}

/// `POST /raft/append`
pub async fn append(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    encode(&app.node.raft.append_entries(decode(&body)?).await)
}

/// `POST /raft/vote`
pub async fn vote(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    encode(&app.node.raft.vote(decode(&body)?).await)
}

/// `POST /raft/snapshot` (one chunk)
pub async fn snapshot(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    encode(&app.node.raft.install_snapshot(decode(&body)?).await)
}

/// `POST /raft/forward`: a follower's writes, proposed here if we lead,
/// answered one by one in order.
pub async fn forward(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let forwarded: ForwardRequest = decode(&body)?;
    let timeout = Duration::from_millis(forwarded.timeout_ms).min(app.node.config.write_timeout);
    // All to the local proposer at once: they land in the same group-commit
    // batch.
    let proposals = forwarded.requests.into_iter().map(|r| app.node.propose_forwarded(r, timeout));
    encode(&futures_util::future::join_all(proposals).await)
}

/// `POST /raft/read-index`: the leader's linearizable read point.
pub async fn read_index(State(app): State<AppState>) -> Result<Response, ApiError> {
    let answer: Result<u64, String> = app.node.local_read_index().await.map_err(|e| e.to_string());
    encode(&answer)
}
