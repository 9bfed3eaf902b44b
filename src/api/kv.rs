//! The replicated key-value store over REST: `POST /kv/set`,
//! `GET /kv/get/{key}`, `DELETE /kv/del/{key}`, `GET /kv/exists/{key}`.
//! Thin handlers over [`crate::service::Kv`]; the `kv.*` commands use the
//! same operations.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::input::{self, KvSetBody};
use super::AppState;

/// Query of the KV reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    consistency: Option<String>,
    /// Read by the `Caller` extractor.
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// `POST /kv/set` `{"key","value","ttl"?,"nx"?}`: `{"key","written"}`.
pub async fn set_route(
    caller: Caller,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: KvSetBody = input::json(&body?)?;
    let set = body.validate(app.node.config.max_event_bytes)?;
    caller.require_kv(Action::Publish, &set.key)?;
    let written = app.kv.set(&set.key, set.value, set.ttl, set.nx).await?;
    Ok(Json(json!({ "key": set.key, "written": written })))
}

/// The key of a KV route, checked, and the read point its query asks for.
fn key_and_consistency(
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<(String, crate::service::Consistency), ApiError> {
    let Path(key) = path?;
    input::kv_key(&key)?;
    let Query(query) = query?;
    Ok((key, input::consistency(query.consistency.as_deref())?))
}

/// `GET /kv/get/{key}`: `{"key","value"}`, 404 if absent or expired.
pub async fn get_route(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let (key, consistency) = key_and_consistency(path, query)?;
    caller.require_kv(Action::Subscribe, &key)?;
    match app.kv.get(&key, consistency).await? {
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
    let (key, consistency) = key_and_consistency(path, query)?;
    caller.require_kv(Action::Subscribe, &key)?;
    let exists = app.kv.get(&key, consistency).await?.is_some();
    Ok(Json(json!({ "key": key, "exists": exists })))
}

/// `DELETE /kv/del/{key}`: `{"key","deleted"}`.
pub async fn delete_route(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(key) = path?;
    input::kv_key(&key)?;
    caller.require_kv(Action::Publish, &key)?;
    let deleted = app.kv.delete(&key).await?;
    Ok(Json(json!({ "key": key, "deleted": deleted })))
}
