//! `synap bench`: a load generator that prints a report. Numbers from it go
//! into `docs/performance.md`, never into tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Concurrent publishers, each waiting for its acknowledgement.
    Publish(PublishBench),
}

#[derive(Debug, Args)]
struct PublishBench {
    /// Nodes to publish through, comma-separated (round-robin per publisher).
    #[arg(long, default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    urls: Vec<String>,
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
}

pub async fn run(args: BenchArgs) -> Result<(), String> {
    match args.scenario {
        Scenario::Publish(bench) => publish(bench).await,
    }
}

async fn publish(bench: PublishBench) -> Result<(), String> {
    if bench.urls.is_empty() || bench.publishers == 0 || bench.rooms == 0 {
        return Err("need at least one url, one publisher and one room".into());
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(bench.publishers)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let payload = format!(r#"{{"event":"bench.tick","data":{{"pad":"{}"}}}}"#, "x".repeat(bench.size));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..bench.publishers {
        let url = format!(
            "{}/stream/bench-{}/publish",
            bench.urls[p % bench.urls.len()].trim_end_matches('/'),
            p % bench.rooms
        );
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
    tokio::time::sleep(Duration::from_secs(bench.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "publish: {} publishers, {} B payload, {:.1} s: {} acknowledged ({:.0}/s), {} errors, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        bench.publishers,
        bench.size,
        elapsed,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        errors,
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}
