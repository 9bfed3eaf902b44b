//! Live subscriptions: WebSocket (`/stream/{room}/ws`, and the Synap SDK's
//! `/stream/{room}/ws/{subscriber_id}`) and Server-Sent Events
//! (`/stream/{room}/sse`). Both are thin transports over
//! [`crate::hub::Subscription`]: they validate everything before the
//! upgrade, then copy deliveries to the socket, one frame per event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::event_json::write_event_fields;
use super::input;
use super::AppState;
use crate::hub::{Delivery, LiveEvent, Subscription};
use crate::protocol::StartAt;
use crate::store::StoreError;

/// How often an idle WebSocket is pinged and an idle SSE stream gets a
/// keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of the subscription endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    from_offset: Option<i64>,
    types: Option<String>,
    replay: Option<bool>,
    /// Read by the `Caller` extractor.
    #[serde(rename = "api_key")]
    _api_key: Option<String>,
}

/// Validates the room, query and start position, and opens the
/// subscription (so a full node answers 503 before any upgrade).
fn open(
    caller: &Caller,
    app: &AppState,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    resume_after: Option<u64>,
) -> Result<Subscription, ApiError> {
    let Path(room) = path?;
    input::room_name(&room)?;
    caller.require(Action::Subscribe, Some(&room))?;
    let Query(query) = query?;
    let filter = input::type_filter(query.types.as_deref())?;
    let start = match (resume_after, query.replay) {
        (Some(last), _) => StartAt::Offset(
            last.checked_add(1).ok_or_else(|| ApiError::bad_request("Last-Event-ID is the largest offset there is"))?,
        ),
        (None, Some(false)) => StartAt::Live,
        (None, _) => StartAt::from_query(query.from_offset),
    };
    Ok(app.rooms.subscribe(&room, start, filter)?)
}

/// How a stream ends, the same on WebSocket and SSE: a code and a message
/// for the client (which resumes at the `next_offset` it is also told).
/// `None` for deliveries that do not end it.
fn ending(room: &str, delivery: &Result<Delivery, StoreError>) -> Option<(&'static str, String)> {
    match delivery {
        Ok(Delivery::Events(_) | Delivery::Gap { .. }) => None,
        Ok(Delivery::RoomDeleted) => Some(("room_deleted", format!("room '{room}' was deleted"))),
        Ok(Delivery::Shutdown) => Some(("shutdown", "node shutting down; resume on another node".to_owned())),
        Err(e) => Some(("internal", format!("storage error: {e}"))),
    }
}

/// The stream frame of an event: the event object plus `"type":"event"`.
fn render(room: &str, event: &LiveEvent) -> String {
    let mut out = String::with_capacity(160 + event.event.data.len());
    out.push_str("{\"type\":\"event\",");
    write_event_fields(&mut out, room, event.offset, &event.event);
    out.push('}');
    out
}

/// `GET /stream/{room}/ws`
pub async fn ws(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let subscription = open(&caller, &app, path, query, None)?;
    let upgrade = upgrade?;
    let timeout = app.node.config.subscriber_send_timeout;
    Ok(upgrade
        .read_buffer_size(crate::protocol::WS_READ_BUFFER)
        .on_upgrade(move |socket| serve_ws(socket, subscription, None, timeout)))
}

/// `GET /stream/{room}/ws/{subscriber_id}` (Synap SDK form)
pub async fn ws_subscriber(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Path((room, subscriber_id)) = path?;
    input::subscriber_id(&subscriber_id)?;
    let subscription = open(&caller, &app, Ok(Path(room)), query, None)?;
    let upgrade = upgrade?;
    let timeout = app.node.config.subscriber_send_timeout;
    Ok(upgrade
        .read_buffer_size(crate::protocol::WS_READ_BUFFER)
        .on_upgrade(move |socket| serve_ws(socket, subscription, Some(subscriber_id), timeout)))
}

async fn serve_ws(socket: WebSocket, mut subscription: Subscription, subscriber_id: Option<String>, timeout: Duration) {
    let (mut tx, mut rx) = socket.split();
    let room = subscription.room().to_owned();
    let mut connected = json!({ "type": "connected", "room": room, "from_offset": subscription.cursor() });
    if let Some(id) = subscriber_id {
        connected["subscriber_id"] = id.into();
    }
    if tx.send(Message::Text(connected.to_string().into())).await.is_err() {
        return;
    }
    // The offset a reconnecting client should ask for: one past the last
    // event handed to the socket (which sends what it was handed before
    // anything sent later).
    let mut resume = subscription.cursor();
    let mut ping = tokio::time::interval(KEEP_ALIVE);
    ping.tick().await;
    let (code, reason) = loop {
        tokio::select! {
            delivery = subscription.next() => {
                if let Some(end) = ending(&room, &delivery) {
                    break end;
                }
                match delivery {
                    Ok(Delivery::Events(events)) => {
                        let send = feed_events(&mut tx, &room, &events, &mut resume);
                        match tokio::time::timeout(timeout, send).await {
                            Ok(Ok(())) => resume = subscription.cursor(),
                            Ok(Err(_)) => return,
                            Err(_) => {
                                break ("slow_consumer", format!("subscriber did not read for {}s", timeout.as_secs()))
                            }
                        }
                    }
                    Ok(Delivery::Gap { requested, earliest }) => {
                        if tx.send(Message::Text(gap_notice(requested, earliest, true).into())).await.is_err() {
                            return;
                        }
                        resume = subscription.cursor();
                    }
                    Ok(_) | Err(_) => {}
                }
            }
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                let sent = tokio::time::timeout(timeout, tx.send(Message::Ping(Default::default()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return;
                }
            }
        }
    };
    // Free the subscriber slot now; the goodbye may wait on a full socket.
    drop(subscription);
    let frame = json!({ "type": "error", "code": code, "error": reason, "next_offset": resume });
    let close = async {
        tx.send(Message::Text(frame.to_string().into())).await?;
        tx.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await
    };
    // A reader that stopped reading gets this grace period to come back and
    // learn why it was cut off and where to resume.
    let _ = tokio::time::timeout(GOODBYE_GRACE, close).await;
}

/// How long a closing WebSocket waits for the peer to take its last frames.
const GOODBYE_GRACE: Duration = Duration::from_secs(10);

/// Hands `events` to the socket, advancing `resume` past each one handed
/// over, then flushes.
async fn feed_events<S>(tx: &mut S, room: &str, events: &[Arc<LiveEvent>], resume: &mut u64) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    for event in events {
        let frame = event.rendered(|e| render(room, e));
        // Rendered from a `String`, so the check passes and the bytes are
        // shared, not copied; the fallback only keeps a panic out.
        let text =
            Utf8Bytes::try_from(frame.clone()).unwrap_or_else(|_| String::from_utf8_lossy(&frame).as_ref().into());
        tx.feed(Message::Text(text)).await?;
        *resume = event.offset + 1;
    }
    tx.flush().await
}

