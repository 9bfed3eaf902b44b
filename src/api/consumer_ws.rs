//! Push delivery of a durable consumer over one WebSocket:
//! `GET /stream/{room}/consumers/{name}/ws`.
//!
//! The server leases messages for the connection and sends each as
//! `{"type":"message", <event fields>, "delivery"}`; the client settles them
//! with `{"type":"ack","offsets":[...]}` or `{"type":"nak","offsets":[...],
//! "delay_ms"?}` frames, answered `{"type":"acked"|"naked","offsets","count"}`
//! once committed. How many messages are out at once is the consumer's
//! `max_ack_pending`, enforced by the state machine for all its workers
//! together. Messages leased to a connection that closes come back when
//! their lease ends.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::auth::Caller;
use super::consumers::checked_target;
use super::error::ApiError;
use super::event_json::write_event_fields;
use super::input::{KeyOnlyQuery, SettleBody, MAX_FETCH};
use super::AppState;
use crate::service::consumers::Message as Leased;

/// How long one lease request waits for messages before it asks again
/// (the loop also notices a closed connection then).
const POLL: Duration = Duration::from_secs(5);

/// `GET /stream/{room}/consumers/{name}/ws`
pub async fn push_ws(
    caller: Caller,
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<KeyOnlyQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Path((room, name)) = path?;
    checked_target(&caller, &room, &name)?;
    query?;
    // A missing room or consumer is a 404 before the upgrade.
    app.consumers.info(&room, &name)?;
    let upgrade = upgrade?;
    Ok(upgrade
        .read_buffer_size(crate::protocol::WS_READ_BUFFER)
        .on_upgrade(move |socket| serve(socket, app, room, name)))
}

fn message_frame(room: &str, message: &Leased) -> String {
    let mut frame = String::with_capacity(256);
    frame.push_str("{\"type\":\"message\",");
    write_event_fields(&mut frame, room, message.lease.offset, &message.event);
    frame.push_str(",\"delivery\":");
    frame.push_str(&message.lease.delivery.to_string());
    frame.push('}');
    frame
}

fn error_frame(e: &ApiError) -> String {
    json!({ "type": "error", "status": e.status.as_u16(), "code": e.code(), "error": e.message }).to_string()
}

async fn serve(socket: WebSocket, app: AppState, room: String, name: String) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(MAX_FETCH as usize);
    let timeout = app.node.config.subscriber_send_timeout;

    // Frames go out in order; a client that reads nothing for `timeout` is
    // disconnected (its messages come back when their leases end).
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            let sent = tokio::time::timeout(timeout, sink.send(Message::Text(frame.into()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
        let close = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() })));
        let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    });

    let leaser = {
        let (app, room, name, out) = (app.clone(), room.clone(), name.clone(), out_tx.clone());
        tokio::spawn(async move {
            loop {
                match app.consumers.fetch(&room, &name, MAX_FETCH, POLL).await {
                    Ok(fetched) => {
                        for message in &fetched.messages {
                            if out.send(message_frame(&room, message)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // The consumer or room went away, or the cluster is
                        // unavailable: say so and end; the client reconnects.
                        let _ = out.send(error_frame(&ApiError::from(e))).await;
                        return;
                    }
                }
            }
        })
    };

    while let Some(Ok(message)) = stream.next().await {
        let text = match &message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let answer = match settle(&app, &room, &name, &text).await {
            Ok(answer) => answer,
            Err(e) => error_frame(&e),
        };
        if out_tx.send(answer).await.is_err() || leaser.is_finished() {
            break;
        }
    }
    leaser.abort();
    drop(out_tx);
    let _ = writer.await;
}

/// Carries out one ack or nak frame (the REST body plus `"type"`);
/// answers the frame to send back.
async fn settle(app: &AppState, room: &str, name: &str, text: &str) -> Result<String, ApiError> {
    let shape = "{\"type\":\"ack\"|\"nak\",\"offsets\":[...],\"delay_ms\"?}";
    let mut frame: Value =
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("not a frame {shape}: {e}")))?;
    let nak = match frame.as_object_mut().and_then(|o| o.remove("type")).as_ref().and_then(Value::as_str) {
        Some("ack") => false,
        Some("nak") => true,
        _ => return Err(ApiError::bad_request(format!("a frame's type is ack or nak: {shape}"))),
    };
    let body: SettleBody =
        serde_json::from_value(frame).map_err(|e| ApiError::bad_request(format!("not a frame {shape}: {e}")))?;
    let (offsets, delay) = body.validate(nak)?;
    let (kind, count) = if nak {
        ("naked", app.consumers.nak(room, name, offsets.clone(), delay).await?)
    } else {
        ("acked", app.consumers.ack(room, name, offsets.clone()).await?)
    };
    Ok(json!({ "type": kind, "offsets": offsets, "count": count }).to_string())
}
