//! Events stored in chunks (protocol 4): a cluster whose members all speak
//! it switches by itself; many clients publishing one event each to a room
//! are merged into one request and each still gets the offset of its own
//! event; batches of large events span several chunks; every node, also
//! one restarted, serves the same history.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merged_publishes_and_chunked_batches_read_back_alike_on_every_node() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    for node in &cluster.nodes {
        let client = node.client();
        wait_for(WAIT, &format!("node {} to store events in chunks", node.id), || {
            let client = client.clone();
            async move { client.cluster_status().await.is_ok_and(|s| s.packed) }
        })
        .await;
    }

    // 48 clients at once, one event per request, through every node: the
    // proposer merges what queues up for one room.
    let mut tasks = Vec::new();
    for c in 0..48usize {
        let client = cluster.nodes[c % 3].client();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..10usize {
                let room = format!("merged-{}", (c + i) % 2);
                let id = format!("c{c}-{i}");
                let data = json!({ "client": c, "i": i });
                let landed = client.publish(&room, "one", &data, None, Some(&id)).await.expect("publish");
                acks.push(Ack { room, offset: landed.offset, id, data });
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.expect("publisher"));
    }
    // Batches of ~2 KiB events: several chunks per request.
    let follower = cluster.nodes[1].url.clone();
    for b in 0..4usize {
        let events: Vec<Value> = (0..50usize)
            .map(|i| json!({"event": "big", "id": format!("b{b}-{i}"), "data": {"b": b, "i": i, "pad": "p".repeat(2000)}}))
            .collect();
        let (status, answer) = raw(
            reqwest::Method::POST,
            &format!("{follower}/stream/chunked/batch"),
            Some(&json!({"events": events}).to_string()),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        for (i, offset) in answer["offsets"].as_array().expect("offsets").iter().enumerate() {
            let data = events[i]["data"].clone();
            let id = format!("b{b}-{i}");
            acks.push(Ack { room: "chunked".into(), offset: offset.as_u64().expect("offset"), id, data });
        }
    }

    let rooms = [("merged-0", 240u64), ("merged-1", 240), ("chunked", 200)];
    check(&cluster, &acks, &rooms).await;

    // A restarted node reads the chunks back from its own disk.
    cluster.node_mut(3).stop();
    cluster.node_mut(3).start();
    cluster.wait_ready(WAIT).await;
    check(&cluster, &acks, &rooms).await;
}

/// Every node holds exactly `rooms` (name, event count), identically, and
/// each acknowledged offset holds its event.
async fn check(cluster: &Cluster, acks: &[Ack], rooms: &[(&str, u64)]) {
    let mut histories = BTreeMap::new();
    for (room, count) in rooms {
        let per_node = cluster.converged_history(room, *count, WAIT).await;
        assert!(per_node.values().all(|events| events.len() as u64 == *count), "{room}: {count} events");
        histories.insert((*room).to_owned(), per_node);
    }
    check_acks(acks, &histories);
}
