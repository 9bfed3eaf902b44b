//! The workload: publishers and subscribers on random nodes, every operation
//! recorded with its start, end and outcome.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use synap::client::{Client, Received, StartAt, SubscribeOptions};

/// How a publish ended, as far as the client can know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Ok {
        /// The offset.
        offset: u64,
    },
    /// Refused before anything was written (connection refused, 4xx, or
    /// 503 "no leader available").
    Failed(String),
    /// May or may not have been written (timeout, broken connection,
    /// 503 "outcome unknown").
    Unknown(String),
}

/// One publish operation (all attempts of it, for publishers that retry).
#[derive(Debug, Clone)]
pub struct PublishOp {
    /// Unique marker carried in the event's data as `op`.
    pub op: String,
    /// Room published to.
    pub room: String,
    /// Client id, for the publishers that use one.
    pub id: Option<String>,
    /// When the first attempt was sent.
    pub invoked: Instant,
    /// When the last attempt ended.
    pub completed: Instant,
    /// Attempts made.
    pub attempts: u32,
    /// The outcome.
    pub outcome: Outcome,
}

/// What one subscriber received.
#[derive(Debug, Clone)]
pub struct SubscriberLog {
    /// Subscriber name (`ws-0`, `sse-1`, ...).
    pub name: String,
    /// Room followed.
    pub room: String,
    /// (offset, event JSON) in the order received.
    pub received: Vec<(u64, Value)>,
    /// Gap notices received.
    pub gaps: Vec<(u64, u64)>,
    /// Why the subscriber stopped early, if it did.
    pub error: Option<String>,
}

/// The running workload.
pub struct Workload {
    stop_publishing: Arc<AtomicBool>,
    stop_subscribing: Arc<AtomicBool>,
    publishers: Vec<tokio::task::JoinHandle<Vec<PublishOp>>>,
    subscribers: Vec<(Arc<Mutex<SubscriberLog>>, tokio::task::JoinHandle<()>)>,
}

/// Workload settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Publisher tasks; even ones use ids (and retry), odd ones do not.
    pub publishers: usize,
    /// Subscriber tasks; even ones WebSocket, odd ones SSE.
    pub subscribers: usize,
    /// Room names.
    pub rooms: Vec<String>,
    /// Seed for node and room choices.
    pub seed: u64,
}

impl Workload {
    /// Starts publishers and subscribers against `urls`.
    pub fn start(settings: &Settings, urls: Vec<String>) -> Workload {
        let stop_publishing = Arc::new(AtomicBool::new(false));
        let stop_subscribing = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        let publishers = (0..settings.publishers)
            .map(|p| {
                let (http, urls, rooms, stop) =
                    (http.clone(), urls.clone(), settings.rooms.clone(), stop_publishing.clone());
                let rng = SmallRng::seed_from_u64(settings.seed.wrapping_add(p as u64));
                tokio::spawn(publisher(p, p % 2 == 0, http, urls, rooms, stop, rng))
            })
            .collect();
        let subscribers = (0..settings.subscribers)
            .map(|s| {
                let room = settings.rooms[s % settings.rooms.len()].clone();
                let name = format!("{}-{s}", if s % 2 == 0 { "ws" } else { "sse" });
                let log = Arc::new(Mutex::new(SubscriberLog {
                    name,
                    room: room.clone(),
                    received: Vec::new(),
                    gaps: Vec::new(),
                    error: None,
                }));
                // Each subscriber prefers a different node first.
                let mut order = urls.clone();
                order.rotate_left(s % urls.len().max(1));
                let task = if s % 2 == 0 {
                    tokio::spawn(ws_subscriber(order, room, log.clone(), stop_subscribing.clone()))
                } else {
                    tokio::spawn(sse_subscriber(http.clone(), order, room, log.clone(), stop_subscribing.clone()))
                };
                (log, task)
            })
            .collect();
        Workload { stop_publishing, stop_subscribing, publishers, subscribers }
    }

    /// Stops the publishers and returns their operations.
    pub async fn stop_publishers(&mut self) -> Vec<PublishOp> {
        self.stop_publishing.store(true, Ordering::SeqCst);
        let mut ops = Vec::new();
        for task in self.publishers.drain(..) {
            ops.extend(task.await.unwrap_or_default());
        }
        ops
    }

    /// Offsets received so far per subscriber.
    pub fn subscriber_progress(&self) -> Vec<(String, usize)> {
        self.subscribers
            .iter()
            .map(|(log, _)| {
                let log = log.lock().unwrap_or_else(|p| p.into_inner());
                (log.room.clone(), log.received.len())
            })
            .collect()
    }

    /// Stops the subscribers and returns what they received.
    pub async fn stop_subscribers(&mut self) -> Vec<SubscriberLog> {
        self.stop_subscribing.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for (log, task) in self.subscribers.drain(..) {
            task.abort();
            let _ = task.await;
            logs.push(log.lock().unwrap_or_else(|p| p.into_inner()).clone());
        }
        logs
    }
}

