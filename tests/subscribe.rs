//! Live subscriptions over WebSocket and SSE against real nodes.

mod common;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use synap::client::{Client, Received, StartAt, SubscribeOptions};
use tokio_tungstenite::tungstenite::Message;

const READY: Duration = Duration::from_secs(30);

/// A raw WebSocket subscriber collecting frames in the background.
struct WsSub {
    frames: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WsSub {
    /// Connects and returns once the `connected` frame arrived.
    async fn connect(url: &str) -> (WsSub, Value) {
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
        let connected = loop {
            match socket.next().await.expect("a first frame").expect("ws frame") {
                Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
                _ => continue,
            }
        };
        assert_eq!(connected["type"], "connected", "first frame: {connected}");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Text(text) = message {
                    sink.lock().unwrap().push(serde_json::from_str(&text).unwrap());
                }
            }
        });
        (WsSub { frames, task }, connected)
    }

    fn events(&self) -> Vec<Value> {
        self.frames.lock().unwrap().iter().filter(|f| f["type"] == "event").cloned().collect()
    }

    async fn wait_events(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let frames = self.frames.clone();
        wait_for(timeout, &format!("{n} events on the subscription"), || {
            let frames = frames.clone();
            async move { frames.lock().unwrap().iter().filter(|f| f["type"] == "event").count() >= n }
        })
        .await;
        self.events()
    }
}

impl Drop for WsSub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ws_url(http: &str, path: &str) -> String {
    format!("{}{path}", http.replacen("http://", "ws://", 1))
}

/// The event objects of `history`, as a subscription frame shows them.
fn as_frames(history: &[synap::client::Event]) -> Vec<Value> {
    history
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            v["type"] = json!("event");
            v
        })
        .collect()
}

