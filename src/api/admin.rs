//! Cluster administration (`/admin/cluster...`). Membership changes run on
//! the leader; any other node relays them there, so operators can talk to
//! whichever node they like.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::input;
use super::AppState;
use crate::node::cluster::{AdminError, ClusterStatus};
use crate::raft::NodeId;

/// `GET /admin/cluster`
pub async fn status(caller: Caller, State(app): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require(Action::Admin, None)?;
    Ok(Json(app.node.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default)]
    members: Option<BTreeMap<NodeId, String>>,
}

/// `POST /admin/cluster/init`: initialise with the given members, or with
/// `--peers`, or as a one-node cluster.
pub async fn init(
    caller: Caller,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Action::Admin, None)?;
    let body = body?;
    let parsed: InitBody =
        if body.iter().all(u8::is_ascii_whitespace) { InitBody { members: None } } else { input::json(&body)? };
    let node = &app.node;
    let members = parsed.members.unwrap_or_else(|| {
        if node.config.peers.is_empty() {
            BTreeMap::from([(node.id(), node.config.advertise.clone())])
        } else {
            node.config.peers.clone()
        }
    });
    node.initialize(members.clone()).await?;
    Ok(Json(json!({ "initialized": true, "members": members })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnerBody {
    id: NodeId,
    url: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoterBody {
    id: NodeId,
}

/// `POST /admin/cluster/learners` `{"id","url"}`: returns once the learner
/// has caught up.
pub async fn add_learner(
    caller: Caller,
    headers: HeaderMap,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let body = body?;
    let learner: LearnerBody = input::json(&body)?;
    if !(learner.url.starts_with("http://") || learner.url.starts_with("https://")) {
        return Err(ApiError::bad_request("url must be an http:// or https:// base URL"));
    }
    match app.node.add_learner(learner.id, &learner.url).await {
        Err(AdminError::NotLeader(leader)) => {
            relay(&app, leader, Method::POST, "/admin/cluster/learners", &headers, body).await
        }
        other => Ok(Json(json!({ "added": learner.id, "log_index": other? })).into_response()),
    }
}

/// `POST /admin/cluster/voters` `{"id"}`: promotes a learner.
pub async fn promote(
    caller: Caller,
    headers: HeaderMap,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let body = body?;
    let voter: VoterBody = input::json(&body)?;
    match app.node.promote(voter.id).await {
        Err(AdminError::NotLeader(leader)) => {
            relay(&app, leader, Method::POST, "/admin/cluster/voters", &headers, body).await
        }
        other => Ok(Json(json!({ "promoted": voter.id, "log_index": other? })).into_response()),
    }
}

/// `DELETE /admin/cluster/members/{id}`
pub async fn remove(
    caller: Caller,
    headers: HeaderMap,
    State(app): State<AppState>,
    path: Result<Path<NodeId>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let Path(id) = path?;
    match app.node.remove(id).await {
        Err(AdminError::NotLeader(leader)) => {
            let path = format!("/admin/cluster/members/{id}");
            relay(&app, leader, Method::DELETE, &path, &headers, Bytes::new()).await
        }
        other => Ok(Json(json!({ "removed": id, "log_index": other? })).into_response()),
    }
}

/// Sends the same admin request to the leader and passes its answer back,
/// once this node has applied the change too (so that a status read here
/// right after shows it).
async fn relay(
    app: &AppState,
    leader: Option<(NodeId, String)>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some((leader, url)) = leader.filter(|(id, _)| *id != app.node.id()) else {
        return Err(ApiError::unavailable("no leader elected; try again"));
    };
    let mut request = app.http.request(method, format!("{url}{path}")).header("content-type", "application/json");
    // The leader checks the same key.
    if let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) {
        request = request.header(axum::http::header::AUTHORIZATION, authorization.clone());
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot reach leader {leader}: {e}")))?;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let bytes = response.bytes().await.map_err(|e| ApiError::unavailable(format!("leader {leader}: {e}")))?;
    let log_index = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["log_index"].as_u64());
    if let (true, Some(index)) = (status.is_success(), log_index) {
        let deadline = tokio::time::Instant::now() + app.node.config.write_timeout;
        app.node.wait_applied(index, deadline).await?;
    }
    Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
