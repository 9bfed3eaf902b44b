//! `POST /api/v1/command`: the StreamableHTTP command endpoint the Synap
//! SDKs speak. A request is `{"command","request_id","payload"}`; the answer
//! is `{"success","request_id","payload","error"}`: HTTP 200 with
//! `success:false` for a failed command (what the SDKs read), 401/403 for a
//! refused key, 400 when the envelope itself is not a command.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::auth::{self, Action, Caller};
use super::consumers::{checked_target, put_consumer};
use super::error::ApiError;
use super::event_json::{consume_json, fetched_json, page_json};
use super::input::{self, EventParts, FetchBody, KvSetBody, SettleBody};
use super::stream;
use super::AppState;
use crate::service::{Consistency, PageRequest};

#[derive(Deserialize)]
struct Envelope {
    command: String,
    #[serde(default)]
    request_id: Value,
    #[serde(default)]
    payload: Value,
}

/// What a command answers: a value, or JSON text rendered elsewhere (pages
/// of events, whose payloads are stored as text and never re-parsed).
enum Payload {
    Value(Value),
    Text(String),
}

#[derive(Serialize)]
struct Answer<'a> {
    success: bool,
    request_id: &'a Value,
    payload: Option<&'a RawValue>,
    error: Option<&'a str>,
}

fn answer(status: StatusCode, request_id: &Value, result: Result<Payload, String>) -> Response {
    let text = match &result {
        Ok(Payload::Value(value)) => Some(value.to_string()),
        Ok(Payload::Text(text)) => Some(text.clone()),
        Err(_) => None,
    };
    // Our own rendering is valid JSON; if it were not, say so rather than
    // send a broken envelope.
    let raw = match text.map(RawValue::from_string).transpose() {
        Ok(raw) => raw,
        Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, request_id, Err(format!("bad rendering: {e}"))),
    };
    let body = Answer {
        success: result.is_ok(),
        request_id,
        payload: raw.as_deref(),
        error: result.as_ref().err().map(String::as_str),
    };
    (status, Json(body)).into_response()
}

/// The caller, or the refusal it gets (the command envelope, not the REST
/// error shape, so that the SDKs show the message).
pub struct CommandCaller(Result<Caller, ApiError>);

impl FromRequestParts<AppState> for CommandCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(app.auth.authenticate(auth::credential_of(parts).as_ref())))
    }
}

/// `POST /api/v1/command`. The key is checked before the body is read: a
/// caller without a valid key costs no more than its headers.
pub async fn command(CommandCaller(caller): CommandCaller, State(app): State<AppState>, request: Request) -> Response {
    let caller = match caller {
        Ok(caller) => caller,
        Err(e) => return answer(e.status, &Value::Null, Err(e.message)),
    };
    let body = match Bytes::from_request(request, &app).await {
        Ok(body) => body,
        Err(e) => return answer(e.status(), &Value::Null, Err(format!("cannot read body: {}", e.body_text()))),
    };
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(envelope) => envelope,
        Err(e) => {
            let message = format!("not a command request {{\"command\",\"request_id\",\"payload\"}}: {e}");
            return answer(StatusCode::BAD_REQUEST, &Value::Null, Err(message));
        }
    };
    let request_id = &envelope.request_id;
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
}

/// A room and settings: those of a new room (absent ones take the node's
/// defaults) or a change.
#[derive(Deserialize)]
struct RoomSettingsPayload {
    room: String,
    #[serde(flatten)]
    change: input::RoomChangeBody,
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

impl KeyPayload {
    fn checked(self) -> Result<(String, Consistency), ApiError> {
        input::kv_key(&self.key)?;
        Ok((self.key, input::consistency(self.consistency.as_deref())?))
    }
}

/// The `room` and `name` of a `stream.consumer.*` payload, checked, and
/// the rest of the payload (the REST body of the same operation).
fn consumer_payload(command: &str, caller: &Caller, mut body: Value) -> Result<(String, String, Value), ApiError> {
    let mut take = |field: &str| match body.as_object_mut().and_then(|o| o.remove(field)) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(ApiError::bad_request(format!("{command}: payload needs \"{field}\" (a string)"))),
    };
    let (room, name) = (take("room")?, take("name")?);
    checked_target(caller, &room, &name)?;
    Ok((room, name, body))
}

