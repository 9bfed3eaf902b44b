//! The room surface: publish, batch publish, history, the SDKs' polling
//! read, room lifecycle and statistics. Thin handlers over
//! [`crate::service::Rooms`].

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::event_json::{consume_json, page_json};
use super::input::{self, BatchBody, EventBody, RoomChangeBody};
use super::AppState;
use crate::command::Published;
use crate::protocol::RoomStats;
use crate::service::PageRequest;

fn room_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = path?;
    input::room_name(&room)?;
    Ok(room)
}

/// An answer whose JSON was rendered as text already (events).
pub(super) fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// `POST /stream/{room}/publish` `{"event","data","metadata"?,"id"?}`:
/// `{"offset","room","timestamp","duplicate"}`.
pub async fn publish(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Published>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Publish, Some(&room))?;
    let body = body?;
    let event: EventBody = input::json(&body)?;
    let event = event.into_new_event(&room, app.node.config.max_event_bytes)?;
    Ok(Json(app.rooms.publish_one(event).await?))
}

/// `POST /stream/{room}/batch` `{"events":[...]}`: all or none, in order;
/// `{"room","offsets","duplicates","timestamp"}`.
pub async fn batch(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Publish, Some(&room))?;
    let body = body?;
    let batch: BatchBody = input::json(&body)?;
    let events = batch.into_new_events(&room, app.node.config.max_event_bytes)?;
    let published = app.rooms.publish(events).await?;
    let offsets: Vec<u64> = published.iter().map(|p| p.offset).collect();
    let duplicates: Vec<bool> = published.iter().map(|p| p.duplicate).collect();
    let timestamp = published.first().map_or(0, |p| p.timestamp);
    Ok(Json(json!({ "room": room, "offsets": offsets, "duplicates": duplicates, "timestamp": timestamp })))
}

/// Query of `GET /stream/{room}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    from_offset: Option<i64>,
    limit: Option<usize>,
    types: Option<String>,
    consistency: Option<String>,
    /// Read by the `Caller` extractor.
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// `GET /stream/{room}/history?from_offset&limit&types&consistency`:
/// `{"events","next_offset","min_offset","max_offset"}`. A negative
/// `from_offset` counts back from the end; `next_offset` is where the next
/// page starts, `min_offset` the lowest retained offset, `max_offset` the
/// highest (null for a room without events).
pub async fn history(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Subscribe, Some(&room))?;
    let Query(query) = query?;
    let request = PageRequest {
        from_offset: query.from_offset.unwrap_or(0),
        limit: input::page_limit(query.limit),
        filter: input::type_filter(query.types.as_deref())?,
        consistency: input::consistency(query.consistency.as_deref())?,
    };
    let read = app.rooms.read_page(&room, &request).await?;
    Ok(json_text(page_json(&room, &read.info, &read.page)))
}

/// Query of `GET /stream/{room}/consume/{subscriber_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeQuery {
    from_offset: Option<i64>,
    limit: Option<usize>,
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// `GET /stream/{room}/consume/{subscriber_id}`: a page of events as
/// `{"events","next_offset","min_offset"}` (the Synap SDKs' polling read).
pub async fn consume(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<ConsumeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path((room, subscriber_id)) = path?;
    input::room_name(&room)?;
    input::subscriber_id(&subscriber_id)?;
    caller.require(Action::Subscribe, Some(&room))?;
    let Query(query) = query?;
    let request = PageRequest {
        from_offset: query.from_offset.unwrap_or(0),
        limit: input::page_limit(query.limit),
        ..Default::default()
    };
    let read = app.rooms.read_page(&room, &request).await?;
    Ok(json_text(consume_json(&room, &read.info, &read.page)))
}

/// `POST /stream/{room}`: create, 409 if it exists.
pub async fn create_room(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create_route(caller, &app, path, body, false).await
}

/// `PUT /stream/{room}`: get or create.
pub async fn get_or_create_room(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create_route(caller, &app, path, body, true).await
}

/// Both create routes: `{"created","stats"}`, 201 when created.
async fn create_route(
    caller: Caller,
    app: &AppState,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    if_absent: bool,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Publish, Some(&room))?;
    let config = RoomChangeBody::parse_settings(&body?)?;
    let (created, info) = if if_absent {
        app.rooms.get_or_create(&room, config).await?
    } else {
        (true, app.rooms.create(&room, config).await?)
    };
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let stats = app.rooms.stats_of(info)?;
    Ok((status, Json(json!({ "created": created, "stats": stats }))).into_response())
}

/// `DELETE /stream/{room}`
pub async fn delete_room(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Admin, Some(&room))?;
    app.rooms.delete(&room).await?;
    Ok(Json(json!({ "deleted": true, "room": room })))
}

/// `PATCH /stream/{room}`: change its retention settings (admin on the
/// room: tightening them deletes events). `{"updated": true, "stats"}`.
pub async fn update_room(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Admin, Some(&room))?;
    let change = RoomChangeBody::parse(&body?)?;
    let info = app.rooms.update(&room, change).await?;
    Ok(Json(json!({ "updated": true, "stats": app.rooms.stats_of(info)? })))
}

/// `GET /stream/{room}/stats`
pub async fn stats(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomStats>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Subscribe, Some(&room))?;
    Ok(Json(app.rooms.stats(&room)?))
}

/// The rooms `caller` may read, by name.
pub fn visible_rooms(app: &AppState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    Ok(app.rooms.list()?.into_iter().map(|r| r.name).filter(|name| caller.may(Action::Subscribe, Some(name))).collect())
}

/// `GET /stream/list`: `{"rooms","count"}`, the rooms the caller may read.
pub async fn list(caller: Caller, State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if !caller.may_some(Action::Subscribe) {
        caller.require(Action::Subscribe, None)?;
    }
    let rooms = visible_rooms(&app, &caller)?;
    Ok(Json(json!({ "count": rooms.len(), "rooms": rooms })))
}
