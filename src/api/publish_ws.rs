//! Pipelined publishing over one WebSocket: `GET /publish/ws`.
//!
//! The client sends `{"seq", "room", "event", "data", "metadata"?, "id"?}`
//! frames without waiting; the server answers each with
//! `{"type":"ack","seq","offset","timestamp","duplicate"}` or
//! `{"type":"error","seq","status","code","error"}`, in the order they
//! complete.
//!
//! Frames are committed in rounds: while one round is being written, the
//! frames that arrive queue up, and the next round takes all of them (up to
//! [`MAX_ROUND_BYTES`]), one publish request per room. Rounds follow each
//! other, and a room's frames of one round are one request in `seq` order,
//! so on one connection a room's offsets follow `seq` order. A connection
//! with [`MAX_QUEUED`] frames waiting is not read until a round takes them:
//! back-pressure reaches the client through TCP.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::input::{self, EventParts, KeyOnlyQuery};
use super::AppState;
use crate::command::{NewEvent, MAX_REQUEST_BYTES};

/// Frames a connection may have waiting for the next round.
pub const MAX_QUEUED: usize = 1024;
/// Bytes of events one round carries at most (a round's request for one
/// room is one log entry, bounded like a batch).
pub const MAX_ROUND_BYTES: usize = MAX_REQUEST_BYTES;

/// One publish frame.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishFrame<'a> {
    seq: u64,
    room: String,
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<String>,
}

/// A validated frame waiting for its round.
struct Queued {
    seq: u64,
    event: NewEvent,
}

/// `GET /publish/ws`
pub async fn publish_ws(
    caller: Caller,
    State(app): State<AppState>,
    query: Result<Query<KeyOnlyQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    query?;
    if !caller.may_some(Action::Publish) {
        caller.require(Action::Publish, None)?;
    }
    let upgrade = upgrade?;
    Ok(upgrade.read_buffer_size(crate::protocol::WS_READ_BUFFER).on_upgrade(move |socket| serve(socket, app, caller)))
}

fn error_frame(seq: Option<u64>, e: &ApiError) -> String {
    json!({ "type": "error", "seq": seq, "status": e.status.as_u16(), "code": e.code(), "error": e.message })
        .to_string()
}

/// The frame's event, validated and authorised, or the error to answer.
fn accept(app: &AppState, caller: &Caller, text: &str) -> Result<Queued, (Option<u64>, ApiError)> {
    let frame: PublishFrame = serde_json::from_str(text).map_err(|e| {
        // Say which frame it was when its seq can be read at all.
        let seq = serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("seq").and_then(Value::as_u64));
        let expected = "{\"seq\",\"room\",\"event\",\"data\",\"metadata\"?,\"id\"?}";
        (seq, ApiError::bad_request(format!("not a publish frame {expected}: {e}")))
    })?;
    let seq = frame.seq;
    let checked = || -> Result<NewEvent, ApiError> {
        input::room_name(&frame.room)?;
        caller.require(Action::Publish, Some(&frame.room))?;
        let parts = EventParts {
            event_type: frame.event,
            data: frame.data.get(),
            metadata: frame.metadata.map(RawValue::get),
            id: frame.id,
        };
        parts.into_new_event(&frame.room, app.node.config.max_event_bytes)
    };
    checked().map(|event| Queued { seq, event }).map_err(|e| (Some(seq), e))
}

async fn serve(socket: WebSocket, app: AppState, caller: Caller) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(2 * MAX_QUEUED);
    let (queue_tx, queue_rx) = mpsc::channel::<Queued>(MAX_QUEUED);
    let timeout = app.node.config.subscriber_send_timeout;

    // Answers go out as they come; a client that stops reading them for
    // `timeout` is disconnected.
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let send = async {
                sink.feed(Message::Text(frame.into())).await?;
                while let Ok(more) = out_rx.try_recv() {
                    sink.feed(Message::Text(more.into())).await?;
                }
                sink.flush().await
            };
            let sent = tokio::time::timeout(timeout, send).await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let reason = format!("the client did not read its acknowledgements for {}s", timeout.as_secs());
                    let frame = json!({ "type": "error", "seq": null, "status": 408, "code": "slow_consumer", "error": reason });
                    let goodbye = async {
                        sink.send(Message::Text(frame.to_string().into())).await?;
                        sink.send(Message::Close(Some(CloseFrame { code: 1008, reason: "slow consumer".into() }))).await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
                    return;
                }
            }
        }
        let close = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() })));
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    });
    let publisher = tokio::spawn(publish_rounds(app.clone(), queue_rx, out_tx.clone()));

    while let Some(Ok(message)) = stream.next().await {
        let text = match &message {
            Message::Text(text) => text.as_str(),
            Message::Binary(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    let e = ApiError::bad_request("a binary frame must hold UTF-8 JSON");
                    if out_tx.send(error_frame(None, &e)).await.is_err() {
                        break;
                    }
                    continue;
                }
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let sent = match accept(&app, &caller, text) {
            // Waits while MAX_QUEUED frames are queued: the socket is not
            // read meanwhile.
            Ok(queued) => queue_tx.send(queued).await.is_ok(),
            Err((seq, e)) => out_tx.send(error_frame(seq, &e)).await.is_ok(),
        };
        if !sent {
            break;
        }
    }
    // The client is done sending: finish what it sent, answer, close.
    drop(queue_tx);
    drop(out_tx);
    let _ = publisher.await;
    let _ = writer.await;
}

/// Takes the queued frames round by round and answers each.
async fn publish_rounds(app: AppState, mut queue: mpsc::Receiver<Queued>, out: mpsc::Sender<String>) {
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match queue.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut bytes = first.event.payload_bytes();
        let mut round = vec![first];
        while let Ok(next) = queue.try_recv() {
            if bytes + next.event.payload_bytes() > MAX_ROUND_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.event.payload_bytes();
            round.push(next);
        }
        // One request per room, the room's frames in seq order.
        let mut by_room: BTreeMap<String, (Vec<u64>, Vec<NewEvent>)> = BTreeMap::new();
        for Queued { seq, event } in round {
            let (seqs, events) = by_room.entry(event.room.clone()).or_default();
            seqs.push(seq);
            events.push(event);
        }
        let writes = by_room.into_values().map(|(seqs, events)| {
            let rooms = app.rooms.clone();
            async move { (seqs, rooms.publish(events).await) }
        });
        for (seqs, outcome) in futures_util::future::join_all(writes).await {
            let frames: Vec<String> = match outcome {
                Ok(published) => seqs
                    .iter()
                    .zip(published)
                    .map(|(seq, p)| {
                        json!({
                            "type": "ack",
                            "seq": seq,
                            "offset": p.offset,
                            "timestamp": p.timestamp,
                            "duplicate": p.duplicate,
                        })
                        .to_string()
                    })
                    .collect(),
                Err(e) => {
                    let e = ApiError::from(e);
                    seqs.iter().map(|seq| error_frame(Some(*seq), &e)).collect()
                }
            };
            for frame in frames {
                if out.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}