async fn run(app: &AppState, caller: &Caller, command: &str, body: Value) -> Result<Payload, ApiError> {
    if let Some(operation) = command.strip_prefix("stream.consumer.") {
        return consumer_command(app, caller, command, operation, body).await;
    }
    let value = match command {
        "stream.create" | "stream.get_or_create" => {
            let p: RoomSettingsPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Publish, Some(&p.room))?;
            let config = p.change.settings()?;
            let created = if command == "stream.create" {
                app.rooms.create(&p.room, config).await.map(|_| true)?
            } else {
                app.rooms.get_or_create(&p.room, config).await?.0
            };
            json!({ "room": p.room, "created": created })
        }
        "stream.publish" => {
            let p: PublishPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Publish, Some(&p.room))?;
            let (data, metadata) = (p.data.to_string(), p.metadata.map(|m| m.to_string()));
            let event = EventParts { event_type: p.event, data: &data, metadata: metadata.as_deref(), id: p.id };
            let event = event.into_new_event(&p.room, app.node.config.max_event_bytes)?;
            let published = app.rooms.publish_one(event).await?;
            serde_json::to_value(published).map_err(|e| ApiError::internal(e.to_string()))?
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
                limit: input::page_limit(p.limit),
                filter: input::type_filter(p.types.as_deref())?,
                consistency: Consistency::Local,
            };
            let read = app.rooms.read_page(&p.room, &request).await?;
            let text = if command == "stream.consume" {
                consume_json(&p.room, &read.info, &read.page)
            } else {
                page_json(&p.room, &read.info, &read.page)
            };
            return Ok(Payload::Text(text));
        }
        "stream.stats" => {
            let p: RoomPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Subscribe, Some(&p.room))?;
            let stats = app.rooms.stats(&p.room)?;
            // Our fields, plus the names the SDKs' stats types read.
            let mut value = serde_json::to_value(&stats).map_err(|e| ApiError::internal(e.to_string()))?;
            // (`room` doubles as the Rust SDK's `name`: it reads either, and
            // refuses both at once.)
            value["message_count"] = json!(stats.event_count);
            value["max_offset"] = json!(stats.next_offset.saturating_sub(1));
            value["total_published"] = json!(stats.published_total);
            value["total_consumed"] = json!(0);
            value["subscriber_count"] = json!(stats.subscribers);
            value
        }
        "stream.list" => {
            let rooms = stream::visible_rooms(app, caller)?;
            json!({ "rooms": rooms, "count": rooms.len() })
        }
        "stream.update" => {
            let p: RoomSettingsPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Admin, Some(&p.room))?;
            let info = app.rooms.update(&p.room, p.change.check()?).await?;
            json!({ "room": p.room, "updated": true, "stats": app.rooms.stats_of(info)? })
        }
        "stream.delete" => {
            let p: RoomPayload = payload(command, body)?;
            input::room_name(&p.room)?;
            caller.require(Action::Admin, Some(&p.room))?;
            app.rooms.delete(&p.room).await?;
            json!({ "deleted": true, "room": p.room })
        }
        "kv.set" => {
            let p: KvSetBody = payload(command, body)?;
            let set = p.validate(app.node.config.max_event_bytes)?;
            caller.require_kv(Action::Publish, &set.key)?;
            json!({ "written": app.kv.set(&set.key, set.value, set.ttl, set.nx).await? })
        }
        "kv.get" => {
            let (key, consistency) = payload::<KeyPayload>(command, body)?.checked()?;
            caller.require_kv(Action::Subscribe, &key)?;
            // The bare value (or null): what both SDKs decode.
            app.kv.get(&key, consistency).await?.map_or(Value::Null, Value::String)
        }
        "kv.exists" => {
            let (key, consistency) = payload::<KeyPayload>(command, body)?.checked()?;
            caller.require_kv(Action::Subscribe, &key)?;
            json!({ "exists": app.kv.get(&key, consistency).await?.is_some() })
        }
        "kv.del" | "kv.delete" => {
            let p: KeyPayload = payload(command, body)?;
            input::kv_key(&p.key)?;
            caller.require_kv(Action::Publish, &p.key)?;
            json!({ "deleted": app.kv.delete(&p.key).await? })
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown command '{other}'; known: stream.create, stream.get_or_create, stream.publish, \
                 stream.consume, stream.history, stream.stats, stream.list, stream.update, stream.delete, stream.consumer.*, \
                 kv.set, kv.get, kv.del, kv.delete, kv.exists"
            )))
        }
    };
    Ok(Payload::Value(value))
}

/// `stream.consumer.create|list|info|fetch|ack|nak|delete`: the REST
/// operations of `/stream/{room}/consumers`, with `room` and `name` in the
/// payload beside the REST body's fields.
async fn consumer_command(
    app: &AppState,
    caller: &Caller,
    command: &str,
    operation: &str,
    body: Value,
) -> Result<Payload, ApiError> {
    if operation == "list" {
        let p: RoomPayload = payload(command, body)?;
        input::room_name(&p.room)?;
        caller.require(Action::Subscribe, Some(&p.room))?;
        return Ok(Payload::Value(json!({ "consumers": app.consumers.list(&p.room)? })));
    }
    let (room, name, rest) = consumer_payload(command, caller, body)?;
    let value = match operation {
        "create" => {
            let (created, info) = put_consumer(app, caller, &room, &name, payload(command, rest)?).await?;
            json!({ "created": created, "consumer": info })
        }
        "info" => json!(app.consumers.info(&room, &name)?),
        "delete" => {
            app.consumers.delete(&room, &name).await?;
            json!({ "deleted": true, "room": room, "name": name })
        }
        "fetch" => {
            let body: FetchBody = payload(command, rest)?;
            let (max, wait) = body.limits()?;
            let fetched = app.consumers.fetch(&room, &name, max, wait).await?;
            return Ok(Payload::Text(fetched_json(&room, &fetched)));
        }
        "ack" => {
            let (offsets, _) = payload::<SettleBody>(command, rest)?.validate(false)?;
            json!({ "acked": app.consumers.ack(&room, &name, offsets).await? })
        }
        "nak" => {
            let (offsets, delay) = payload::<SettleBody>(command, rest)?.validate(true)?;
            json!({ "naked": app.consumers.nak(&room, &name, offsets, delay).await? })
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown command 'stream.consumer.{other}'; known: stream.consumer.create, list, info, fetch, ack, \
                 nak, delete"
            )))
        }
    };
    Ok(Payload::Value(value))
}
