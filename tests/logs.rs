//! Logs: `--log-format json` writes one JSON object per line, and nodes log
//! the leadership and membership changes an operator follows a cluster by.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// Every line `node` logged, each of which must be a JSON object.
fn json_lines(node: &NodeProc) -> Vec<Value> {
    node.log_tail(usize::MAX)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("node {}: not a JSON line ({e}): {line}", node.id))
        })
        .collect()
}

/// Whether `node` logged `message` with `field` = `value`.
fn logged(node: &NodeProc, message: &str, field: &str, value: u64) -> bool {
    json_lines(node).iter().any(|line| line["fields"]["message"] == message && line["fields"][field] == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_show_leadership_and_membership_changes() {
    let cluster = Cluster::start(3, &["--log-format", "json"]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(10), &format!("node {} to log leader {leader}", node.id), || {
            let seen = logged(node, "leader changed", "leader", leader);
            async move { seen }
        })
        .await;
        let first = &json_lines(node)[0];
        assert!(first["level"].is_string() && first["timestamp"].is_string(), "node {}: {first}", node.id);
    }

    let gone = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).expect("a follower");
    cluster.node(leader).client().remove(gone).await.expect("remove a follower");
    let leader_node = cluster.node(leader);
    wait_for(Duration::from_secs(10), &format!("the leader to log that node {gone} left"), || {
        let seen = logged(leader_node, "node left", "node", gone);
        async move { seen }
    })
    .await;
}
