//! Durable consumers over REST: `/stream/{room}/consumers[/{name}[/fetch|
//! /ack|/nak]]`. Thin handlers over [`crate::service::Consumers`]; the
//! `stream.consumer.*` commands use the same operations.
//!
//! Keys: a consumer is its reader's own state, so creating, changing,
//! deleting and using one needs `subscribe` on the room; naming a
//! dead-letter room also needs `publish` there.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::event_json::fetched_json;
use super::input::{self, ConsumerBody, FetchBody, SettleBody};
use super::stream::json_text;
use super::AppState;
use crate::protocol::ConsumerInfo;

/// The room and consumer of a path, checked, once the caller may read the
/// room.
fn consumer_path(
    caller: &Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((room, name)) = path?;
    checked_target(caller, &room, &name)?;
    Ok((room, name))
}

/// Checks `room` and `name` and that the caller may read the room (the
/// command endpoint's way in).
pub(super) fn checked_target(caller: &Caller, room: &str, name: &str) -> Result<(), ApiError> {
    input::room_name(room)?;
    input::consumer_name(name)?;
    caller.require(Action::Subscribe, Some(room))
}

/// Creates or updates the consumer; says whether it created it, and how
/// it is now. Shared by REST and `stream.consumer.create`.
pub(super) async fn put_consumer(
    app: &AppState,
    caller: &Caller,
    room: &str,
    name: &str,
    body: ConsumerBody,
) -> Result<(bool, ConsumerInfo), ApiError> {
    if let Some(target) = body.dead_letter() {
        caller.require(Action::Publish, Some(target))?;
    }
    let config = body.into_config(room)?;
    let created = app.consumers.put(room, name, config).await?;
    Ok((created, app.consumers.info(room, name)?))
}

/// `PUT /stream/{room}/consumers/{name}`: creates (201) or updates (200);
/// answers the consumer.
pub async fn put(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (room, name) = consumer_path(&caller, path)?;
    let body = ConsumerBody::parse(&body?)?;
    let (created, info) = put_consumer(&app, &caller, &room, &name, body).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(info)).into_response())
}

/// `GET /stream/{room}/consumers`: `{"consumers":[...]}`.
pub async fn list(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(room) = path?;
    input::room_name(&room)?;
    caller.require(Action::Subscribe, Some(&room))?;
    Ok(Json(json!({ "consumers": app.consumers.list(&room)? })))
}

/// `GET /stream/{room}/consumers/{name}`
pub async fn info(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ConsumerInfo>, ApiError> {
    let (room, name) = consumer_path(&caller, path)?;
    Ok(Json(app.consumers.info(&room, &name)?))
}

/// `DELETE /stream/{room}/consumers/{name}`
pub async fn delete(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (room, name) = consumer_path(&caller, path)?;
    app.consumers.delete(&room, &name).await?;
    Ok(Json(json!({ "deleted": true, "room": room, "name": name })))
}

/// `POST .../fetch` `{"max"?,"wait_ms"?}`: `{"messages":[...],"missed":[...]}`.
pub async fn fetch(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (room, name) = consumer_path(&caller, path)?;
    let (max, wait) = FetchBody::parse(&body?)?;
    let fetched = app.consumers.fetch(&room, &name, max, wait).await?;
    Ok(json_text(fetched_json(&room, &fetched)))
}

/// `POST .../ack` `{"offsets":[...]}`: `{"acked": n}`, once committed.
pub async fn ack(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    settle(caller, app, path, body, false).await
}

/// `POST .../nak` `{"offsets":[...],"delay_ms"?}`: `{"naked": n}`.
pub async fn nak(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    settle(caller, app, path, body, true).await
}

async fn settle(
    caller: Caller,
    app: AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    nak: bool,
) -> Result<Json<Value>, ApiError> {
    let (room, name) = consumer_path(&caller, path)?;
    let body: SettleBody = input::json(&body?)?;
    let (offsets, delay) = body.validate(nak)?;
    Ok(Json(if nak {
        json!({ "naked": app.consumers.nak(&room, &name, offsets, delay).await? })
    } else {
        json!({ "acked": app.consumers.ack(&room, &name, offsets).await? })
    }))
}
