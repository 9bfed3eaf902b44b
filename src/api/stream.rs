//! The room surface: publish, batch publish, history, room lifecycle and
//! statistics (DESIGN §4).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::ApiError;
use super::event_json::write_event;
use super::input::{self, BatchBody, EventBody, RoomConfigBody};
use super::AppState;
use crate::command::{Published, Reply, Request, RoomInfo};
use crate::filter::TypeFilter;

/// Default page size of history reads.
const DEFAULT_LIMIT: usize = 100;

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

impl From<RoomInfo> for RoomStats {
    fn from(info: RoomInfo) -> Self {
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
            subscribers: 0,
        }
    }
}

async fn publish_events(app: &AppState, events: Vec<crate::command::NewEvent>) -> Result<Vec<Published>, ApiError> {
    let request = Request::Publish { events, create_missing: app.node.config.auto_create_rooms };
    match app.node.write(request).await? {
        Reply::Published(published) => Ok(published),
        Reply::Rejected(rejection) => Err(rejection.into()),
        other => Err(ApiError::internal(format!("unexpected reply to publish: {other:?}"))),
    }
}

/// `POST /stream/{room}/publish`
pub async fn publish(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    let body = body?;
    let event: EventBody = input::json(&body)?;
    let event = event.into_new_event(&room, app.node.config.max_event_bytes)?;
    let published = publish_events(&app, vec![event]).await?;
    let Some(p) = published.into_iter().next() else {
        return Err(ApiError::internal("publish answered no offset"));
    };
    Ok(Json(json!({ "offset": p.offset, "room": p.room, "timestamp": p.timestamp, "duplicate": p.duplicate })))
}

/// `POST /stream/{room}/batch`
pub async fn batch(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    let body = body?;
    let batch: BatchBody = input::json(&body)?;
    let events = batch.into_new_events(&room, app.node.config.max_event_bytes)?;
    let published = publish_events(&app, events).await?;
    let offsets: Vec<u64> = published.iter().map(|p| p.offset).collect();
    let timestamp = published.first().map_or(0, |p| p.timestamp);
    Ok(Json(json!({ "room": room, "offsets": offsets, "timestamp": timestamp })))
}

/// Query of `GET /stream/{room}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    from_offset: Option<i64>,
    limit: Option<usize>,
    types: Option<String>,
    consistency: Option<String>,
}

/// `GET /stream/{room}/history`
pub async fn history(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    let Query(query) = query?;
    let filter =
        TypeFilter::parse(query.types.as_deref().unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    match query.consistency.as_deref() {
        None | Some("local") => {}
        Some("strong") => app.node.read_barrier().await?,
        Some(other) => {
            return Err(ApiError::bad_request(format!("consistency must be 'local' or 'strong', not '{other}'")));
        }
    }
    let meta =
        app.node.store.room(&room)?.ok_or_else(|| ApiError::not_found(format!("room '{room}' does not exist")))?;
    let info = &meta.info;
    let from = match query.from_offset.unwrap_or(0) {
        back if back < 0 => info.next_offset.saturating_sub(back.unsigned_abs()),
        from => from as u64,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let page = app.node.store.read(&meta, from, info.next_offset, limit, |t| filter.matches(t))?;

    let mut body = String::with_capacity(128 + page.events.len() * 256);
    body.push_str("{\"events\":[");
    for (i, record) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        write_event(&mut body, &room, record);
    }
    let max_offset = info.next_offset.checked_sub(1).filter(|_| info.next_offset > info.min_offset);
    body.push_str(&format!(
        "],\"next_offset\":{},\"min_offset\":{},\"max_offset\":{}}}",
        page.next_offset,
        info.min_offset,
        max_offset.map_or("null".to_owned(), |m| m.to_string())
    ));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn create(app: &AppState, room: String, body: &[u8], if_absent: bool) -> Result<(bool, RoomInfo), ApiError> {
    let config = RoomConfigBody::parse(body)?;
    match app.node.write(Request::CreateRoom { room, config, if_absent }).await? {
        Reply::Room { created, info } => Ok((created, info)),
        Reply::Rejected(rejection) => Err(rejection.into()),
        other => Err(ApiError::internal(format!("unexpected reply to create: {other:?}"))),
    }
}

/// `POST /stream/{room}`: create, 409 if it exists.
pub async fn create_room(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    let (_, info) = create(&app, room, &body?, false).await?;
    Ok((StatusCode::CREATED, Json(json!({ "created": true, "stats": RoomStats::from(info) }))).into_response())
}

/// `PUT /stream/{room}`: get or create.
pub async fn get_or_create_room(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let room = room_path(path)?;
    let (created, info) = create(&app, room, &body?, true).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "created": created, "stats": RoomStats::from(info) }))).into_response())
}

/// `DELETE /stream/{room}`
pub async fn delete_room(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let room = room_path(path)?;
    match app.node.write(Request::DeleteRoom { room: room.clone() }).await? {
        Reply::Deleted => Ok(Json(json!({ "deleted": true, "room": room }))),
        Reply::Rejected(rejection) => Err(rejection.into()),
        other => Err(ApiError::internal(format!("unexpected reply to delete: {other:?}"))),
    }
}

/// `GET /stream/{room}/stats`
pub async fn stats(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomStats>, ApiError> {
    let room = room_path(path)?;
    let meta =
        app.node.store.room(&room)?.ok_or_else(|| ApiError::not_found(format!("room '{room}' does not exist")))?;
    let mut stats = RoomStats::from(meta.info);
    stats.subscribers = app.node.hub.subscribers_of(&room);
    Ok(Json(stats))
}

/// `GET /stream/list`
pub async fn list(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let rooms: Vec<String> = app.node.store.rooms()?.into_iter().map(|r| r.name).collect();
    Ok(Json(json!({ "count": rooms.len(), "rooms": rooms })))
}
