//! The published Synap SDKs, unchanged, against a three-node cluster through
//! a follower: what they report must match the cluster's own history.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const READY: Duration = Duration::from_secs(30);
const PYTHON_SDK: &str = "synap-sdk==1.4.0";

/// A Python interpreter that has the SDK: `SYNAP_SDK_PYTHON` if set (CI
/// prepares one), else a virtualenv under `target/`, created on first use.
fn sdk_python() -> PathBuf {
    if let Ok(python) = std::env::var("SYNAP_SDK_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let has_sdk =
        |python: &Path| Command::new(python).args(["-c", "import synap_sdk"]).status().is_ok_and(|s| s.success());
    if !has_sdk(&python) {
        let made = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("run python3 -m venv");
        assert!(made.success(), "could not create {}", venv.display());
        let pip = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", PYTHON_SDK])
            .status()
            .expect("run pip");
        assert!(pip.success(), "pip install {PYTHON_SDK} failed");
    }
    assert!(has_sdk(&python), "{} cannot import synap_sdk", python.display());
    python
}

async fn follower_url(cluster: &Cluster) -> String {
    let leader = cluster.leader(READY).await;
    cluster.nodes.iter().find(|n| n.id != leader).unwrap().url.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_works_unchanged() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let follower = follower_url(&cluster).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/python_sdk.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(&follower).arg("py-room").output().expect("run the SDK script")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python SDK script failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    // Check it against history read from another node.
    let history = cluster.nodes[0].client().history_all("py-room").await.unwrap();
    let offsets: Vec<u64> = history.iter().map(|e| e.offset).collect();
    assert_eq!(report["offsets"], json!(offsets), "{report}");
    assert_eq!(report["created_again"], false);
    let reported: Vec<Value> = report["events"].as_array().unwrap().clone();
    assert_eq!(reported.len(), history.len());
    for (got, event) in reported.iter().zip(&history) {
        assert_eq!(got["offset"], event.offset);
        assert_eq!(got["event"], event.event);
        assert_eq!(got["data"], event.data);
        assert_eq!(got["timestamp"], event.timestamp);
    }
    assert_eq!(report["stats"]["message_count"], 3);
    assert_eq!(report["stats"]["max_offset"], 2);
    assert_eq!(report["rooms"], json!(["py-room"]));
    assert_eq!(report["rooms_after_delete"], json!(["py-room"]));
    assert_eq!(report["kv_get"], "py-value");
    assert_eq!(report["kv_obj"], json!({"a": 1}), "non-string values round-trip as JSON");
    assert_eq!(report["kv_exists"], true);
    assert_eq!(report["kv_after_delete"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rust_sdk_works_unchanged() {
    use synap_sdk::{SynapClient, SynapConfig};

    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let follower = follower_url(&cluster).await;
    let sdk = SynapClient::new(SynapConfig::new(&follower)).expect("SDK client");
    let stream = sdk.stream();

    stream.create_room("rs-room", Some(1000)).await.expect("create_room");
    assert!(!stream.get_or_create_room("rs-room", None).await.expect("get_or_create_room"));
    let mut offsets = Vec::new();
    for i in 0..3 {
        offsets.push(stream.publish("rs-room", "sdk.rust", json!({ "i": i })).await.expect("publish"));
    }
    let events = stream.consume("rs-room", Some(0), Some(100)).await.expect("consume");
    let stats = stream.stats("rs-room").await.expect("stats");
    let rooms = stream.list().await.expect("list");
    stream.create_room("rs-scratch", None).await.expect("create scratch");
    stream.delete_room("rs-scratch").await.expect("delete_room");
    let rooms_after = stream.list().await.expect("list");

    let history = cluster.nodes[0].client().history_all("rs-room").await.unwrap();
    assert_eq!(offsets, history.iter().map(|e| e.offset).collect::<Vec<_>>());
    assert_eq!(events.len(), 3);
    for (got, event) in events.iter().zip(&history) {
        assert_eq!(got.offset, event.offset);
        assert_eq!(got.event, event.event);
        assert_eq!(got.data, event.data);
        assert_eq!(got.timestamp, Some(event.timestamp));
    }
    assert_eq!((stats.message_count, stats.max_offset, stats.total_published), (3, 2, 3));
    assert_eq!(rooms, vec!["rs-room".to_owned()]);
    assert_eq!(rooms_after, vec!["rs-room".to_owned()]);
    let config = cluster.nodes[2].client().stats("rs-room").await.unwrap();
    assert_eq!(config.max_events, Some(1000), "create_room's max_events reached the room");

    let kv = sdk.kv();
    kv.set("rs:key", "rs-value", Some(60)).await.expect("kv set");
    let value: Option<String> = kv.get("rs:key").await.expect("kv get");
    assert_eq!(value.as_deref(), Some("rs-value"));
    assert!(kv.exists("rs:key").await.expect("kv exists"));
    assert!(kv.delete("rs:key").await.expect("kv delete"));
    let gone: Option<String> = kv.get("rs:key").await.expect("kv get");
    assert_eq!(gone, None);
}
