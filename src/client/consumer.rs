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
        let nodes = &self.client.nodes;
        let deadline = tokio::time::Instant::now() + FAILOVER_FOR;
        loop {
            let index = self.node.load(Ordering::Relaxed) % nodes.len();
            let url = nodes[index].join(path);
            let mut request = self.client.http.request(method.clone(), &url);
            if let Some(body) = body {
                request = request.json(body);
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
        self.call(reqwest::Method::POST, &self.path("/fetch"), Some(&body)).await
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
