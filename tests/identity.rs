//! A node whose data directory was wiped (or replaced) forgot its log and
//! its vote: it must not take part under its old id. It refuses to start
//! with `--peers` and says how to rejoin; `--join` under the old id removes
//! the old member first and joins anew; peers refuse requests from another
//! cluster or from an incarnation they do not know.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use synap::node::identity::Introduction;

/// What node `url` knows, asked as node `asking`.
async fn introduction(url: &str, asking: u64) -> Option<Introduction> {
    let body = synap::codec::encode(&asking).unwrap();
    let response = reqwest::Client::new().post(format!("{url}/raft/identity")).body(body).send().await.ok()?;
    synap::codec::decode(&response.bytes().await.ok()?).ok()
}

/// Waits until the cluster has named itself and recorded every member's
/// incarnation (the leader does it within a few seconds).
async fn wait_identities_recorded(cluster: &Cluster, ids: &[u64]) {
    let url = cluster.nodes[0].url.clone();
    for id in ids {
        let what = format!("node {id}'s incarnation to be recorded");
        wait_for(Duration::from_secs(30), &what, || {
            let url = url.clone();
            let id = *id;
            async move { introduction(&url, id).await.is_some_and(|i| i.recorded.is_some() && i.cluster.is_some()) }
        })
        .await;
    }
}

fn wipe(dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap();
}

async fn wait_exit(cluster: &mut Cluster, id: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = cluster.node_mut(id).exited() {
            return status;
        }
        assert!(Instant::now() < deadline, "node {id} did not stop within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_wiped_member_with_peers_refuses_to_start(id: u64) {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    wait_identities_recorded(&cluster, &[1, 2, 3]).await;
    cluster.node_mut(id).stop();
    wipe(&cluster.node(id).data_dir.clone());
    cluster.node_mut(id).start();
    let status = wait_exit(&mut cluster, id).await;
    assert!(!status.success());
    let log = cluster.node(id).log_tail(5);
    assert!(log.contains(&format!("synap cluster remove {id}")) && log.contains("--join"), "{log}");
    // The other two are still one cluster, without a second one formed.
    let others: Vec<u64> = (1..=3).filter(|n| *n != id).collect();
    for other in &others {
        let status = cluster.node(*other).client().cluster_status().await.unwrap();
        assert_eq!(status.members.len(), 3, "node {other} still counts three members");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_with_peers_refuses_to_start_and_says_how_to_rejoin() {
    a_wiped_member_with_peers_refuses_to_start(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_lowest_id_does_not_form_a_second_cluster() {
    a_wiped_member_with_peers_refuses_to_start(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_joining_under_its_old_id_replaces_the_old_member() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let client = cluster.nodes[0].client();
    for i in 0..50 {
        client.publish("kept", "e", &json!({ "i": i }), None, None).await.unwrap();
    }
    wait_identities_recorded(&cluster, &[1, 2, 3]).await;
    let old = introduction(&cluster.nodes[0].url, 3).await.unwrap().recorded.unwrap();
    // Node 3 loses its disk and comes back with --join, under the same id.
    cluster.node_mut(3).stop();
    let (data_dir, url) = (cluster.node(3).data_dir.clone(), cluster.node(3).url.clone());
    wipe(&data_dir);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let log = data_dir.with_extension("rejoin.log");
    let via = cluster.nodes[0].url.clone();
    let mut rejoining = NodeProc::new(3, port, data_dir, log, vec!["--join".into(), via]);
    rejoining.start();
    *cluster.node_mut(3) = rejoining;
    wait_voter(&client, 3, Duration::from_secs(60)).await;
    cluster.wait_ready(READY).await;
    let histories = cluster.converged_history("kept", 50, READY).await;
    assert_eq!(histories.len(), 3);
    assert!(histories.values().all(|h| h == &histories[&1]), "node 3 holds the same history again");
    wait_for(Duration::from_secs(30), "node 3's new incarnation to be recorded", || {
        let (url, old) = (cluster.nodes[0].url.clone(), old.clone());
        async move { introduction(&url, 3).await.and_then(|i| i.recorded).is_some_and(|r| r != old) }
    })
    .await;
    let status = client.cluster_status().await.unwrap();
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_refuse_requests_from_another_cluster_or_an_unknown_incarnation() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    wait_identities_recorded(&cluster, &[1, 2, 3]).await;
    let url = format!("{}/raft/read-index", cluster.nodes[0].url);
    let http = reqwest::Client::new();
    let other_cluster = http.post(&url).header("x-synap-cluster", "another").send().await.unwrap();
    assert_eq!(other_cluster.status(), 409);
    let stale =
        http.post(&url).header("x-synap-node", "2").header("x-synap-incarnation", "not-node-2").send().await.unwrap();
    assert_eq!(stale.status(), 409);
    let message: serde_json::Value = stale.json().await.unwrap();
    assert!(message["error"].as_str().unwrap().contains("wiped or replaced"), "{message}");
    let known = introduction(&cluster.nodes[0].url, 2).await.unwrap().recorded.unwrap();
    let fine = http.post(&url).header("x-synap-node", "2").header("x-synap-incarnation", known).send().await.unwrap();
    assert_eq!(fine.status(), 200);
}
