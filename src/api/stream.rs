//! The room surface: publish, batch publish, history, room lifecycle and
//! statistics (DESIGN §4). The operations are plain functions so that the
//! REST handlers here and the command endpoint (`api::command`) share them.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::event_json::write_event;
use super::input::{self, BatchBody, EventBody, RoomConfigBody};
use super::AppState;
use crate::command::{NewEvent, Published, Reply, Request, RoomConfig, RoomInfo};
use crate::filter::TypeFilter;
use crate::store::{Page, RoomMeta};

/// Default page size of history reads.
pub const DEFAULT_LIMIT: usize = 100;

fn room_path(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(room) = path?;
    input::room_name(&room)?;
    Ok(room)
}

/// Statistics of one room, as `GET /stream/{room}/stats` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomStats {
    /// Room name.
    pub room: String,
    /// How many times a room of this name was created.
    pub generation: u64,
    /// Events currently retained.
    pub event_count: u64,
    /// Lowest retained offset.
    pub min_offset: u64,
    /// Offset of the next event.
    pub next_offset: u64,
    /// Retention by count, if set.
    pub max_events: Option<u64>,
    /// Retention by age in seconds, if set.
    pub max_age_secs: Option<u64>,
    /// Creation time (Unix ms, cluster time).
    pub created_at: u64,
    /// Time of the last event (Unix ms, cluster time), 0 if none.
    pub last_event_at: u64,
    /// Events ever published.
    pub published_total: u64,
    /// Payload bytes ever published.
    pub bytes_total: u64,
    /// Live subscribers of the room on the answering node.
    #[serde(default)]
    pub subscribers: usize,
}

impl RoomStats {
    fn new(info: RoomInfo, subscribers: usize) -> Self {
        Self {
            room: info.name,
            generation: info.generation,
            event_count: info.next_offset - info.min_offset,
            min_offset: info.min_offset,
            next_offset: info.next_offset,
            max_events: info.config.max_events,
            max_age_secs: info.config.max_age_secs,
            created_at: info.created_at,
            last_event_at: info.last_event_at,
            published_total: info.published_total,
            bytes_total: info.bytes_total,
            subscribers,
        }
    }
}

/// Publishes validated events (all or none).
pub async fn publish_events(app: &AppState, events: Vec<NewEvent>) -> Result<Vec<Published>, ApiError> {
    let request = Request::Publish { events, create_missing: app.node.config.auto_create_rooms };
    match super::write(app, request).await? {
        Reply::Published(published) => Ok(published),
        other => Err(super::unexpected("publish", other)),
    }
}

/// Publishes one event from its JSON body.
pub async fn publish_one(app: &AppState, room: &str, body: &[u8]) -> Result<Published, ApiError> {
    let event: EventBody = input::json(body)?;
    let event = event.into_new_event(room, app.node.config.max_event_bytes)?;
    let published = publish_events(app, vec![event]).await?;
    published.into_iter().next().ok_or_else(|| ApiError::internal("publish answered no offset"))
}

/// The answer to a single publish.
pub fn published_json(p: &Published) -> serde_json::Value {
    json!({ "offset": p.offset, "room": p.room, "timestamp": p.timestamp, "duplicate": p.duplicate })
}

/// `POST /stream/{room}/publish`
pub async fn publish(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Publish, Some(&room))?;
    let published = publish_one(&app, &room, &body?).await?;
    Ok(Json(published_json(&published)))
}

/// `POST /stream/{room}/batch`
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
    let published = publish_events(&app, events).await?;
    let offsets: Vec<u64> = published.iter().map(|p| p.offset).collect();
    let duplicates: Vec<bool> = published.iter().map(|p| p.duplicate).collect();
    let timestamp = published.first().map_or(0, |p| p.timestamp);
    Ok(Json(json!({ "room": room, "offsets": offsets, "duplicates": duplicates, "timestamp": timestamp })))
}

/// What a page read is asked for.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// First offset; negative counts back from the end.
    pub from_offset: i64,
    /// Most events (default 100, clamped to the server maximum).
    pub limit: Option<usize>,
    /// Event-type filter.
    pub types: Option<String>,
    /// `local` (default) or `strong`.
    pub consistency: Option<String>,
}

/// Honours a read's `consistency`: `local` (default) reads what this node
/// has applied; `strong` first waits until it has applied everything the
/// leader had committed when the read arrived (a linearizable read).
pub async fn read_point(app: &AppState, consistency: Option<&str>) -> Result<(), ApiError> {
    match consistency {
        None | Some("local") => Ok(()),
        Some("strong") => Ok(app.node.read_barrier().await?),
        Some(other) => Err(ApiError::bad_request(format!("consistency must be 'local' or 'strong', not '{other}'"))),
    }
}