/// Classifies a failed HTTP exchange.
fn classify_error(e: &reqwest::Error) -> Outcome {
    if e.is_connect() {
        Outcome::Failed(format!("connect: {e}"))
    } else {
        Outcome::Unknown(format!("transport: {e}"))
    }
}

fn classify_status(status: u16, body: &str) -> Outcome {
    // 4xx is refused input; "no leader available" is the server saying it
    // could not hand the request to any leader, so nothing was written.
    let refused = (400..500).contains(&status) || (status == 503 && body.contains("no leader available"));
    if refused {
        Outcome::Failed(format!("{status}: {body}"))
    } else {
        Outcome::Unknown(format!("{status}: {body}"))
    }
}

async fn publish_once(http: &reqwest::Client, url: &str, room: &str, body: &Value) -> Outcome {
    let response = match http.post(format!("{url}/stream/{room}/publish")).json(body).send().await {
        Ok(response) => response,
        Err(e) => return classify_error(&e),
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => return Outcome::Unknown(format!("reading answer: {e}")),
    };
    if status != 200 {
        return classify_status(status, &text);
    }
    match serde_json::from_str::<Value>(&text).ok().and_then(|v| v["offset"].as_u64()) {
        Some(offset) => Outcome::Ok { offset },
        None => Outcome::Unknown(format!("unreadable answer: {text}")),
    }
}

async fn publisher(
    p: usize,
    with_id: bool,
    http: reqwest::Client,
    urls: Vec<String>,
    rooms: Vec<String>,
    stop: Arc<AtomicBool>,
    mut rng: SmallRng,
) -> Vec<PublishOp> {
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let op = format!("p{p}-{seq}");
        seq += 1;
        let room = rooms[rng.random_range(0..rooms.len())].clone();
        let id = with_id.then(|| format!("id-{op}"));
        let body = json!({ "event": "chaos.publish", "data": { "op": op, "publisher": p }, "id": id });
        let invoked = Instant::now();
        let mut attempts = 0;
        let mut outcome;
        let mut unknown = None;
        loop {
            attempts += 1;
            let url = &urls[rng.random_range(0..urls.len())];
            outcome = publish_once(&http, url, &room, &body).await;
            if let Outcome::Unknown(why) = &outcome {
                unknown = Some(why.clone());
            }
            // Publishers with ids retry what did not succeed, with the same
            // id: the dedup window makes that safe.
            if matches!(outcome, Outcome::Ok { .. }) || !with_id || attempts >= 5 || stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts))).await;
        }
        // A refusal after an attempt of unknown outcome leaves the whole
        // operation unknown: the earlier attempt may have been written.
        if let (Outcome::Failed(_), Some(why)) = (&outcome, unknown) {
            outcome = Outcome::Unknown(why);
        }
        let failed = !matches!(outcome, Outcome::Ok { .. });
        ops.push(PublishOp { op, room, id, invoked, completed: Instant::now(), attempts, outcome });
        if failed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ops
}

fn record(log: &Arc<Mutex<SubscriberLog>>, f: impl FnOnce(&mut SubscriberLog)) {
    f(&mut log.lock().unwrap_or_else(|p| p.into_inner()));
}

async fn ws_subscriber(urls: Vec<String>, room: String, log: Arc<Mutex<SubscriberLog>>, stop: Arc<AtomicBool>) {
    let client = Client::cluster(&urls);
    let sink = log.clone();
    let result = client
        .subscribe(&room, StartAt::Offset(0), SubscribeOptions::default(), move |received| {
            match received {
                Received::Event(event) => {
                    let value = serde_json::to_value(&event).unwrap_or(Value::Null);
                    record(&sink, |l| l.received.push((event.offset, value)));
                }
                Received::Gap { requested, earliest } => record(&sink, |l| l.gaps.push((requested, earliest))),
            }
            if stop.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await;
    if let Err(e) = result {
        record(&log, |l| l.error = Some(e.to_string()));
    }
}

/// An SSE subscriber that resumes with `Last-Event-ID` on the next node
/// whenever its stream ends.
async fn sse_subscriber(
    http: reqwest::Client,
    urls: Vec<String>,
    room: String,
    log: Arc<Mutex<SubscriberLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<u64> = None;
    let mut node = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let url = format!("{}/stream/{room}/sse?from_offset=0", urls[node % urls.len()]);
        node += 1;
        let mut request = http.get(&url).timeout(Duration::from_secs(3600));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let Ok(response) = request.send().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !response.status().is_success() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        // A paused node keeps the connection open but sends nothing; keep-
        // alives come every 15 s, so silence beyond that means move on.
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let value: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                match (kind.as_str(), id) {
                    ("gap", _) => {
                        let (r, e) = (value["requested_offset"].as_u64(), value["earliest_offset"].as_u64());
                        record(&log, |l| l.gaps.push((r.unwrap_or(0), e.unwrap_or(0))));
                    }
                    ("error", _) => break,
                    (_, Some(offset)) => {
                        last = Some(offset);
                        record(&log, |l| l.received.push((offset, value)));
                    }
                    _ => {}
                }
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}
