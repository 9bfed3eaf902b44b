//! The replicated key-value store: `POST /kv/set`, `GET /kv/get/{key}`,
//! `DELETE /kv/del/{key}`, `GET /kv/exists/{key}` and the `kv.*` commands.
//!
//! Writes go through Raft like publishes; reads are local and hide keys
//! whose expiry (fixed from the write's cluster timestamp) has passed.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::input;
use super::AppState;
use crate::command::{Reply, Request};

/// Longest key, in bytes.
const MAX_KEY_LEN: usize = 1024;

/// Body of `POST /kv/set` and payload of `kv.set`.
#[derive(Debug, Deserialize)]
pub struct SetBody {
    key: String,
    value: Value,
    /// Seconds; `null` means no expiry.
    #[serde(default)]
    ttl: Option<u64>,
    /// Only set if absent (or expired).
    #[serde(default)]
    nx: Option<bool>,
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!("key must be 1 to {MAX_KEY_LEN} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(ApiError::bad_request("key contains a control character"));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Sets a key; answers whether it was written (false only with `nx` on a
/// live key). Strings are stored as they are, other JSON values as their
/// compact JSON text.
pub async fn set(app: &AppState, body: SetBody) -> Result<bool, ApiError> {
    check_key(&body.key)?;
    let value = match body.value {
        Value::String(s) => s,
        other => other.to_string(),
    };
    if value.len() > app.node.config.max_event_bytes {
        return Err(ApiError::too_large(format!(
            "value is {} bytes; the limit is {}",
            value.len(),
            app.node.config.max_event_bytes
        )));
    }
    if body.ttl == Some(0) {
        return Err(ApiError::bad_request("ttl must be at least 1 second"));
    }
    let ttl_ms = body.ttl.map(|secs| secs.saturating_mul(1000));
    let request = Request::KvSet { key: body.key, value, ttl_ms, nx: body.nx.unwrap_or(false) };
    match super::write(app, request).await? {
        Reply::KvSet { written } => Ok(written),
        other => Err(super::unexpected("kv set", other)),
    }
}

/// The live value of `key` on this node, after a read barrier if
/// `consistency` is `strong`.
pub async fn get(app: &AppState, key: &str, consistency: Option<&str>) -> Result<Option<String>, ApiError> {
    check_key(key)?;
    super::stream::read_point(app, consistency).await?;
    Ok(app.node.store.kv_get(key, now_ms())?)
}

/// Query of the KV reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    consistency: Option<String>,
    /// Read by the `Caller` extractor.
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// Deletes `key`; answers whether a live key was removed.
pub async fn delete(app: &AppState, key: &str) -> Result<bool, ApiError> {
    check_key(key)?;
    match super::write(app, Request::KvDelete { key: key.to_owned() }).await? {
        Reply::KvDeleted { existed } => Ok(existed),
        other => Err(super::unexpected("kv delete", other)),
    }
}

/// `POST /kv/set` `{"key","value","ttl"?,"nx"?}`
pub async fn set_route(
    caller: Caller,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Publish, None)?;
    let body: SetBody = input::json(&body?)?;
    let key = body.key.clone();
    let written = set(&app, body).await?;
    Ok(Json(json!({ "key": key, "written": written })))
}

/// `GET /kv/get/{key}`: `{"key","value"}`, 404 if absent or expired.
pub async fn get_route(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Subscribe, None)?;
    let Path(key) = path?;
    let Query(query) = query?;
    match get(&app, &key, query.consistency.as_deref()).await? {
        Some(value) => Ok(Json(json!({ "key": key, "value": value }))),
        None => Err(ApiError::not_found(format!("key '{key}' does not exist"))),
    }
}

/// `GET /kv/exists/{key}`: `{"key","exists"}`.
pub async fn exists_route(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Subscribe, None)?;
    let Path(key) = path?;
    let Query(query) = query?;
    let exists = get(&app, &key, query.consistency.as_deref()).await?.is_some();
    Ok(Json(json!({ "key": key, "exists": exists })))
}

/// `DELETE /kv/del/{key}`: `{"key","deleted"}`.
pub async fn delete_route(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Action::Publish, None)?;
    let Path(key) = path?;
    let deleted = delete(&app, &key).await?;
    Ok(Json(json!({ "key": key, "deleted": deleted })))
}
