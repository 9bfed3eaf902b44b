//! `synap bench`: a load generator that prints a report. Numbers from it go
//! into `docs/performance.md`, never into tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::base_url::BaseUrl;
use clap::{Args, Subcommand};

mod consume;
mod nats;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    /// API key, sent as a bearer token (WebSocket: `?api_key=`).
    #[arg(long, global = true, env = "SYNAP_API_KEY")]
    api_key: Option<String>,
    /// CA certificate (PEM) that https:// nodes are checked against
    /// (default: the system's roots).
    #[arg(long, global = true, env = "SYNAP_CA")]
    ca: Option<PathBuf>,
}

/// Who the load is sent as, and how `https://` nodes are checked.
struct Access {
    key: Option<String>,
    ca: Option<PathBuf>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Access {
    fn new(key: Option<String>, ca: Option<PathBuf>) -> Result<Self, String> {
        let tls = match &ca {
            Some(ca) => Some(Arc::new(crate::tls::client_config(Some(ca), None).map_err(|e| format!("--ca: {e}"))?)),
            None => None,
        };
        Ok(Self { key, ca, tls })
    }

    /// An HTTP client for the load, with a pool of `pool` connections per
    /// node.
    fn http_client(&self, pool: usize) -> Result<reqwest::Client, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &self.key {
            let value = format!("Bearer {key}").parse().map_err(|_| "the API key is not a valid header value")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        crate::tls::http_client(self.tls.as_deref(), |builder| {
            builder.default_headers(headers).pool_max_idle_per_host(pool).tcp_nodelay(true)
        })
        .map_err(|e| e.to_string())
    }

    /// A Synap client of the node at `url`.
    fn client(&self, url: &str) -> Result<crate::client::Client, String> {
        let client = crate::client::Client::new(url).with_api_key(self.key.clone());
        match &self.ca {
            Some(ca) => client.with_ca(ca).map_err(|e| format!("--ca: {e}")),
            None => Ok(client),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Concurrent publishers, each waiting for its acknowledgement.
    Publish(PublishBench),
    /// One publisher at a fixed rate, many WebSocket subscribers spread over
    /// the nodes; measures publish-to-delivery latency, and the publishes'
    /// own acknowledgement latency beside it.
    Fanout(FanoutBench),
    /// The shapes of `publish` against a NATS JetStream stream, to compare
    /// both systems with one load generator.
    Nats(nats::NatsBench),
    /// Competing workers of one durable consumer fetch and ack a loaded
    /// room until every event is done.
    Consume(consume::ConsumeBench),
}

#[derive(Debug, Args)]
struct FanoutBench {
    /// Nodes; subscribers are spread over all, the publisher uses the first.
    #[arg(long, default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    urls: Vec<BaseUrl>,
    /// Subscribers.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Debug, Args)]
struct PublishBench {
    /// Nodes to publish through, comma-separated (round-robin per publisher).
    #[arg(long, default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    urls: Vec<BaseUrl>,
    /// Concurrent publishers.
    #[arg(long, default_value_t = 64)]
    publishers: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Rooms to spread the events over.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Events per request: above 1, publishers use the batch endpoint.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// `http`: a request per publish (or batch); `ws`: each publisher keeps
    /// `--inflight` publishes in flight on one WebSocket (`/publish/ws`).
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    transport: Transport,
    /// Publishes in flight per WebSocket publisher.
    #[arg(long, default_value_t = 256)]
    inflight: usize,
}

/// How `bench publish` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Http,
    Ws,
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    let access = Access::new(args.api_key, args.ca)?;
    match args.scenario {
        Scenario::Publish(bench) => publish(bench, &access).await,
        Scenario::Fanout(bench) => fanout(bench, &access).await,
        Scenario::Nats(bench) => nats::run(bench).await,
        Scenario::Consume(bench) => consume::run(bench, &access).await,
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The `sent_us` field of an event frame, found without parsing the whole
/// frame (a hundred subscribers parse a lot of JSON on two cores).
fn sent_micros(frame: &str) -> Option<u64> {
    let at = frame.find("\"sent_us\":")? + "\"sent_us\":".len();
    let digits: String = frame[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Lets the publisher `tasks` run for `seconds`, stops them, and gathers
/// what they report: every acknowledgement's latency (µs, sorted) and the
/// number of errors; with the seconds that took.
async fn run_for(
    seconds: u64,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>,
) -> Result<(Vec<u64>, u64, f64), String> {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    Ok((latencies, errors, started.elapsed().as_secs_f64()))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

async fn fanout(bench: FanoutBench, access: &Access) -> Result<(), String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    if bench.urls.is_empty() || bench.rate == 0 {
        return Err("need at least one url and a positive rate".into());
    }
    let room = format!("fanout-{}", uuid::Uuid::new_v4().simple());
    let expected = bench.rate * bench.seconds;
    let mut subscribers = Vec::new();
    for s in 0..bench.subscribers {
        let path = match &access.key {
            Some(key) => format!("/stream/{room}/ws?api_key={key}"),
            None => format!("/stream/{room}/ws"),
        };
        let url = bench.urls[s % bench.urls.len()].websocket(&path);
        let connector = access.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let (mut socket, _) = tokio_tungstenite::connect_async_tls_with_config(
            &url,
            Some(crate::client::websocket_config()),
            false,
            connector,
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
        subscribers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected as usize);
            let idle = Duration::from_secs(5);
            while let Ok(Some(Ok(message))) = tokio::time::timeout(idle, socket.next()).await {
                if let Message::Text(text) = message {
                    if let Some(sent) = sent_micros(&text) {
                        latencies.push(now_micros().saturating_sub(sent));
                        if latencies.len() as u64 >= expected {
                            break;
                        }
                    }
                }
            }
            latencies
        }));
    }
    let http = access.http_client(64)?;
    let publish_url = bench.urls[0].join(&format!("/stream/{room}/publish"));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / bench.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut publishes = Vec::with_capacity(expected as usize);
    for _ in 0..expected {
        tick.tick().await;
        let (http, url) = (http.clone(), publish_url.clone());
        publishes.push(tokio::spawn(async move {
            let sent = now_micros();
            let body = format!(r#"{{"event":"bench.fanout","data":{{"sent_us":{sent}}}}}"#);
            let ok = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ok.then(|| now_micros().saturating_sub(sent))
        }));
    }
    let mut failed = 0;
    let mut acks = Vec::with_capacity(expected as usize);
    for p in publishes {
        match p.await.ok().flatten() {
            Some(latency) => acks.push(latency),
            None => failed += 1,
        }
    }
    acks.sort_unstable();
    let publish_secs = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    let mut short = 0;
    for s in subscribers {
        let l = s.await.map_err(|e| e.to_string())?;
        if (l.len() as u64) < expected - failed {
            short += 1;
        }
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "fanout: {} subscribers over {} nodes, {} events at {}/s ({} failed, published in {:.1} s): {} deliveries ({:.0}/s), {} subscribers short, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; publish acknowledged p50 {:.2} ms, p99 {:.2} ms",
        bench.subscribers,
        bench.urls.len(),
        expected,
        bench.rate,
        failed,
        publish_secs,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        short,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        percentile(&acks, 0.50),
        percentile(&acks, 0.99),
    );
    Ok(())
}

async fn publish(bench: PublishBench, access: &Access) -> Result<(), String> {
    if bench.urls.is_empty() || bench.publishers == 0 || bench.rooms == 0 {
        return Err("need at least one url, one publisher and one room".into());
    }
    if bench.transport == Transport::Ws {
        return publish_ws(bench, access).await;
    }
    let http = access.http_client(bench.publishers)?;
    let event = format!(r#"{{"event":"bench.tick","data":{{"pad":"{}"}}}}"#, "x".repeat(bench.size));
    let batch = bench.batch.max(1);
    let (endpoint, payload) = if batch == 1 {
        ("publish", event)
    } else {
        ("batch", format!(r#"{{"events":[{}]}}"#, vec![event; batch].join(",")))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..bench.publishers {
        let url = bench.urls[p % bench.urls.len()].join(&format!("/stream/bench-{}/{endpoint}", p % bench.rooms));
        let (http, payload, stop) = (http.clone(), payload.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(payload.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let (latencies, errors, elapsed) = run_for(bench.seconds, &stop, tasks).await?;
    println!(
        "publish: {} publishers, {} B payload, {} per request, {:.1} s: {} events acknowledged ({:.0}/s), {} errors, request latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        bench.publishers,
        bench.size,
        batch,
        elapsed,
        latencies.len() * batch,
        (latencies.len() * batch) as f64 / elapsed,
        errors,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}

/// Publishers that each keep `--inflight` publishes in flight on one
/// WebSocket; latency is from send to acknowledgement.
async fn publish_ws(bench: PublishBench, access: &Access) -> Result<(), String> {
    let inflight = bench.inflight.clamp(1, crate::client::MAX_IN_FLIGHT);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..bench.publishers {
        let client = access.client(bench.urls[p % bench.urls.len()].as_str())?;
        let mut stream = client.publish_stream().await.map_err(|e| e.to_string())?;
        let room = format!("bench-{}", p % bench.rooms);
        let pad = "x".repeat(bench.size);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut sent_at = std::collections::VecDeque::new();
            let mut seq = 0u64;
            loop {
                while !stop.load(Ordering::Relaxed) && sent_at.len() < inflight {
                    let frame =
                        format!(r#"{{"seq":{seq},"room":"{room}","event":"bench.tick","data":{{"pad":"{pad}"}}}}"#);
                    if stream.send_raw(frame).await.is_err() {
                        return (latencies, errors + sent_at.len() as u64);
                    }
                    sent_at.push_back((seq, Instant::now()));
                    seq += 1;
                }
                if sent_at.is_empty() {
                    break;
                }
                match stream.recv().await {
                    Some(Ok(ack)) => {
                        // Acknowledgements of one room come in seq order.
                        let position = sent_at.iter().position(|(s, _)| *s == ack.seq);
                        let Some((_, at)) = position.and_then(|i| sent_at.remove(i)) else { continue };
                        match ack.outcome {
                            Ok(_) => latencies.push(at.elapsed().as_micros() as u64),
                            Err(_) => errors += 1,
                        }
                    }
                    _ => return (latencies, errors + sent_at.len() as u64),
                }
            }
            let _ = stream.close().await;
            (latencies, errors)
        }));
    }
    let (latencies, errors, elapsed) = run_for(bench.seconds, &stop, tasks).await?;
    println!(
        "publish (ws): {} publishers x {} in flight, {} B payload, {:.1} s: {} events acknowledged ({:.0}/s), {} errors, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        bench.publishers,
        inflight,
        bench.size,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        errors,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}