async fn publish_batch(url: &str, room: &str, from: usize, n: usize, kind: impl Fn(usize) -> &'static str) {
    let events: Vec<Value> = (from..from + n).map(|i| json!({ "event": kind(i), "data": { "i": i } })).collect();
    let (status, body) =
        raw(Method::POST, &format!("{url}/stream/{room}/batch"), Some(&json!({ "events": events }).to_string())).await;
    assert_eq!(status, 200, "batch publish: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_subscriber_on_one_node_sees_everything_published_elsewhere() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let (sub, connected) = WsSub::connect(&ws_url(&cluster.nodes[1].url, "/stream/live/ws")).await;
    assert_eq!(connected["from_offset"], 0);
    let publishers: Vec<_> = [0usize, 2]
        .into_iter()
        .map(|n| {
            let client = cluster.nodes[n].client();
            tokio::spawn(async move {
                for i in 0..500 {
                    client.publish("live", "tick", &json!({ "node": n, "i": i }), None, None).await.expect("publish");
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    let events = sub.wait_events(1000, Duration::from_secs(60)).await;
    let history = cluster.nodes[1].client().history_all("live").await.unwrap();
    assert_eq!(history.len(), 1000);
    assert_eq!(events, as_frames(&history), "the subscription equals history, offsets 0..999 in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_zero_switches_to_live_without_a_gap() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    for chunk in 0..10 {
        publish_batch(&url, "replay", chunk * 1000, 1000, |_| "old").await;
    }
    let (sub, connected) = WsSub::connect(&ws_url(&cluster.nodes[2].url, "/stream/replay/ws?from_offset=0")).await;
    assert_eq!(connected["from_offset"], 0);
    for i in 0..100 {
        cluster.nodes[1].client().publish("replay", "new", &json!({ "i": 10_000 + i }), None, None).await.unwrap();
    }
    let events = sub.wait_events(10_100, Duration::from_secs(60)).await;
    let offsets: Vec<u64> = events.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..10_100).collect::<Vec<u64>>());
    let history = cluster.nodes[2].client().history_all("replay").await.unwrap();
    assert_eq!(events, as_frames(&history));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_types_filter_delivers_exactly_the_matching_events() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    let kinds = ["user.created", "user.deleted", "order.created", "order.item.added", "user.profile.updated"];
    publish_batch(&url, "mixed", 0, 50, |i| kinds[i % kinds.len()]).await;
    let (sub, _) = WsSub::connect(&ws_url(&url, "/stream/mixed/ws?from_offset=0&types=user.*,order.item.%3E")).await;
    publish_batch(&url, "mixed", 50, 50, |i| kinds[i % kinds.len()]).await;
    let history = cluster.nodes[0].client().history_all("mixed").await.unwrap();
    let expected: Vec<Value> = as_frames(&history)
        .into_iter()
        .filter(|e| matches!(e["event"].as_str(), Some("user.created" | "user.deleted" | "order.item.added")))
        .collect();
    assert_eq!(expected.len(), 60);
    let events = sub.wait_events(expected.len(), Duration::from_secs(30)).await;
    assert_eq!(events, expected);
}

/// Reads SSE events (`id`, `event`, parsed `data`) from a response until
/// `n` arrived.
async fn read_sse(response: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("SSE data within 30 s")
            .expect("SSE stream open")
            .expect("SSE chunk");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.to_owned();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !data.is_empty() {
                events.push((id, kind, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_resumes_after_a_disconnect_with_last_event_id() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    publish_batch(&url, "sse", 0, 300, |_| "sse.tick").await;
    let http = reqwest::Client::new();
    let sse_url = format!("{}/stream/sse/sse?from_offset=0", cluster.nodes[1].url);
    let first = read_sse(http.get(&sse_url).send().await.unwrap(), 120).await;
    // Dropping the response closes the connection mid-stream; more events
    // are published while no one listens.
    publish_batch(&url, "sse", 300, 100, |_| "sse.tick").await;
    let last_id = first.last().unwrap().0.clone();
    let second =
        read_sse(http.get(&sse_url).header("Last-Event-ID", &last_id).send().await.unwrap(), 400 - first.len()).await;
    let union: Vec<&(String, String, Value)> = first.iter().chain(second.iter()).collect();
    let ids: Vec<u64> = union.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(ids, (0..400).collect::<Vec<u64>>(), "gapless and duplicate-free across the reconnect");
    let history = as_frames(&cluster.nodes[1].client().history_all("sse").await.unwrap());
    for ((id, kind, data), expected) in union.iter().zip(&history) {
        assert_eq!(kind, "sse.tick");
        assert_eq!(data, expected, "event {id} equals history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_library_resumes_on_another_node_when_its_node_dies() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let urls = cluster.urls();
    // The subscriber prefers node 2, then 1, then 3.
    let subscriber = Client::cluster(&[urls[1].clone(), urls[0].clone(), urls[2].clone()]);
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    const TOTAL: usize = 600;
    let task = tokio::spawn(async move {
        subscriber
            .subscribe("failover", StartAt::Offset(0), SubscribeOptions::default(), |r| {
                let mut all = sink.lock().unwrap();
                if let Received::Event(e) = r {
                    all.push(e);
                }
                if all.len() >= TOTAL {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
    });
    let publisher = Client::cluster(&[urls[0].clone()]);
    for i in 0..TOTAL / 2 {
        publisher.publish("failover", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let counter = received.clone();
    wait_for(Duration::from_secs(30), "the subscriber to be mid-stream", || {
        let counter = counter.clone();
        async move { counter.lock().unwrap().len() >= 100 }
    })
    .await;
    cluster.node_mut(2).kill();
    for i in TOTAL / 2..TOTAL {
        publisher.publish("failover", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), task).await.expect("subscription finished").unwrap().unwrap();
    let received = received.lock().unwrap().clone();
    let history = cluster.nodes[0].client().history_all("failover").await.unwrap();
    assert_eq!(received.len(), TOTAL);
    assert_eq!(received, history, "gapless, duplicate-free and equal to history across the node loss");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_reader_costs_no_memory_and_then_catches_up() {
    let cluster = Cluster::start(1, &["--subscriber-send-timeout-secs", "300"]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    let pid = cluster.nodes[0].pid().expect("node 1 runs");
    publish_batch(&url, "stall", 0, 100, |_| "warmup").await;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_url(&url, "/stream/stall/ws?from_offset=100")).await.unwrap();
    let before = rss_kib(pid);
    // The reader reads nothing while 50,000 events of ~200 bytes go by.
    for chunk in 0..100 {
        publish_batch(&url, "stall", 100 + chunk * 500, 500, |_| "stall.tick").await;
    }
    let after = rss_kib(pid);
    let growth_mb = (after.saturating_sub(before)) as f64 / 1024.0;
    assert!(growth_mb < 50.0, "resident memory grew by {growth_mb:.1} MB while a reader stalled");
    let mut offsets = Vec::new();
    while offsets.len() < 50_000 {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("frames keep coming");
        if let Some(Ok(Message::Text(text))) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "event" {
                offsets.push(frame["offset"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(offsets, (100..50_100).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_subscription_requests_are_refused_before_the_upgrade() {
    let cluster = Cluster::start(1, &["--max-subscribers", "1"]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let cases = [
        ("/stream/bad%20room/ws", 400),
        ("/stream/ok/ws?from_offset=abc", 400),
        ("/stream/ok/ws?bogus=1", 400),
        ("/stream/ok/ws?types=a..b", 400),
        ("/stream/bad%20room/sse", 400),
        ("/stream/ok/sse?from_offset=1.5", 400),
        ("/stream/ok/sse?nope=1", 400),
    ];
    for (path, want) in cases {
        for upgrade in [false, true] {
            let mut request = reqwest::Client::new().get(format!("{base}{path}"));
            if upgrade {
                request = request
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, want, "{path} (upgrade {upgrade}) answered {status}: {body}");
            assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{path}: message in {body}");
        }
    }
    let past_the_end = reqwest::Client::new()
        .get(format!("{base}/stream/ok/sse"))
        .header("Last-Event-ID", u64::MAX.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(past_the_end.status(), 400, "Last-Event-ID at the largest offset");
    let (first, _) = WsSub::connect(&ws_url(&base, "/stream/ok/ws")).await;
    let (status, body) = raw(Method::GET, &format!("{base}/stream/ok/sse"), None).await;
    assert_eq!(status, 503, "the node's one subscriber slot is taken: {body}");
    assert!(body["error"].as_str().unwrap().contains("limit"));
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_below_retention_start_with_an_explicit_gap() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    let (status, _) = raw(Method::POST, &format!("{url}/stream/trimmed"), Some(r#"{"max_events":5}"#)).await;
    assert_eq!(status, 201);
    publish_batch(&url, "trimmed", 0, 20, |_| "t").await;

    let (sub, _) = WsSub::connect(&ws_url(&url, "/stream/trimmed/ws?from_offset=3")).await;
    sub.wait_events(5, Duration::from_secs(30)).await;
    let frames = sub.frames.lock().unwrap().clone();
    assert_eq!(frames[0]["type"], "error", "the gap comes first: {frames:?}");
    assert_eq!((frames[0]["code"].clone(), frames[0]["earliest_offset"].clone()), (json!("gap"), json!(15)));
    let offsets: Vec<u64> = frames[1..].iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, vec![15, 16, 17, 18, 19]);

    let response = reqwest::get(format!("{url}/stream/trimmed/sse?from_offset=0")).await.unwrap();
    let events = read_sse(response, 6).await;
    assert_eq!(events[0].1, "gap");
    assert_eq!(events[0].2["earliest_offset"], 15);
    assert_eq!(events[1..].iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), vec!["15", "16", "17", "18", "19"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_that_stops_reading_is_disconnected_with_a_reason() {
    let cluster = Cluster::start(1, &["--subscriber-send-timeout-secs", "1"]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    let (mut socket, _) =
        tokio_tungstenite::connect_async(ws_url(&url, "/stream/slow/ws?from_offset=0")).await.unwrap();
    // Enough data to fill both sockets' buffers many times over.
    let pad = "x".repeat(8000);
    for chunk in 0..40 {
        let events: Vec<Value> =
            (0..100).map(|i| json!({ "event": "big", "data": { "i": chunk * 100 + i, "pad": pad } })).collect();
        let (status, _) =
            raw(Method::POST, &format!("{url}/stream/slow/batch"), Some(&json!({ "events": events }).to_string()))
                .await;
        assert_eq!(status, 200);
    }
    let stats = cluster.nodes[0].client();
    wait_for(Duration::from_secs(30), "the stalled subscriber to be dropped", || {
        let c = stats.clone();
        async move { c.stats("slow").await.is_ok_and(|s| s.subscribers == 0) }
    })
    .await;
    // Reading now drains what was in flight, then the reason, then the close.
    let mut last_event = None;
    let mut reason = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        match message {
            Message::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["type"].as_str() {
                    Some("event") => last_event = frame["offset"].as_u64(),
                    Some("error") => reason = Some(frame),
                    _ => {}
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let reason = reason.expect("an error frame before the close");
    assert_eq!(reason["code"], "slow_consumer", "{reason}");
    let resume = reason["next_offset"].as_u64().unwrap();
    assert!(last_event.is_none_or(|last| last < resume), "resume point {resume} after last delivered {last_event:?}");
    assert!(resume < 4000, "it was cut off before the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_sse_subscriber_that_stops_reading_is_let_go_too() {
    let cluster = Cluster::start(1, &["--subscriber-send-timeout-secs", "1"]);
    cluster.wait_ready(READY).await;
    let url = cluster.nodes[0].url.clone();
    let (status, _) = raw(Method::PUT, &format!("{url}/stream/slow"), None).await;
    assert_eq!(status, 201);
    let response = reqwest::get(format!("{url}/stream/slow/sse?from_offset=0")).await.unwrap();
    assert_eq!(response.status(), 200);
    let stats = cluster.nodes[0].client();
    wait_for(Duration::from_secs(10), "the SSE subscriber to be counted", || {
        let c = stats.clone();
        async move { c.stats("slow").await.is_ok_and(|s| s.subscribers == 1) }
    })
    .await;
    // The client reads nothing while more than its buffers hold goes by.
    let pad = "x".repeat(8000);
    for chunk in 0..40 {
        let events: Vec<Value> =
            (0..100).map(|i| json!({ "event": "big", "data": { "i": chunk * 100 + i, "pad": pad } })).collect();
        let (status, _) =
            raw(Method::POST, &format!("{url}/stream/slow/batch"), Some(&json!({ "events": events }).to_string()))
                .await;
        assert_eq!(status, 200);
    }
    wait_for(Duration::from_secs(30), "the stalled SSE subscriber to be dropped", || {
        let c = stats.clone();
        async move { c.stats("slow").await.is_ok_and(|s| s.subscribers == 0) }
    })
    .await;
    // Reading now drains what was in flight, then the reason, then the end.
    let body = tokio::time::timeout(Duration::from_secs(30), response.text()).await.expect("the stream ends").unwrap();
    let reason = body.split("\n\n").find(|frame| frame.contains("event: error")).expect("an error event at the end");
    assert!(reason.contains("slow_consumer"), "{reason}");
    let delivered = body.matches("event: big").count();
    assert!(delivered < 4000, "it was cut off before the end ({delivered} delivered)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synap_tail_follows_a_room_and_survives_its_node_stopping() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let urls = cluster.urls();
    publish_batch(&urls[0], "tailed", 0, 10, |_| "before").await;
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_synap"))
        .args(["tail", "tailed", "--from", "0", "--url", &format!("{},{}", urls[2], urls[0])])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let sink = lines.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(serde_json::from_str(&line).unwrap());
        }
    });
    let seen = lines.clone();
    wait_for(Duration::from_secs(30), "tail to print the first 10 events", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() >= 10 }
    })
    .await;
    // The node tail is connected to stops gracefully; tail moves on.
    cluster.node_mut(3).stop();
    publish_batch(&urls[1], "tailed", 10, 10, |_| "after").await;
    let seen = lines.clone();
    wait_for(Duration::from_secs(30), "tail to print 20 events", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() >= 20 }
    })
    .await;
    let _ = tail.kill();
    let _ = tail.wait();
    reader.join().unwrap();
    let offsets: Vec<u64> = lines.lock().unwrap().iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..20).collect::<Vec<u64>>());
}
