//! Large backlogs: a node that joins a cluster holding many events, and a
//! follower restarted after missing many of them, both catch up, through
//! appends alone (snapshots off) and through a snapshot, and neither says
//! it is ready before it has. The time each took is printed.
//!
//! Ignored by default (it loads a large backlog); CI runs it in release
//! mode with a million events:
//! `SYNAP_CATCH_UP_EVENTS=1000000 cargo test --release --test catch_up -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Events per batch request.
const BATCH: usize = 1000;
/// How long a node may take to catch up before the test fails.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(300);

fn events() -> usize {
    std::env::var("SYNAP_CATCH_UP_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

/// Publishes events `first..first + n` (~256 bytes each) to `room` through
/// `urls`, eight batches at a time; returns how long it took. Every event
/// has an id, so a batch whose outcome was unknown (a 503) is sent again
/// without appending twice.
async fn load(urls: &[String], room: &str, first: usize, n: usize) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let end = first + n;
    let body = |batch: usize| {
        let events: Vec<Value> = (0..BATCH)
            .map(|i| first + batch * BATCH + i)
            .filter(|k| *k < end)
            .map(|k| json!({"event": "bulk", "id": format!("e-{k}"), "data": {"n": k, "pad": "p".repeat(220)}}))
            .collect();
        json!({ "events": events }).to_string()
    };
    let batches = n.div_ceil(BATCH);
    let mut next = 0;
    while next < batches {
        let wave: Vec<_> = (next..batches.min(next + 8))
            .map(|b| {
                let (http, body) = (http.clone(), body(b));
                let url = format!("{}/stream/{room}/batch", urls[b % urls.len()]);
                async move {
                    for _ in 0..20 {
                        let request = http.post(&url).header("content-type", "application/json").body(body.clone());
                        match request.send().await {
                            Ok(response) if response.status() == 200 => return,
                            Ok(response) if response.status() == 503 => {}
                            Ok(response) => {
                                panic!("{}: {}", response.status(), response.text().await.unwrap_or_default())
                            }
                            Err(_) => {}
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    panic!("a batch was refused 20 times");
                }
            })
            .collect();
        futures_util::future::join_all(wave).await;
        next += 8;
    }
    started.elapsed()
}

async fn status(url: &str) -> Option<Value> {
    let response = reqwest::get(format!("{url}/admin/cluster")).await.ok()?;
    response.json().await.ok()
}

/// Polls `node` until it holds `n` events of `room`, failing if it says it
/// is ready while more than the readiness slack behind the leader.
async fn catch_up(node: &str, leader: &str, room: &str, n: usize) -> Duration {
    let started = Instant::now();
    let leader_applied = status(leader).await.and_then(|s| s["last_applied"].as_u64()).expect("leader status");
    let http = reqwest::Client::new();
    loop {
        let ready = http.get(format!("{node}/ready")).send().await.is_ok_and(|r| r.status().is_success());
        let applied = status(node).await.and_then(|s| s["last_applied"].as_u64()).unwrap_or(0);
        if ready {
            assert!(
                applied + synap::node::readiness::SLACK >= leader_applied,
                "{node} said it was ready at log index {applied}, the leader being at {leader_applied}"
            );
        }
        let held = http.get(format!("{node}/stream/{room}/stats")).send().await.ok();
        let held = match held {
            Some(r) if r.status().is_success() => r.json::<Value>().await.ok().and_then(|s| s["next_offset"].as_u64()),
            _ => None,
        };
        if held == Some(n as u64) && ready {
            return started.elapsed();
        }
        assert!(started.elapsed() < CATCH_UP_WITHIN, "{node} holds {held:?} of {n} events after {CATCH_UP_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn snapshots_flag(snapshots: bool) -> Vec<&'static str> {
    if snapshots {
        Vec::new()
    } else {
        vec!["--snapshot-every", "0"]
    }
}

async fn a_joining_node_catches_up(snapshots: bool) {
    let n = events();
    let mut cluster = Cluster::start(3, &snapshots_flag(snapshots));
    cluster.wait_ready(READY).await;
    let loaded = load(&cluster.urls(), "backlog", 0, n).await;
    let leader = cluster.leader(READY).await;
    let leader_url = cluster.node(leader).url.clone();
    let joined = Instant::now();
    let i = cluster.add_joining_node(4, &leader_url);
    let took = catch_up(&cluster.nodes[i].url.clone(), &leader_url, "backlog", n).await;
    eprintln!(
        "catch-up: a node joining {n} events (snapshots {}): loaded in {:.1} s, caught up and ready in {:.1} s ({:.1} s after start)",
        if snapshots { "on" } else { "off" },
        loaded.as_secs_f64(),
        took.as_secs_f64(),
        joined.elapsed().as_secs_f64()
    );
}

async fn a_restarted_follower_catches_up(snapshots: bool) {
    let n = events();
    let mut cluster = Cluster::start(3, &snapshots_flag(snapshots));
    cluster.wait_ready(READY).await;
    load(&cluster.urls(), "backlog", 0, n / 2).await;
    let leader = cluster.leader(READY).await;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    cluster.node_mut(follower).stop();
    let live: Vec<String> = cluster.running().map(|n| n.url.clone()).collect();
    load(&live, "backlog", n / 2, n - n / 2).await;
    let leader_url = cluster.node(leader).url.clone();
    cluster.node_mut(follower).start();
    let took = catch_up(&cluster.node(follower).url.clone(), &leader_url, "backlog", n).await;
    eprintln!(
        "catch-up: a follower restarted after missing {} of {n} events (snapshots {}): caught up and ready in {:.1} s",
        n - n / 2,
        if snapshots { "on" } else { "off" },
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "loads a large backlog; CI runs it in release mode"]
async fn a_node_joining_a_large_backlog_catches_up_through_appends() {
    a_joining_node_catches_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "loads a large backlog; CI runs it in release mode"]
async fn a_node_joining_a_large_backlog_catches_up_through_a_snapshot() {
    a_joining_node_catches_up(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "loads a large backlog; CI runs it in release mode"]
async fn a_follower_missing_half_a_large_backlog_catches_up_through_appends() {
    a_restarted_follower_catches_up(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "loads a large backlog; CI runs it in release mode"]
async fn a_follower_missing_half_a_large_backlog_catches_up_through_a_snapshot() {
    a_restarted_follower_catches_up(true).await;
}
