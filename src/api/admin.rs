//! Cluster administration (`/admin/cluster...`). Membership changes run on
//! the leader; any other node relays them there, so operators can talk to
//! whichever node they like.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller, Token};
use super::error::ApiError;
use super::input;
use super::AppState;
use crate::base_url::BaseUrl;
use crate::node::cluster::{AdminError, ClusterStatus};
use crate::peer::Lane;
use crate::raft::{state_machine, NodeId};
use crate::store;
use tokio::io::AsyncReadExt;

/// `GET /admin/cluster`
pub async fn status(caller: Caller, State(app): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    caller.require(Action::Admin, None)?;
    Ok(Json(app.node.status()))
}

/// `POST /admin/snapshot`: this node builds a snapshot now and purges
/// its log behind it; answers once the file is written.
pub async fn snapshot(caller: Caller, State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Action::Admin, None)?;
    let index = app.node.snapshot().await?;
    Ok(Json(json!({ "id": app.node.id(), "snapshot_index": index })))
}

/// `GET /admin/backup`: a consistent copy of this node's whole state, as
/// a snapshot written now followed by a checksummed trailer
/// (`store::backup`), streamed.
pub async fn backup(caller: Caller, State(app): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    app.node.snapshot().await?;
    // Opened once: a newer snapshot renamed over it meanwhile leaves this
    // one readable to the end.
    let path = state_machine::current_snapshot(&app.node.config.data_dir);
    let file = tokio::fs::File::open(&path).await.map_err(|e| ApiError::internal(format!("backup: {e}")))?;
    let len = file.metadata().await.map_err(|e| ApiError::internal(format!("backup: {e}")))?.len();
    let chunks = futures_util::stream::unfold(Some((file, crc32fast::Hasher::new(), len)), move |state| async move {
        let (mut file, mut hasher, left) = state?;
        if left == 0 {
            let trailer = store::backup::trailer(len, hasher.finalize());
            return Some((Ok(Bytes::copy_from_slice(&trailer)), None));
        }
        let mut buffer = vec![0u8; left.min(BACKUP_CHUNK) as usize];
        match file.read_exact(&mut buffer).await {
            Ok(_) => {
                hasher.update(&buffer);
                let left = left - buffer.len() as u64;
                Some((Ok(Bytes::from(buffer)), Some((file, hasher, left))))
            }
            // Ends the body early: the client sees a cut-off backup.
            Err(e) => Some((Err(e), None)),
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, (len + store::backup::TRAILER_LEN).to_string()),
    ];
    Ok((headers, axum::body::Body::from_stream(chunks)).into_response())
}

/// Bytes read from the snapshot file per chunk of a backup body.
const BACKUP_CHUNK: u64 = 1 << 20;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InitBody {
    #[serde(default)]
    members: Option<BTreeMap<NodeId, BaseUrl>>,
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
    let parsed: InitBody = input::json_or_default(&body)?;
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

/// An admin request as it arrived, for the leader if this node is not it.
struct Relay {
    method: Method,
    path: String,
    /// The caller's key (from its `Authorization` header or `?api_key=`).
    token: Option<String>,
    body: Bytes,
}

/// The answer to a membership change made here (`answer` of its log
/// index), or the leader's answer to the same request when this node does
/// not lead.
async fn done_or_relayed(
    app: &AppState,
    outcome: Result<u64, AdminError>,
    relay: Relay,
    answer: impl FnOnce(u64) -> serde_json::Value,
) -> Result<Response, ApiError> {
    match outcome {
        Err(AdminError::NotLeader(leader)) => relay_to_leader(app, leader, relay).await,
        other => Ok(Json(answer(other?)).into_response()),
    }
}

/// `POST /admin/cluster/learners` `{"id","url"}`: returns once the learner
/// has caught up.
pub async fn add_learner(
    caller: Caller,
    token: Token,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let body = body?;
    let learner: LearnerBody = input::json(&body)?;
    let url = BaseUrl::parse(&learner.url)
        .map_err(|_| ApiError::bad_request("url must be an http:// or https:// base URL"))?;
    // A second node opens /raft/* to the network: with keys, only behind a
    // cluster secret (a node started with --peers or --join is refused at
    // start-up for the same reason).
    if !app.auth.is_open() && app.node.config.cluster_secret.is_none() {
        return Err(ApiError::bad_request(
            "this node has API keys but no --cluster-secret: restart every node with one before adding nodes",
        ));
    }
    let outcome = app.node.add_learner(learner.id, &url).await;
    let relay = Relay { method: Method::POST, path: "/admin/cluster/learners".into(), token: token.0, body };
    done_or_relayed(&app, outcome, relay, |index| json!({ "added": learner.id, "log_index": index })).await
}

/// `POST /admin/cluster/voters` `{"id"}`: promotes a learner.
pub async fn promote(
    caller: Caller,
    token: Token,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let body = body?;
    let voter: VoterBody = input::json(&body)?;
    let outcome = app.node.promote(voter.id).await;
    let relay = Relay { method: Method::POST, path: "/admin/cluster/voters".into(), token: token.0, body };
    done_or_relayed(&app, outcome, relay, |index| json!({ "promoted": voter.id, "log_index": index })).await
}

/// `DELETE /admin/cluster/members/{id}`
pub async fn remove(
    caller: Caller,
    token: Token,
    State(app): State<AppState>,
    path: Result<Path<NodeId>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let Path(id) = path?;
    let outcome = app.node.remove(id).await;
    let relay = Relay {
        method: Method::DELETE,
        path: format!("/admin/cluster/members/{id}"),
        token: token.0,
        body: Bytes::new(),
    };
    done_or_relayed(&app, outcome, relay, |index| json!({ "removed": id, "log_index": index })).await
}

/// Sends the same admin request to the leader and passes its answer back,
/// once this node has applied the change too (so that a status read here
/// right after shows it).
async fn relay_to_leader(
    app: &AppState,
    leader: Option<(NodeId, BaseUrl)>,
    relay: Relay,
) -> Result<Response, ApiError> {
    let Some((leader, url)) = leader.filter(|(id, _)| *id != app.node.id()) else {
        return Err(ApiError::unavailable("no leader elected; try again"));
    };
    let mut request = app
        .peers
        .request(Lane::Public, relay.method, &url, &relay.path)
        .timeout(RELAY_TIMEOUT)
        .header(header::CONTENT_TYPE, "application/json");
    // The leader checks the same key, however the caller sent it.
    if let Some(token) = &relay.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .body(relay.body)
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
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// How long a relayed admin request may take: adding a learner waits until
/// it has caught up.
const RELAY_TIMEOUT: Duration = Duration::from_secs(300);
