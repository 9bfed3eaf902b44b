//! Durable consumers from the client side: a handle on one named consumer
//! that creates it, fetches leased messages, acks and naks them, and moves
//! to the next node when the one it talks to is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Client, ClientError, Event};
use crate::command::Gap;
pub use crate::protocol::{ConsumerInfo, ConsumerSettings, NamedStart, StartSpec};

/// How long a consumer operation keeps trying other nodes while none
/// answers (a leader election takes about a second).
const FAILOVER_FOR: Duration = Duration::from_secs(20);

/// Settings for [`Consumer::create`]; `None` takes the server's default
/// (`docs/api.md`, "Durable consumers").
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerOptions {
    /// `earliest` (default), `latest` or an offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<StartSpec>,
    /// Event-type filter, e.g. `order.*,payment.failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<String>,
    /// Lease length in ms (default 30,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_wait_ms: Option<u64>,
    /// Deliveries before dead-lettering (default 5; 0 = unlimited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Room for messages out of deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Most unacked messages at once (default 1,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<u32>,
}

/// A leased message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumedMessage {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// How many times it has been delivered, this time included.
    pub delivery: u32,
}

/// What one fetch got.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Fetch {
    /// The messages, in the order to process them.
    pub messages: Vec<ConsumedMessage>,
    /// Offsets retention removed before they could be delivered.
    #[serde(default)]
    pub missed: Vec<Gap>,
}

/// One named durable consumer of a room. Cheap to clone; clones share the
/// node they talk to.
#[derive(Clone)]
pub struct Consumer {
    client: Client,
    room: String,
    name: String,
    /// Index (into the client's nodes) of the node in use.
    node: Arc<AtomicUsize>,
}

impl Client {
    /// A handle on the consumer `name` of `room` (nothing is sent yet).
    pub fn consumer(&self, room: &str, name: &str) -> Consumer {
        Consumer { client: self.clone(), room: room.into(), name: name.into(), node: Arc::default() }
    }

    /// The consumers of `room`, by name.
    pub async fn consumers(&self, room: &str) -> Result<Vec<ConsumerInfo>, ClientError> {
        let answer: Value = self.get(&format!("/stream/{room}/consumers")).await?;
        serde_json::from_value(answer["consumers"].clone()).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Whether an error may go away on another node: the node is unreachable
/// or has no leader or quorum now (503).
fn worth_another_node(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. } | ClientError::Http { status: 503, .. })
}

impl Consumer {
    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, rest: &str) -> String {
        format!("/stream/{}/consumers/{}{rest}", self.room, self.name)
    }

    /// Sends `method path body` to the node in use, moving on to the next
    /// node while nodes are unreachable or unavailable, for up to
    /// [`FAILOVER_FOR`]. Every consumer operation is safe to repeat: a
    /// repeated fetch leases other messages (the first ones come back when
    /// their lease ends), a repeated ack acks nothing more.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        self.call_within(method, path, body, None).await
    }

    /// [`Consumer::call`] with a request timeout other than the client's
    /// (a long poll needs its wait on top).
    async fn call_within<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<T, ClientError> {
        let nodes = &self.client.nodes;
        let deadline = tokio::time::Instant::now() + FAILOVER_FOR;
        loop {
            let index = self.node.load(Ordering::Relaxed) % nodes.len();
            let url = nodes[index].join(path);
            let mut request = self.client.http.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match self.client.send(request, &url).await {
                Err(e) if worth_another_node(&e) && tokio::time::Instant::now() < deadline => {
                    let _ = self.node.compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
                    if (index + 1).is_multiple_of(nodes.len()) {
                        // Every node tried: give an election time.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                other => return other,
            }
        }
    }

    /// Creates the consumer, or replaces its settings (its position
    /// stays). Answers it as it is now.
    pub async fn create(&self, options: &ConsumerOptions) -> Result<ConsumerInfo, ClientError> {
        let body = serde_json::to_value(options).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(reqwest::Method::PUT, &self.path(""), Some(&body)).await
    }

    /// The consumer's position and counters.
    pub async fn info(&self) -> Result<ConsumerInfo, ClientError> {
        self.call(reqwest::Method::GET, &self.path(""), None).await
    }

    /// Deletes the consumer.
    pub async fn delete(&self) -> Result<(), ClientError> {
        self.call::<Value>(reqwest::Method::DELETE, &self.path(""), None).await.map(|_| ())
    }

    /// Leases up to `max` messages (1–1,000), waiting up to `wait` (at most
    /// 30 s) when none is ready.
    pub async fn fetch(&self, max: u32, wait: Duration) -> Result<Fetch, ClientError> {
        let body = json!({ "max": max, "wait_ms": wait.as_millis() as u64 });
        // The wait, plus the time a lease takes to commit (at most the
        // server's write timeout) and some.
        let timeout = wait + Duration::from_secs(30);
        self.call_within(reqwest::Method::POST, &self.path("/fetch"), Some(&body), Some(timeout)).await
    }

    /// Acks `offsets`; answers how many were pending. Returns once the
    /// acks are committed.
    pub async fn ack(&self, offsets: &[u64]) -> Result<u64, ClientError> {
        let answer: Value =
            self.call(reqwest::Method::POST, &self.path("/ack"), Some(&json!({ "offsets": offsets }))).await?;
        answer["acked"].as_u64().ok_or_else(|| ClientError::Decode(format!("ack answered {answer}")))
    }

    /// Hands `offsets` back: deliverable again after `delay`.
    pub async fn nak(&self, offsets: &[u64], delay: Duration) -> Result<u64, ClientError> {
        let body = json!({ "offsets": offsets, "delay_ms": delay.as_millis() as u64 });
        let answer: Value = self.call(reqwest::Method::POST, &self.path("/nak"), Some(&body)).await?;
        answer["naked"].as_u64().ok_or_else(|| ClientError::Decode(format!("nak answered {answer}")))
    }

    /// An endless stream of leased messages, fetched `batch` at a time
    /// with long polls, across node losses. The caller acks (or naks)
    /// each message; one it does not is delivered again once its lease
    /// ends. An error ends nothing: the next item tries again.
    pub fn messages(&self, batch: u32) -> impl futures_util::Stream<Item = Result<ConsumedMessage, ClientError>> + '_ {
        let buffered = std::collections::VecDeque::new();
        futures_util::stream::unfold(buffered, move |mut buffered| async move {
            loop {
                if let Some(message) = buffered.pop_front() {
                    return Some((Ok(message), buffered));
                }
                match self.fetch(batch, Duration::from_secs(5)).await {
                    Ok(fetch) => buffered.extend(fetch.messages),
                    Err(e) => return Some((Err(e), buffered)),
                }
            }
        })
    }
}

