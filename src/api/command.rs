//! `POST /api/v1/command`: the StreamableHTTP command endpoint the Synap
//! SDKs speak. A request is `{"command","request_id","payload"}`; the answer
//! is `{"success","request_id","payload","error"}`: HTTP 200 with
//! `success:false` for a failed command (what the SDKs read), 401/403 for a
//! refused key, 400 when the envelope itself is not a command.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{self, Action, Caller};
use super::error::ApiError;
use super::stream::{self, PageRequest};
use super::{input, kv, AppState};

#[derive(Deserialize)]
struct Envelope {
    command: String,
    #[serde(default)]
    request_id: Value,
    #[serde(default)]
    payload: Value,
}

fn answer(status: StatusCode, request_id: Value, result: Result<Value, String>) -> Response {
    let body = match result {
        Ok(payload) => json!({ "success": true, "request_id": request_id, "payload": payload, "error": null }),
        Err(error) => json!({ "success": false, "request_id": request_id, "payload": null, "error": error }),
    };
    (status, Json(body)).into_response()
}

/// The caller, or the refusal it gets (the command envelope, not the REST
/// error shape, so that the SDKs show the message).
pub struct CommandCaller(Result<Caller, ApiError>);

impl FromRequestParts<AppState> for CommandCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(app.auth.authenticate(auth::token_of(parts).as_deref())))
    }
}

/// `POST /api/v1/command`
pub async fn command(
    CommandCaller(caller): CommandCaller,
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => return answer(e.status(), Value::Null, Err(format!("cannot read body: {}", e.body_text()))),
    };
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(envelope) => envelope,
        Err(e) => {
            let message = format!("not a command request {{\"command\",\"request_id\",\"payload\"}}: {e}");
            return answer(StatusCode::BAD_REQUEST, Value::Null, Err(message));
        }
    };
    let request_id = envelope.request_id.clone();
    let caller = match caller {
        Ok(caller) => caller,
        Err(e) => return answer(e.status, request_id, Err(e.message)),
    };
    match run(&app, &caller, &envelope.command, envelope.payload).await {
        Ok(payload) => answer(StatusCode::OK, request_id, Ok(payload)),
        Err(e) if e.status == StatusCode::FORBIDDEN => answer(StatusCode::FORBIDDEN, request_id, Err(e.message)),
        Err(e) => answer(StatusCode::OK, request_id, Err(e.message)),
    }
}

fn payload<T: DeserializeOwned>(command: &str, payload: Value) -> Result<T, ApiError> {
    let payload = if payload.is_null() { json!({}) } else { payload };
    serde_json::from_value(payload).map_err(|e| ApiError::bad_request(format!("{command}: invalid payload: {e}")))
}

#[derive(Deserialize)]
struct RoomPayload {
    room: String,
    #[serde(default)]
    max_events: Option<u64>,
    #[serde(default)]
    max_age_secs: Option<u64>,
}

#[derive(Deserialize)]
struct PublishPayload {
    room: String,
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct ReadPayload {
    room: String,
    #[serde(default)]
    subscriber_id: Option<String>,
    #[serde(default)]
    from_offset: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    types: Option<String>,
}

#[derive(Deserialize)]
struct KeyPayload {
    key: String,
    #[serde(default)]
    consistency: Option<String>,
}

fn room_config(p: &RoomPayload) -> Result<crate::command::RoomConfig, ApiError> {
    let body = json!({ "max_events": p.max_events, "max_age_secs": p.max_age_secs }).to_string();
    input::RoomConfigBody::parse(body.as_bytes())
}

async fn run(app: &AppState, caller: &Caller, command: &str, body: Value) -> Result<Value, ApiError> {
    match command {
        "stream.create" | "stream.get_or_create" => {
            let p: RoomPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Publish, Some(&p.room))?;
            let (created, _) =
                stream::create(app, &p.room, room_config(&p)?, command == "stream.get_or_create").await?;
            Ok(json!({ "room": p.room, "created": created }))
        }
        "stream.publish" => {
            let p: PublishPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Publish, Some(&p.room))?;
            let event = json!({ "event": p.event, "data": p.data, "metadata": p.metadata, "id": p.id }).to_string();
            let published = stream::publish_one(app, &p.room, event.as_bytes()).await?;
            Ok(stream::published_json(&published))
        }
        "stream.consume" | "stream.history" => {
            let p: ReadPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            if let Some(id) = &p.subscriber_id {
                input::subscriber_id(id)?;
            }
            caller.require(Action::Subscribe, Some(&p.room))?;
            let request = PageRequest {
                from_offset: p.from_offset.unwrap_or(0),
                limit: p.limit,
                types: p.types,
                consistency: None,
            };
            let (meta, page) = stream::read_page(app, &p.room, &request).await?;
            let text = if command == "stream.consume" {
                stream::consume_json(&p.room, &meta, &page)
            } else {
                stream::page_json(&p.room, &meta, &page)
            };
            serde_json::from_str(&text).map_err(|e| ApiError::internal(e.to_string()))
        }
        "stream.stats" => {
            let p: RoomPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Subscribe, Some(&p.room))?;
            let stats = stream::room_stats(app, &p.room)?;
            // Our fields, plus the names the SDKs' stats types read.
            let mut value = serde_json::to_value(&stats).map_err(|e| ApiError::internal(e.to_string()))?;
            // (`room` doubles as the Rust SDK's `name`: it reads either, and
            // refuses both at once.)
            value["message_count"] = json!(stats.event_count);
            value["max_offset"] = json!(stats.next_offset.saturating_sub(1));
            value["total_published"] = json!(stats.published_total);
            value["total_consumed"] = json!(0);
            value["subscriber_count"] = json!(stats.subscribers);
            Ok(value)
        }
        "stream.list" => {
            let rooms = stream::visible_rooms(app, caller)?;
            Ok(json!({ "rooms": rooms, "count": rooms.len() }))
        }
        "stream.delete" => {
            let p: RoomPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Admin, Some(&p.room))?;
            stream::delete(app, &p.room).await?;
            Ok(json!({ "deleted": true, "room": p.room }))
        }
        "kv.set" => {
            caller.require(Action::Publish, None)?;
            let p: kv::SetBody = payload(command, body)?;
            let written = kv::set(app, p).await?;
            Ok(json!({ "written": written }))
        }
        "kv.get" => {
            caller.require(Action::Subscribe, None)?;
            let p: KeyPayload = payload(command, body)?;
            // The bare value (or null): what both SDKs decode.
            Ok(kv::get(app, &p.key, p.consistency.as_deref()).await?.map_or(Value::Null, Value::String))
        }
        "kv.exists" => {
            caller.require(Action::Subscribe, None)?;
            let p: KeyPayload = payload(command, body)?;
            Ok(json!({ "exists": kv::get(app, &p.key, p.consistency.as_deref()).await?.is_some() }))
        }
        "kv.del" | "kv.delete" => {
            caller.require(Action::Publish, None)?;
            let p: KeyPayload = payload(command, body)?;
            Ok(json!({ "deleted": kv::delete(app, &p.key).await? }))
        }
        other => Err(ApiError::bad_request(format!(
            "unknown command '{other}'; known: stream.create, stream.get_or_create, stream.publish, stream.consume, \
             stream.history, stream.stats, stream.list, stream.delete, kv.set, kv.get, kv.del, kv.delete, kv.exists"
        ))),
    }
}
