//! Backup and restore: `synap backup` saves a consistent copy of a node's
//! state, `synap restore` turns it into a data directory that starts as a
//! one-node cluster holding rooms, offsets, events, KV keys with their TTLs,
//! dedup ids and consumers, and that cluster grows with `--join`.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use synap::client::{Client, ConsumerOptions};

fn synap(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_synap")).args(args).output().expect("run synap")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    })
}

/// Everything a user would compare: every room's stats and events, a KV
/// key, and the consumer.
async fn state_of(client: &Client, rooms: &[&str]) -> Value {
    let mut state = serde_json::Map::new();
    for room in rooms {
        let stats = client.stats(room).await.expect("stats");
        let events = client.history_all(room).await.expect("history");
        state.insert(room.to_string(), json!({ "stats": stats, "events": events }));
    }
    state.insert("kv".into(), json!(client.kv_get("k-plain").await.expect("kv get")));
    state.insert("consumer".into(), json!(client.consumer("orders", "workers").info().await.expect("consumer")));
    Value::Object(state)
}

fn start_node(id: u64, data_dir: &Path, args: &[&str]) -> NodeProc {
    let log = data_dir.with_extension("log");
    let mut node =
        NodeProc::new(id, free_port(), data_dir.to_owned(), log, args.iter().map(|a| a.to_string()).collect());
    node.start();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_restores_into_a_new_cluster_that_grows() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let client = cluster.nodes[0].client();
    for i in 0..40 {
        client.publish("orders", "order.created", &json!({ "n": i }), None, Some(&format!("o-{i}"))).await.unwrap();
    }
    let (status, _) =
        raw(Method::POST, &format!("{}/stream/trimmed", cluster.nodes[0].url), Some(r#"{"max_events":5}"#)).await;
    assert_eq!(status, 201);
    for i in 0..20 {
        client.publish("trimmed", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    assert!(client.kv_set("k-plain", "kept", None, false).await.unwrap());
    assert!(client.kv_set("k-long", "kept for an hour", Some(3600), false).await.unwrap());
    assert!(client.kv_set("k-short", "gone soon", Some(3), false).await.unwrap());
    let workers = client.consumer("orders", "workers");
    workers.create(&ConsumerOptions { ack_wait_ms: Some(600_000), ..Default::default() }).await.unwrap();
    let fetched = workers.fetch(10, Duration::ZERO).await.unwrap();
    assert_eq!(fetched.messages.len(), 10);
    let first_five: Vec<u64> = fetched.messages.iter().take(5).map(|m| m.event.offset).collect();
    assert_eq!(workers.ack(&first_five).await.unwrap(), 5);

    // Backed up through a follower-or-leader alike: any node serves it.
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("state.backup");
    let source = cluster.nodes[1].client();
    source.ready().await.expect("node 2 ready");
    let wait_same = state_of(&client, &["orders", "trimmed"]).await;
    wait_for(Duration::from_secs(10), "node 2 to have applied everything", || {
        let (source, expected) = (source.clone(), wait_same.clone());
        async move { state_of(&source, &["orders", "trimmed"]).await == expected }
    })
    .await;
    let before = state_of(&source, &["orders", "trimmed"]).await;
    let out = synap(&["backup", "--out", file.to_str().unwrap(), "--url", &cluster.nodes[1].url]);
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let saved = stdout_json(&out);
    assert_eq!(saved["bytes"], std::fs::metadata(&file).unwrap().len());

    // A damaged copy is refused and leaves nothing behind.
    let damaged = dir.path().join("damaged.backup");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let nowhere = dir.path().join("nowhere");
    let out = synap(&["restore", "--from", damaged.to_str().unwrap(), "--data-dir", nowhere.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an intact backup"), "{out:?}");
    assert!(!nowhere.exists(), "a refused restore created {}", nowhere.display());

    let restored_dir = dir.path().join("restored");
    let out = synap(&["restore", "--from", file.to_str().unwrap(), "--data-dir", restored_dir.to_str().unwrap()]);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout_json(&out)["crc32"], saved["crc32"]);
    let out = synap(&["restore", "--from", file.to_str().unwrap(), "--data-dir", restored_dir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not empty"), "{out:?}");
    drop(cluster);

    // The restored directory starts alone, as a new cluster with the state.
    let restored = start_node(1, &restored_dir, &[]);
    let node = restored.client();
    wait_for(Duration::from_secs(30), "the restored node to be ready", || {
        let node = node.clone();
        async move { node.ready().await.is_ok() }
    })
    .await;
    let status = node.cluster_status().await.unwrap();
    assert_eq!(status.members.len(), 1, "{status:?}");
    assert_eq!(state_of(&node, &["orders", "trimmed"]).await, before);
    assert_eq!(node.stats("trimmed").await.unwrap().min_offset, 15);
    assert_eq!(node.kv_get("k-long").await.unwrap().as_deref(), Some("kept for an hour"));
    wait_for(Duration::from_secs(15), "k-short to expire: its TTL came along", || {
        let node = node.clone();
        async move { node.kv_get("k-short").await.is_ok_and(|v| v.is_none()) }
    })
    .await;
    let again = node.publish("orders", "order.created", &json!({ "n": 3 }), None, Some("o-3")).await.unwrap();
    assert!(again.duplicate && again.offset == 3, "the dedup id was forgotten: {again:?}");
    let next = node.consumer("orders", "workers").fetch(100, Duration::ZERO).await.unwrap();
    let offsets: Vec<u64> = next.messages.iter().map(|m| m.event.offset).collect();
    assert_eq!(offsets, (10..40).collect::<Vec<_>>(), "the consumer's position and leases came along");

    // It grows: a node joining gets the state as a snapshot.
    let joiner_dir = dir.path().join("joiner");
    let joiner = start_node(2, &joiner_dir, &["--join", &restored.url]);
    wait_voter(&node, 2, Duration::from_secs(60)).await;
    let published = node.publish("orders", "order.created", &json!({ "n": 40 }), None, None).await.unwrap();
    assert_eq!(published.offset, 40);
    let expected = node.history_all("orders").await.unwrap();
    let joined = joiner.client();
    wait_for(Duration::from_secs(30), "the joiner to hold the restored history and the new event", || {
        let (joined, expected) = (joined.clone(), expected.clone());
        async move { joined.history_all("orders").await.is_ok_and(|h| h == expected) }
    })
    .await;
    assert!(joined.cluster_status().await.unwrap().snapshot_index.is_some(), "the joiner caught up without a snapshot");
}