/// Reads one page of `room` (404 if it does not exist).
pub async fn read_page(app: &AppState, room: &str, request: &PageRequest) -> Result<(RoomMeta, Page), ApiError> {
    let filter =
        TypeFilter::parse(request.types.as_deref().unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    read_point(app, request.consistency.as_deref()).await?;
    let meta =
        app.node.store.room(room)?.ok_or_else(|| ApiError::not_found(format!("room '{room}' does not exist")))?;
    let next = meta.info.next_offset;
    let from = match request.from_offset {
        back if back < 0 => next.saturating_sub(back.unsigned_abs()),
        from => from as u64,
    };
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    let page = app.node.store.read(&meta, from, next, limit, |t| filter.matches(t))?;
    Ok((meta, page))
}

/// Renders a page as `{"events","next_offset","min_offset","max_offset"}`
/// JSON text (events with their payload bytes as stored).
pub fn page_json(room: &str, meta: &RoomMeta, page: &Page) -> String {
    let info = &meta.info;
    let mut body = String::with_capacity(128 + page.events.len() * 256);
    body.push_str("{\"events\":[");
    for (i, record) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_event(&mut body, room, record);
    }
    let max_offset = info.next_offset.checked_sub(1).filter(|_| info.next_offset > info.min_offset);
    body.push_str(&format!(
        "],\"next_offset\":{},\"min_offset\":{},\"max_offset\":{}}}",
        page.next_offset,
        info.min_offset,
        max_offset.map_or("null".to_owned(), |m| m.to_string())
    ));
    body
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

/// `GET /stream/{room}/history`
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
        limit: query.limit,
        types: query.types,
        consistency: query.consistency,
    };
    let (meta, page) = read_page(&app, &room, &request).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], page_json(&room, &meta, &page)).into_response())
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
/// `{"events","next_offset"}` (the Synap SDKs' polling read).
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
    let request = PageRequest { from_offset: query.from_offset.unwrap_or(0), limit: query.limit, ..Default::default() };
    let (meta, page) = read_page(&app, &room, &request).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], consume_json(&room, &meta, &page)).into_response())
}

/// Renders a page as `{"events","next_offset"}`.
pub fn consume_json(room: &str, meta: &RoomMeta, page: &Page) -> String {
    let mut body = String::with_capacity(64 + page.events.len() * 256);
    body.push_str("{\"events\":[");
    for (i, record) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_event(&mut body, room, record);
    }
    body.push_str(&format!("],\"next_offset\":{},\"min_offset\":{}}}", page.next_offset, meta.info.min_offset));
    body
}

/// Creates `room` (or gets it, with `if_absent`).
pub async fn create(
    app: &AppState,
    room: &str,
    config: RoomConfig,
    if_absent: bool,
) -> Result<(bool, RoomInfo), ApiError> {
    match super::write(app, Request::CreateRoom { room: room.to_owned(), config, if_absent }).await? {
        Reply::Room { created, info } => Ok((created, info)),
        other => Err(super::unexpected("create", other)),
    }
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

async fn create_route(
    caller: Caller,
    app: &AppState,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    if_absent: bool,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Publish, Some(&room))?;
    let config = RoomConfigBody::parse(&body?)?;
    let (created, info) = create(app, &room, config, if_absent).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let stats = RoomStats::new(info, app.node.hub.subscribers_of(&room));
    Ok((status, Json(json!({ "created": created, "stats": stats }))).into_response())
}

/// Deletes `room` and its events.
pub async fn delete(app: &AppState, room: &str) -> Result<(), ApiError> {
    match super::write(app, Request::DeleteRoom { room: room.to_owned() }).await? {
        Reply::Deleted => Ok(()),
        other => Err(super::unexpected("delete", other)),
    }
}

/// `DELETE /stream/{room}`
pub async fn delete_room(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Admin, Some(&room))?;
    delete(&app, &room).await?;
    Ok(Json(json!({ "deleted": true, "room": room })))
}

/// Statistics of `room` (404 if it does not exist).
pub fn room_stats(app: &AppState, room: &str) -> Result<RoomStats, ApiError> {
    let meta =
        app.node.store.room(room)?.ok_or_else(|| ApiError::not_found(format!("room '{room}' does not exist")))?;
    Ok(RoomStats::new(meta.info, app.node.hub.subscribers_of(room)))
}

/// `GET /stream/{room}/stats`
pub async fn stats(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomStats>, ApiError> {
    let room = room_path(path)?;
    caller.require(Action::Subscribe, Some(&room))?;
    Ok(Json(room_stats(&app, &room)?))
}

/// The rooms `caller` may read, by name.
pub fn visible_rooms(app: &AppState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    Ok(app
        .node
        .store
        .rooms()?
        .into_iter()
        .map(|r| r.name)
        .filter(|name| caller.may(Action::Subscribe, Some(name)))
        .collect())
}

/// `GET /stream/list`: the rooms the caller may read.
pub async fn list(caller: Caller, State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if !caller.may(Action::Subscribe, None) {
        caller.require(Action::Subscribe, None)?;
    }
    let rooms = visible_rooms(&app, &caller)?;
    Ok(Json(json!({ "count": rooms.len(), "rooms": rooms })))
}
