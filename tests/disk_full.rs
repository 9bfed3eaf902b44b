//! A full disk ends the node, with a clear message and a non-zero exit,
//! instead of leaving a process that answers 503 and believes it leads.
//! The other two carry on without losing an acknowledged write, and the
//! node catches up once it has space again and is restarted. For the
//! leader and for a follower.
//!
//! Puts one node's data directory on a small tmpfs: needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, megabytes: u32) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let size = format!("size={megabytes}m");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(path).status().unwrap();
        assert!(status.success(), "mounting a tmpfs at {} (needs root)", path.display());
        Self(path.to_owned())
    }

    fn resize(&self, megabytes: u32) {
        let options = format!("remount,size={megabytes}m");
        let status = Command::new("mount").args(["-o", &options]).arg(&self.0).status().unwrap();
        assert!(status.success(), "resizing the tmpfs at {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Publishes 1 MiB batches (16 events of 64 KiB) through `url` until
/// `done` says stop; returns what was acknowledged.
async fn fill(cluster: &mut Cluster, victim: u64, via: &str) -> (Vec<Ack>, std::process::ExitStatus) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let pad = "d".repeat(64 * 1024);
    let mut acks = Vec::new();
    let started = Instant::now();
    for batch in 0.. {
        if let Some(status) = cluster.node_mut(victim).exited() {
            return (acks, status);
        }
        assert!(started.elapsed() < Duration::from_secs(120), "node {victim} did not stop on a full disk");
        let events: Vec<Value> = (0..16)
            .map(
                |i| json!({"event": "fill", "id": format!("f-{batch}-{i}"), "data": {"n": batch * 16 + i, "pad": pad}}),
            )
            .collect();
        let response = http.post(format!("{via}/stream/fill/batch")).json(&json!({ "events": events })).send().await;
        let Ok(response) = response else { continue };
        if response.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let body: Value = response.json().await.unwrap();
        for (i, offset) in body["offsets"].as_array().unwrap().iter().enumerate() {
            let data = events[i]["data"].clone();
            acks.push(Ack {
                room: "fill".into(),
                offset: offset.as_u64().unwrap(),
                id: format!("f-{batch}-{i}"),
                data,
            });
        }
    }
    unreachable!("the loop only ends by returning")
}

/// Stops and restarts other nodes until node `want` leads (or, with
/// `want_not`, until it does not).
async fn arrange_leadership(cluster: &mut Cluster, victim: u64, victim_leads: bool) {
    for _ in 0..20 {
        let leader = cluster.leader(READY).await;
        if (leader == victim) == victim_leads {
            return;
        }
        let bump = if victim_leads { leader } else { victim };
        cluster.node_mut(bump).stop();
        wait_for(READY, "a new leader", || {
            let clients: Vec<_> = cluster.running().map(|n| n.client()).collect();
            async move {
                for c in clients {
                    if c.cluster_status().await.is_ok_and(|s| s.leader.is_some_and(|l| l != bump)) {
                        return true;
                    }
                }
                false
            }
        })
        .await;
        cluster.node_mut(bump).start();
        cluster.wait_ready(READY).await;
    }
    panic!("could not make node {victim} {}", if victim_leads { "lead" } else { "follow" });
}

async fn a_full_disk_stops_the_node_and_loses_nothing(victim_leads: bool) {
    let victim = 1;
    let mut cluster = Cluster::configure(3, &[]);
    let tmpfs = Tmpfs::mount(&cluster.node(victim).data_dir, 24);
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.wait_ready(READY).await;
    arrange_leadership(&mut cluster, victim, victim_leads).await;
    let via = cluster.nodes.iter().find(|n| n.id != victim).unwrap().url.clone();
    let (mut acks, status) = fill(&mut cluster, victim, &via).await;
    assert!(!status.success(), "node {victim} exits with an error, not {status}");
    let log = cluster.node(victim).log_tail(20);
    assert!(log.contains("exiting"), "the log says why:\n{log}");
    assert!(!acks.is_empty(), "some publishes were acknowledged before the disk filled");

    // The other two carry on.
    let survivor = cluster.nodes.iter().find(|n| n.id != victim).unwrap().client();
    let after = survivor.publish("fill", "after", &json!({"n": "after"}), None, Some("after")).await;
    let after = after.expect("the other two still accept writes");
    acks.push(Ack { room: "fill".into(), offset: after.offset, id: "after".into(), data: json!({"n": "after"}) });

    // Space comes back; the node restarts and catches up.
    tmpfs.resize(512);
    cluster.node_mut(victim).start();
    cluster.wait_ready(READY).await;
    let histories = histories(&cluster, &["fill".to_owned()], &acks, READY).await;
    check_acks(&acks, &histories);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_disk_fills_exits_and_nothing_acknowledged_is_lost() {
    a_full_disk_stops_the_node_and_loses_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_whose_disk_fills_exits_and_nothing_acknowledged_is_lost() {
    a_full_disk_stops_the_node_and_loses_nothing(false).await;
}
