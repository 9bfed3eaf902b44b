//! `synap bench consume`: durable-consumer throughput. Loads a room, then
//! workers spread over the nodes fetch and ack until every event is done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::percentile;
use crate::base_url::BaseUrl;
use crate::client::ConsumerOptions;

#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Nodes, comma-separated: the load goes through the first, the workers
    /// are spread over all.
    #[arg(long, default_value = "http://127.0.0.1:15500", value_delimiter = ',')]
    urls: Vec<BaseUrl>,
    /// Events loaded into the room before the workers start.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Competing workers of the one consumer.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Messages per fetch.
    #[arg(long, default_value_t = 100)]
    batch: u32,
}

/// What one worker measured: fetch and ack latencies (µs) and messages.
struct WorkerReport {
    fetches: Vec<u64>,
    acks: Vec<u64>,
    messages: u64,
}

pub(super) async fn run(bench: ConsumeBench, access: &super::Access) -> Result<(), String> {
    if bench.urls.is_empty() || bench.workers == 0 || bench.batch == 0 {
        return Err("need at least one url, one worker and a positive batch".into());
    }
    let room = format!("consume-{}", uuid::Uuid::new_v4().simple());
    let loader = access.client(bench.urls[0].as_str())?;
    let consumer = loader.consumer(&room, "bench");
    let options = ConsumerOptions { ack_wait_ms: Some(60_000), max_ack_pending: Some(10_000), ..Default::default() };
    consumer.create(&options).await.map_err(|e| e.to_string())?;
    let http = access.http_client(4)?;
    let event = format!(r#"{{"event":"bench.job","data":{{"pad":"{}"}}}}"#, "x".repeat(bench.size));
    let url = bench.urls[0].join(&format!("/stream/{room}/batch"));
    let mut loaded = 0;
    while loaded < bench.events {
        let n = (bench.events - loaded).min(1000) as usize;
        let body = format!(r#"{{"events":[{}]}}"#, vec![event.as_str(); n].join(","));
        let response = http.post(&url).header("content-type", "application/json").body(body).send().await;
        if !response.as_ref().is_ok_and(|r| r.status().is_success()) {
            return Err(format!("loading the room failed: {response:?}"));
        }
        loaded += n as u64;
    }

    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..bench.workers {
        let client = access.client(bench.urls[w % bench.urls.len()].as_str())?;
        let (room, done, total, batch) = (room.clone(), done.clone(), bench.events, bench.batch);
        tasks.push(tokio::spawn(async move {
            let consumer = client.consumer(&room, "bench");
            let mut report = WorkerReport { fetches: Vec::new(), acks: Vec::new(), messages: 0 };
            while done.load(std::sync::atomic::Ordering::Relaxed) < total {
                let t = Instant::now();
                let Ok(fetch) = consumer.fetch(batch, Duration::from_millis(200)).await else { continue };
                // The last fetches find nothing and wait: not counted.
                if fetch.messages.is_empty() {
                    continue;
                }
                report.fetches.push(t.elapsed().as_micros() as u64);
                let offsets: Vec<u64> = fetch.messages.iter().map(|m| m.event.offset).collect();
                let t = Instant::now();
                if let Ok(acked) = consumer.ack(&offsets).await {
                    report.acks.push(t.elapsed().as_micros() as u64);
                    report.messages += acked;
                    done.fetch_add(acked, std::sync::atomic::Ordering::Relaxed);
                }
            }
            report
        }));
    }
    let (mut fetches, mut acks, mut messages) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        let report = task.await.map_err(|e| e.to_string())?;
        fetches.extend(report.fetches);
        acks.extend(report.acks);
        messages += report.messages;
    }
    let elapsed = started.elapsed().as_secs_f64();
    fetches.sort_unstable();
    acks.sort_unstable();
    println!(
        "consume: {} workers over {} nodes, {} per fetch, {} B payload: {} messages fetched and acked in {:.1} s ({:.0}/s), fetch p50 {:.2} ms p99 {:.2} ms, ack p50 {:.2} ms p99 {:.2} ms",
        bench.workers,
        bench.urls.len(),
        bench.batch,
        bench.size,
        messages,
        elapsed,
        messages as f64 / elapsed,
        percentile(&fetches, 0.50),
        percentile(&fetches, 0.99),
        percentile(&acks, 0.50),
        percentile(&acks, 0.99),
    );
    Ok(())
}
