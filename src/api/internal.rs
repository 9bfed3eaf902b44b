//! The server half of the cluster's internal transport (`/raft/*`):
//! openraft's RPCs, write forwarding and read indexes, all bincode. Guarded
//! by the cluster secret when one is configured.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::codec;
use crate::node::forward::ForwardRequest;
use crate::node::identity::Introduction;
use crate::peer::{CLUSTER_HEADER, INCARNATION_HEADER, NODE_HEADER, SECRET_HEADER};
use crate::tls::listener::Peer;
use crate::tls::TlsFiles;

/// Refuses internal requests that do not carry the cluster secret.
pub async fn require_secret(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match check_client_certificate(&app, &request).and_then(|()| check_secret(&app, request.headers())) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Refuses internal requests that do not carry the cluster secret, or that
/// come from another cluster or from a node whose data directory is not the
/// one this cluster knows it by (a wiped or replaced node).
pub async fn require_member(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let checked = check_client_certificate(&app, &request)
        .and_then(|()| check_secret(&app, request.headers()))
        .and_then(|()| check_sender(&app, request.headers()));
    match checked {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// With `--tls-client-ca`, only connections that presented a certificate
/// the client CA verified reach `/raft/*` (the TLS handshake lets
/// anonymous clients through, for the public API).
fn check_client_certificate(app: &AppState, request: &Request) -> Result<(), ApiError> {
    if !app.node.config.tls.as_ref().is_some_and(TlsFiles::mutual) {
        return Ok(());
    }
    match request.extensions().get::<ConnectInfo<Peer>>() {
        Some(ConnectInfo(peer)) if peer.certified => Ok(()),
        _ => Err(ApiError::forbidden("/raft/* requires a client certificate signed by this cluster's --tls-client-ca")),
    }
}

fn check_secret(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(secret) = &app.node.config.cluster_secret {
        let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, secret.as_bytes()) {
            return Err(ApiError::unauthorized("missing or wrong cluster secret"));
        }
    }
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Senders that say nothing (versions before these headers) pass.
fn check_sender(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let store = &app.node.store;
    if let (Some(theirs), Some(ours)) = (header(headers, CLUSTER_HEADER), store.cluster_id()?) {
        if theirs != ours {
            return Err(ApiError::conflict(format!("a request from cluster {theirs}; this node belongs to {ours}")));
        }
    }
    let node = header(headers, NODE_HEADER).and_then(|n| n.parse::<u64>().ok());
    if let (Some(node), Some(incarnation)) = (node, header(headers, INCARNATION_HEADER)) {
        if let Some(known) = store.incarnation(node)? {
            if known != incarnation {
                return Err(ApiError::conflict(format!(
                    "node {node} runs a data directory this cluster does not know (incarnation {incarnation}, \
                     expected {known}): it was wiped or replaced; remove node {node} and let it join again"
                )));
            }
        }
    }
    Ok(())
}

/// `POST /raft/identity`: who this node is and what it knows of its
/// cluster, for a starting or joining node (the body names the asker).
pub async fn identity(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let asking: u64 = decode(&body)?;
    let node = &app.node;
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
    let introduction = Introduction {
        identity: node.identity.clone(),
        initialized: !members.is_empty(),
        cluster: node.store.cluster_id()?,
        members,
        recorded: node.store.incarnation(asking)?,
    };
    encode(&introduction)
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

/// 503 while a node without state has not yet found out whether it may
/// take part (see `Node::is_cleared`).
fn cleared(app: &AppState) -> Result<(), ApiError> {
    if app.node.is_cleared() {
        Ok(())
    } else {
        Err(ApiError::unavailable("this node is checking with its peers whether it may take part in the cluster"))
    }
}

/// `POST /raft/append`
pub async fn append(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    cleared(&app)?;
    encode(&app.node.raft.append_entries(decode(&body)?).await)
}

/// `POST /raft/vote`
pub async fn vote(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    cleared(&app)?;
    encode(&app.node.raft.vote(decode(&body)?).await)
}

/// `POST /raft/snapshot` (one chunk)
pub async fn snapshot(State(app): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    cleared(&app)?;
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