/// The notice that offsets were trimmed before delivery: a WebSocket error
/// frame (`ws`) or the data of an SSE `gap` event.
fn gap_notice(requested: u64, earliest: u64, ws: bool) -> String {
    let mut notice = json!({
        "code": "gap",
        "error": format!(
            "offset {requested} is no longer retained; continuing from the earliest retained offset {earliest}"
        ),
        "requested_offset": requested,
        "earliest_offset": earliest,
    });
    if ws {
        notice["type"] = json!("error");
    }
    notice.to_string()
}

/// `GET /stream/{room}/sse`
pub async fn sse(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume_after =
        match headers.get("last-event-id") {
            None => None,
            Some(value) => {
                let text = value.to_str().unwrap_or("").trim();
                Some(text.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("Last-Event-ID must be an event offset, not '{text}'"))
                })?)
            }
        };
    let subscription = open(&caller, &app, path, query, resume_after)?;
    let room = subscription.room().to_owned();
    let state = SseState { subscription, room, pending: std::collections::VecDeque::new(), done: false };
    // A task hands events to the response through a small channel, so that
    // a client that stops reading is noticed (the channel stays full) and
    // let go after the send timeout, like a WebSocket one: hyper alone
    // would simply stop polling the stream and hold the subscriber slot.
    let (events, received) = mpsc::channel(SSE_BUFFER);
    let (last_word, farewell) = oneshot::channel();
    tokio::spawn(feed_sse(state, events, last_word, app.node.config.subscriber_send_timeout));
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|event| (event, received))
    })
    .chain(futures_util::stream::once(farewell).filter_map(|last| async move { last.ok() }))
    .map(Ok::<_, Infallible>);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok((StatusCode::OK, [("x-accel-buffering", "no")], sse).into_response())
}

/// SSE events rendered ahead of a slow reader, at most.
const SSE_BUFFER: usize = 64;

/// Moves the subscription's events into `events` until the stream ends or
/// the client stops taking them for `timeout`; then the subscription is
/// dropped (freeing its slot) and `last_word` carries the reason and where
/// to resume, sent after whatever the client still reads.
async fn feed_sse(
    mut state: SseState,
    events: mpsc::Sender<SseEvent>,
    last_word: oneshot::Sender<SseEvent>,
    timeout: Duration,
) {
    let mut resume = state.subscription.cursor();
    while let Some((event, after)) = state.next_event().await {
        match tokio::time::timeout(timeout, events.send(event)).await {
            Ok(Ok(())) => resume = after.unwrap_or(resume),
            // The client went away.
            Ok(Err(_)) => return,
            Err(_) => {
                drop(state);
                let reason = format!("subscriber did not read for {}s", timeout.as_secs());
                let data = json!({ "code": "slow_consumer", "error": reason, "next_offset": resume });
                let _ = last_word.send(SseEvent::default().event("error").data(data.to_string()));
                return;
            }
        }
    }
}

struct SseState {
    subscription: Subscription,
    room: String,
    /// Rendered events, each with the offset a client resumes at after it.
    pending: std::collections::VecDeque<(SseEvent, Option<u64>)>,
    done: bool,
}

impl SseState {
    /// The next SSE event and, for an event of the room, the offset after
    /// it; `None` once the stream is over.
    async fn next_event(&mut self) -> Option<(SseEvent, Option<u64>)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let delivery = self.subscription.next().await;
            if let Some((code, reason)) = ending(&self.room, &delivery) {
                self.finish(code, reason);
                continue;
            }
            match delivery {
                Ok(Delivery::Events(events)) => {
                    for event in events {
                        let rendered = event.rendered(|e| render(&self.room, e));
                        let data = String::from_utf8_lossy(&rendered);
                        let frame = SseEvent::default()
                            .id(event.offset.to_string())
                            .event(event.event.event_type.as_str())
                            .data(data);
                        self.pending.push_back((frame, Some(event.offset + 1)));
                    }
                }
                Ok(Delivery::Gap { requested, earliest }) => {
                    let frame = SseEvent::default().event("gap").data(gap_notice(requested, earliest, false));
                    self.pending.push_back((frame, Some(earliest)));
                }
                Ok(_) | Err(_) => {}
            }
        }
    }

    fn finish(&mut self, code: &str, reason: String) {
        let data = json!({ "code": code, "error": reason, "next_offset": self.subscription.cursor() });
        self.pending.push_back((SseEvent::default().event("error").data(data.to_string()), None));
        self.done = true;
    }
}
