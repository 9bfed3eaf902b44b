//! Subscriptions that survive node loss: a WebSocket to one node at a
//! time, resumed on the next node from the last delivered offset + 1.

use std::ops::ControlFlow;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{Client, ClientError, Event};
use crate::protocol::StartAt;

/// What a subscription hands to its handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Event),
    /// Events from `requested` up to `earliest` were trimmed by retention
    /// before they could be delivered; delivery continues at `earliest`.
    Gap {
        /// The offset the subscription wanted next.
        requested: u64,
        /// The earliest retained offset.
        earliest: u64,
    },
}

/// Options of [`Client::subscribe`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Server-side type filter, e.g. `user.*,order.created`.
    pub types: Option<String>,
}

impl Client {
    /// Streams `room` to `handler` until it returns `Break`, in offset
    /// order, each event exactly once, across node failures: when the
    /// connection to a node ends, the subscription resumes on the next
    /// node (in the order given to [`Client::cluster`]) from the last
    /// delivered offset + 1. Ends with an error only if the room is
    /// deleted or a node breaks the offset order.
    pub async fn subscribe<F>(
        &self,
        room: &str,
        from: StartAt,
        options: SubscribeOptions,
        mut handler: F,
    ) -> Result<(), ClientError>
    where
        F: FnMut(Received) -> ControlFlow<()>,
    {
        let mut next: Option<u64> = match from {
            StartAt::Offset(offset) => Some(offset),
            _ => None,
        };
        let mut node = 0usize;
        let mut failures = 0u32;
        loop {
            let base = &self.nodes[node % self.nodes.len()];
            let mut url = reqwest::Url::parse(&base.websocket(&format!("/stream/{room}/ws")))
                .map_err(|e| ClientError::Decode(format!("bad node URL {base}: {e}")))?;
            {
                let mut query = url.query_pairs_mut();
                match (next, from) {
                    (Some(offset), _) => query.append_pair("from_offset", &offset.to_string()),
                    (None, StartAt::FromEnd(back)) => query.append_pair("from_offset", &format!("-{back}")),
                    (None, _) => &mut query,
                };
                if let Some(types) = &options.types {
                    query.append_pair("types", types);
                }
            }
            let path = match url.query() {
                Some(query) if !query.is_empty() => format!("{}?{query}", url.path()),
                _ => url.path().to_owned(),
            };
            let request = self.websocket_request(base, &path)?;
            let outcome = match tokio::time::timeout(Duration::from_secs(5), self.connect_websocket(request)).await {
                Ok(Ok((socket, _))) => {
                    failures = 0;
                    stream_from(socket, &mut next, options.types.is_some(), &mut handler).await
                }
                Ok(Err(e)) => Err(Ended::Lost(e.to_string())),
                Err(_) => Err(Ended::Lost("connect timed out".into())),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(Ended::Fatal(e)) => return Err(e),
                Err(Ended::Lost(reason)) => {
                    tracing::debug!("subscription to {room} on {base} ended: {reason}; trying the next node");
                    node += 1;
                    failures += 1;
                    // Back off only once every node has failed in a row.
                    if failures as usize >= self.nodes.len() {
                        let pause = 100u64 << (failures as usize / self.nodes.len()).min(4);
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
        }
    }
}

enum Ended {
    /// The connection ended; resume elsewhere.
    Lost(String),
    /// The subscription cannot go on.
    Fatal(ClientError),
}

async fn stream_from<S, F>(mut socket: S, next: &mut Option<u64>, filtered: bool, handler: &mut F) -> Result<(), Ended>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    F: FnMut(Received) -> ControlFlow<()>,
{
    while let Some(message) = socket.next().await {
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => return Err(Ended::Lost("closed by the node".into())),
            Ok(_) => continue,
            Err(e) => return Err(Ended::Lost(e.to_string())),
        };
        let frame: Value =
            serde_json::from_str(&text).map_err(|e| Ended::Fatal(ClientError::Decode(format!("frame: {e}"))))?;
        match frame["type"].as_str() {
            Some("connected") if next.is_none() => *next = frame["from_offset"].as_u64(),
            Some("event") => {
                let event: Event = serde_json::from_value(frame)
                    .map_err(|e| Ended::Fatal(ClientError::Decode(format!("event frame: {e}"))))?;
                let expected = next.unwrap_or(event.offset);
                if event.offset < expected {
                    continue; // already delivered before a reconnect
                }
                if event.offset > expected && !filtered {
                    return Err(Ended::Fatal(ClientError::Decode(format!(
                        "node skipped offsets {expected}..{} without a gap notice",
                        event.offset
                    ))));
                }
                *next = Some(event.offset + 1);
                if handler(Received::Event(event)).is_break() {
                    return Ok(());
                }
            }
            Some("error") => match frame["code"].as_str() {
                Some("gap") => {
                    let (Some(requested), Some(earliest)) =
                        (frame["requested_offset"].as_u64(), frame["earliest_offset"].as_u64())
                    else {
                        return Err(Ended::Fatal(ClientError::Decode(format!("gap frame: {frame}"))));
                    };
                    *next = Some(earliest);
                    if handler(Received::Gap { requested, earliest }).is_break() {
                        return Ok(());
                    }
                }
                Some("room_deleted") => {
                    let message = frame["error"].as_str().unwrap_or("room deleted").to_owned();
                    return Err(Ended::Fatal(ClientError::Http { status: 410, message }));
                }
                _ => return Err(Ended::Lost(frame["error"].as_str().unwrap_or("error frame").to_owned())),
            },
            _ => {}
        }
    }
    Err(Ended::Lost("connection ended".into()))
}