/// What a push handler does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with it.
    Ack,
    /// Give it back, deliverable again after this delay.
    Nak(Duration),
    /// Neither: it comes back when its lease ends.
    Leave,
    /// Leave it and end the push loop.
    Stop,
}

impl Consumer {
    /// Push delivery: streams leased messages over a WebSocket to
    /// `handler` and acks or naks each as it answers, until it answers
    /// [`Settle::Stop`]. When the node goes away the loop moves to the
    /// next one (in the order given to [`Client::cluster`]); messages
    /// leased to the lost connection come back when their lease ends. Ends
    /// with an error only if the consumer (or its room) is deleted.
    pub async fn push<F>(&self, mut handler: F) -> Result<(), ClientError>
    where
        F: FnMut(ConsumedMessage) -> Settle,
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        let nodes = &self.client.nodes;
        let mut failures = 0usize;
        loop {
            let index = self.node.load(Ordering::Relaxed) % nodes.len();
            let request = self.client.websocket_request(&nodes[index], &self.path("/ws"))?;
            let connected = tokio::time::timeout(Duration::from_secs(5), self.client.connect_websocket(request)).await;
            let lost = match connected {
                Ok(Ok((mut socket, _))) => {
                    failures = 0;
                    loop {
                        let text = match socket.next().await {
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Close(_))) | None => break "closed by the node".to_owned(),
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => break e.to_string(),
                        };
                        let frame: Value =
                            serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("frame: {e}")))?;
                        match frame["type"].as_str() {
                            Some("message") => {
                                let message: ConsumedMessage = serde_json::from_value(frame)
                                    .map_err(|e| ClientError::Decode(format!("message frame: {e}")))?;
                                let offset = message.event.offset;
                                let answer = match handler(message) {
                                    Settle::Ack => json!({ "type": "ack", "offsets": [offset] }),
                                    Settle::Nak(delay) => json!({
                                        "type": "nak", "offsets": [offset], "delay_ms": delay.as_millis() as u64
                                    }),
                                    Settle::Leave => continue,
                                    Settle::Stop => {
                                        let _ = socket.close(None).await;
                                        return Ok(());
                                    }
                                };
                                if let Err(e) = socket.send(Message::Text(answer.to_string().into())).await {
                                    break e.to_string();
                                }
                            }
                            Some("error") if frame["status"] == 404 => {
                                let message = frame["error"].as_str().unwrap_or("consumer deleted").to_owned();
                                return Err(ClientError::Http { status: 404, message });
                            }
                            Some("error") => break frame["error"].as_str().unwrap_or("error frame").to_owned(),
                            _ => {}
                        }
                    }
                }
                Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) if response.status() == 404 => {
                    return Err(ClientError::Http { status: 404, message: format!("{}: no such consumer", self.name) });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connect timed out".to_owned(),
            };
            tracing::debug!("push delivery of {}/{} on {} ended: {lost}", self.room, self.name, nodes[index]);
            let _ = self.node.compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
            failures += 1;
            if failures >= nodes.len() {
                tokio::time::sleep(Duration::from_millis(100 << (failures / nodes.len()).min(4))).await;
            }
        }
    }
}
