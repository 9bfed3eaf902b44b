//! Pipelined publishing over one WebSocket (`/publish/ws`): send many
//! events without waiting, read their acknowledgements as they come.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Client, ClientError};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Frames the server queues per connection before it stops reading it;
/// a sender that keeps fewer unacknowledged never blocks on a full socket
/// while acknowledgements wait to be read.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The answer to one publish of a [`PublishStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The `seq` the publish was sent with.
    pub seq: u64,
    /// Where it landed, or why not.
    pub outcome: Result<Landed, Refused>,
}

impl PublishAck {
    /// The answer as the server framed it (`{"type":"ack",...}` or
    /// `{"type":"error",...}`).
    pub fn to_frame(&self) -> Value {
        let (kind, mut frame) = match &self.outcome {
            Ok(landed) => ("ack", serde_json::to_value(landed)),
            Err(refused) => ("error", serde_json::to_value(refused)),
        };
        if let Ok(Value::Object(fields)) = &mut frame {
            fields.insert("type".into(), kind.into());
            fields.insert("seq".into(), self.seq.into());
        }
        frame.unwrap_or(Value::Null)
    }
}

/// A published event's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landed {
    /// Its offset in the room.
    pub offset: u64,
    /// Cluster time stamped on it.
    pub timestamp: u64,
    /// True when an earlier publish with the same id was found instead.
    #[serde(default)]
    pub duplicate: bool,
}

/// Why the server did not publish an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The HTTP status the same publish would have got.
    pub status: u16,
    /// A short name for it (`bad_request`, `forbidden`, `unavailable`, ...).
    pub code: String,
    /// What went wrong.
    pub error: String,
}

/// A WebSocket to one node for pipelined publishing. Each [`send`] gets a
/// new `seq`; [`recv`] returns acknowledgements as they complete. On one
/// stream, the offsets of one room follow `seq` order. [`split`] gives
/// halves that can send and receive concurrently.
///
/// [`send`]: PublishStream::send
/// [`recv`]: PublishStream::recv
/// [`split`]: PublishStream::split
pub struct PublishStream {
    sender: PublishSender,
    receiver: PublishReceiver,
}

/// The sending half of a [`PublishStream`].
pub struct PublishSender {
    sink: SplitSink<Socket, Message>,
    next_seq: u64,
}

/// The receiving half of a [`PublishStream`].
pub struct PublishReceiver {
    source: SplitStream<Socket>,
}

impl Client {
    /// Opens a [`PublishStream`] to the first node.
    pub async fn publish_stream(&self) -> Result<PublishStream, ClientError> {
        let request = self.websocket_request(&self.base, "/publish/ws")?;
        let (socket, _) = self
            .connect_websocket(request)
            .await
            .map_err(|e| ClientError::Transport { url: self.base.websocket("/publish/ws"), reason: e.to_string() })?;
        let (sink, source) = socket.split();
        Ok(PublishStream { sender: PublishSender { sink, next_seq: 0 }, receiver: PublishReceiver { source } })
    }
}

impl PublishStream {
    /// Sends one event without waiting for it; returns its `seq`.
    pub async fn send(
        &mut self,
        room: &str,
        event: &str,
        data: &Value,
        metadata: Option<&Value>,
        id: Option<&str>,
    ) -> Result<u64, ClientError> {
        self.sender.send(room, event, data, metadata, id).await
    }

    /// Sends a frame as is (its `seq` is the caller's business).
    pub async fn send_raw(&mut self, frame: String) -> Result<(), ClientError> {
        self.sender.send_raw(frame).await
    }

    /// The next acknowledgement; `None` once the server closed the stream.
    pub async fn recv(&mut self) -> Option<Result<PublishAck, ClientError>> {
        self.receiver.recv().await
    }

    /// Closes the stream. Call it after the last answer you wait for: once
    /// the server reads the close it sends nothing more, so publishes still
    /// in flight may land without their acknowledgement reaching you.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sender.close().await
    }

    /// The two halves, to send and receive from different tasks.
    pub fn split(self) -> (PublishSender, PublishReceiver) {
        (self.sender, self.receiver)
    }
}

impl PublishSender {
    /// Sends one event without waiting for it; returns its `seq`.
    pub async fn send(
        &mut self,
        room: &str,
        event: &str,
        data: &Value,
        metadata: Option<&Value>,
        id: Option<&str>,
    ) -> Result<u64, ClientError> {
        let seq = self.next_seq;
        let mut frame = json!({ "seq": seq, "room": room, "event": event, "data": data });
        if let Some(metadata) = metadata {
            frame["metadata"] = metadata.clone();
        }
        if let Some(id) = id {
            frame["id"] = Value::from(id);
        }
        self.send_raw(frame.to_string()).await?;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Sends a frame as is (its `seq` is the caller's business).
    pub async fn send_raw(&mut self, frame: String) -> Result<(), ClientError> {
        self.sink.send(Message::Text(frame.into())).await.map_err(lost)
    }

    /// Closes the stream. Call it after the last answer you wait for: once
    /// the server reads the close it sends nothing more, so publishes still
    /// in flight may land without their acknowledgement reaching you.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sink.close().await.map_err(lost)
    }
}

impl PublishReceiver {
    /// The next acknowledgement; `None` once the server closed the stream.
    /// A frame the server could not tie to a `seq` (it could not read one)
    /// is an error.
    pub async fn recv(&mut self) -> Option<Result<PublishAck, ClientError>> {
        loop {
            let text = match self.source.next().await? {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(lost(e))),
            };
            return Some(parse_answer(&text));
        }
    }
}

fn lost(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    ClientError::Transport { url: "/publish/ws".into(), reason: e.to_string() }
}

fn parse_answer(text: &str) -> Result<PublishAck, ClientError> {
    let frame: Value = serde_json::from_str(text).map_err(|e| ClientError::Decode(format!("publish answer: {e}")))?;
    let decode = |e: serde_json::Error| ClientError::Decode(format!("publish answer {text}: {e}"));
    let seq = frame["seq"].as_u64();
    match (frame["type"].as_str(), seq) {
        (Some("ack"), Some(seq)) => Ok(PublishAck { seq, outcome: Ok(Landed::deserialize(&frame).map_err(decode)?) }),
        (Some("error"), Some(seq)) => {
            Ok(PublishAck { seq, outcome: Err(Refused::deserialize(&frame).map_err(decode)?) })
        }
        (Some("error"), None) => {
            let refused = Refused::deserialize(&frame).map_err(decode)?;
            Err(ClientError::Http { status: refused.status, message: refused.error })
        }
        _ => Err(ClientError::Decode(format!("unexpected publish answer: {text}"))),
    }
}
