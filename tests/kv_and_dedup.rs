//! Replicated KV (TTL, nx) and idempotent publishing against three nodes.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Runs one command through `/api/v1/command` on `base`; returns the payload
/// of a successful answer, panics with the error otherwise.
async fn command(base: &str, name: &str, payload: Value) -> Value {
    let body = json!({ "command": name, "request_id": "t", "payload": payload }).to_string();
    let (status, answer) = raw(Method::POST, &format!("{base}/api/v1/command"), Some(&body)).await;
    assert_eq!((status, answer["success"].clone()), (200, json!(true)), "{name}: {answer}");
    answer["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_with_a_ttl_disappears_from_every_node() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let urls = cluster.urls();
    command(&urls[1], "kv.set", json!({ "key": "session:1", "value": "alive", "ttl": 1 })).await;
    command(&urls[1], "kv.set", json!({ "key": "forever", "value": { "n": 1 } })).await;
    // Written through node 2 and read back there at once (read-your-writes).
    assert_eq!(command(&urls[1], "kv.get", json!({ "key": "forever" })).await, json!("{\"n\":1}"));
    // A strong read on another node sees it at once too (read index).
    let strong = command(&urls[2], "kv.get", json!({ "key": "forever", "consistency": "strong" })).await;
    assert_eq!(strong, json!("{\"n\":1}"));
    for url in &urls {
        let gone = || async {
            let value = command(url, "kv.get", json!({ "key": "session:1" })).await;
            let exists = command(url, "kv.exists", json!({ "key": "session:1" })).await;
            value.is_null() && exists == json!({ "exists": false })
        };
        wait_for(Duration::from_secs(10), &format!("session:1 to expire on {url}"), gone).await;
        assert_eq!(command(url, "kv.get", json!({ "key": "forever" })).await, json!("{\"n\":1}"), "{url}");
    }
    // An expired key can be set again with nx.
    let again = command(&urls[2], "kv.set", json!({ "key": "session:1", "value": "again", "nx": true })).await;
    assert_eq!(again["written"], true);
    let deleted = command(&urls[0], "kv.del", json!({ "key": "session:1" })).await;
    assert_eq!(deleted["deleted"], true);
    let deleted = command(&urls[0], "kv.delete", json!({ "key": "session:1" })).await;
    assert_eq!(deleted["deleted"], false, "a second delete finds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nx_lets_exactly_one_of_sixteen_concurrent_writers_win() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let urls = cluster.urls();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let base = urls[w % urls.len()].clone();
            tokio::spawn(async move {
                let payload = json!({ "key": "lock:job-42", "value": format!("writer-{w}"), "ttl": 60, "nx": true });
                let answer = command(&base, "kv.set", payload).await;
                (w, answer["written"].as_bool().expect("written is a bool"))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        let (w, written) = writer.await.unwrap();
        if written {
            winners.push(w);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let expected = json!(format!("writer-{}", winners[0]));
    for url in &urls {
        let check = || async { command(url, "kv.get", json!({ "key": "lock:job-42" })).await == expected };
        wait_for(Duration::from_secs(10), &format!("{url} to hold the winner's value"), check).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_every_event_twice_with_an_id_appends_each_once() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let urls = cluster.urls();
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let urls = urls.clone();
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..100 {
                    let id = format!("order-{t}-{i}");
                    let data = json!({ "t": t, "i": i });
                    let first_node = synap::client::Client::new(&urls[(t + i) % 3]);
                    let first = first_node.publish("orders", "order.created", &data, None, Some(&id)).await.unwrap();
                    // The retry goes through another node every other time.
                    let retry_node = synap::client::Client::new(&urls[(t + i + i % 2) % 3]);
                    let second = retry_node.publish("orders", "order.created", &data, None, Some(&id)).await.unwrap();
                    assert!(!first.duplicate, "{id}: first publish marked duplicate");
                    assert!(second.duplicate, "{id}: retry not recognised as duplicate");
                    assert_eq!((second.offset, second.timestamp), (first.offset, first.timestamp), "{id}");
                    acks.push(Ack { room: "orders".into(), offset: first.offset, id, data });
                }
                acks
            })
        })
        .collect();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.unwrap());
    }
    let histories = histories(&cluster, &["orders".to_owned()], &acks, Duration::from_secs(30)).await;
    for events in histories["orders"].values() {
        assert_eq!(events.len(), 1000, "exactly one event per id");
    }
    check_acks(&acks, &histories);

    // A batch that repeats an id inside itself appends it once too.
    let batch = json!({ "events": [
        { "event": "e", "data": 1, "id": "batch-dup" },
        { "event": "e", "data": 2, "id": "batch-dup" },
    ]});
    let (status, body) = raw(Method::POST, &format!("{}/stream/orders/batch", urls[0]), Some(&batch.to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offsets"], json!([1000, 1000]));
    assert_eq!(body["duplicates"], json!([false, true]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_id_is_forgotten_after_the_dedup_window() {
    let cluster = Cluster::start(1, &["--dedup-window-secs", "1"]);
    cluster.wait_ready(READY).await;
    let client = cluster.nodes[0].client();
    let first = client.publish("short", "e", &json!(1), None, Some("same")).await.unwrap();
    let within = client.publish("short", "e", &json!(1), None, Some("same")).await.unwrap();
    assert!(within.duplicate);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = client.publish("short", "e", &json!(1), None, Some("same")).await.unwrap();
    assert!(!after.duplicate, "the window has passed, so this is a new event");
    assert_eq!((first.offset, after.offset), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_judges_a_ttl_by_cluster_time_not_by_its_own_clock() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let leader = cluster.leader(READY).await;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    // The follower's clock runs two minutes ahead of the others.
    cluster.node_mut(follower).stop();
    cluster.node_mut(follower).add_args(&["--unsafe-clock-offset-ms", "120000"]);
    cluster.node_mut(follower).start();
    cluster.wait_ready(READY).await;
    let set = json!({"key": "session", "value": "v", "ttl": 30});
    let (status, _) = raw(Method::POST, &format!("{}/kv/set", cluster.node(leader).url), Some(&set.to_string())).await;
    assert_eq!(status, 200);
    for node in &cluster.nodes {
        let url = format!("{}/kv/exists/session?consistency=strong", node.url);
        let (status, body) = raw(Method::GET, &url, None).await;
        assert_eq!((status, body["exists"].clone()), (200, json!(true)), "node {} sees the 30 s key", node.id);
    }
    // And the state machine agrees: an nx write through the skewed node
    // finds the key live.
    let nx = json!({"key": "session", "value": "w", "ttl": 30, "nx": true});
    let (status, body) =
        raw(Method::POST, &format!("{}/kv/set", cluster.node(follower).url), Some(&nx.to_string())).await;
    assert_eq!((status, body["written"].clone()), (200, json!(false)));
}
