//! The `synap` command line: output, exit codes and one-line errors.

mod common;

use std::time::Duration;

use common::*;

/// `synap` with `args` as a blocking call from async code.
async fn synap_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        synap(&args)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommands_against_a_one_node_cluster() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut node = NodeProc::new(1, port, dir.path().join("data"), dir.path().join("node.log"), Vec::new());
    node.start();
    let client = node.client();
    wait_for(Duration::from_secs(30), "the one-node cluster to be ready", || {
        let c = client.clone();
        async move { c.ready().await.is_ok() }
    })
    .await;

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (code, out, err) = synap_async(s(&["health", &url])).await;
    assert_eq!(code, 0, "health: {err}");
    assert_eq!(out.trim(), "ready");

    let (code, out, err) =
        synap_async(s(&["publish", "cli-room", "user.registered", r#"{"u":1}"#, "--metadata", "k=v", "--url", &url]))
            .await;
    assert_eq!(code, 0, "publish: {err}");
    let published: serde_json::Value = serde_json::from_str(out.trim()).expect("publish prints JSON");
    assert_eq!(published["offset"], 0);
    assert_eq!(published["room"], "cli-room");

    let (code, out, _) = synap_async(s(&["history", "cli-room", "--from", "-1", "--url", &url])).await;
    assert_eq!(code, 0);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().expect("one event")).unwrap();
    assert_eq!(line["data"], serde_json::json!({"u": 1}));
    assert_eq!(line["metadata"], serde_json::json!({"k": "v"}));

    let (code, out, _) = synap_async(s(&["rooms", "--url", &url])).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "cli-room");

    let (code, _, err) = synap_async(s(&["stats", "nope", "--url", &url])).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: 404") && err.contains("does not exist"), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");

    let (code, _, err) = synap_async(s(&["publish", "cli-room", "t", "{not json", "--url", &url])).await;
    assert_eq!(code, 1);
    assert!(err.contains("not valid JSON"), "stderr: {err}");

    let (code, out, _) = synap_async(s(&["cluster", "status", "--url", &url])).await;
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["leader"], 1);

    // Durable consumers: add, consume (look, then ack), info, ls, rm.
    let (code, out, err) =
        synap_async(s(&["consumer", "add", "cli-room", "audit", "--start", "earliest", "--url", &url])).await;
    assert_eq!(code, 0, "consumer add: {err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((created["name"].clone(), created["lag"].clone()), (serde_json::json!("audit"), serde_json::json!(1)));
    let (code, out, err) = synap_async(s(&["consume", "cli-room", "audit", "--no-ack", "--url", &url])).await;
    assert_eq!(code, 0, "consume --no-ack: {err}");
    let looked: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((looked["offset"].clone(), looked["delivery"].clone()), (serde_json::json!(0), serde_json::json!(1)));
    let (code, out, err) = synap_async(s(&["consume", "cli-room", "audit", "--url", &url])).await;
    assert_eq!(code, 0, "consume: {err}");
    let taken: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((taken["offset"].clone(), taken["delivery"].clone()), (serde_json::json!(0), serde_json::json!(2)));
    let (code, out, _) = synap_async(s(&["consumer", "info", "cli-room", "audit", "--url", &url])).await;
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((info["acked"].clone(), info["lag"].clone()), (serde_json::json!(1), serde_json::json!(0)));
    let (code, out, _) = synap_async(s(&["consume", "cli-room", "audit", "--wait-ms", "0", "--url", &url])).await;
    assert_eq!((code, out.as_str()), (0, ""), "nothing left to consume");
    let (code, out, _) = synap_async(s(&["consumer", "ls", "cli-room", "--url", &url])).await;
    assert_eq!((code, out.lines().count()), (0, 1));
    let (code, _, err) = synap_async(s(&["consumer", "add", "cli-room", "x", "--start", "soon", "--url", &url])).await;
    assert_eq!(code, 1);
    assert!(err.contains("--start 'soon'"), "stderr: {err}");
    let (code, _, _) = synap_async(s(&["consumer", "rm", "cli-room", "audit", "--url", &url])).await;
    assert_eq!(code, 0);
    let (code, _, err) = synap_async(s(&["consumer", "info", "cli-room", "audit", "--url", &url])).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: 404"), "stderr: {err}");

    // Room settings: a limit applies to what is there; `none` lifts it.
    for i in 0..4 {
        let data = format!(r#"{{"i":{i}}}"#);
        let (code, _, err) = synap_async(s(&["publish", "cli-room", "tick", &data, "--url", &url])).await;
        assert_eq!(code, 0, "publish: {err}");
    }
    let (code, out, err) = synap_async(s(&["room", "set", "cli-room", "--max-events", "2", "--url", &url])).await;
    assert_eq!(code, 0, "room set: {err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (stats["min_offset"].clone(), stats["max_events"].clone()),
        (serde_json::json!(3), serde_json::json!(2))
    );
    let (code, out, _) = synap_async(s(&["room", "set", "cli-room", "--max-events", "none", "--url", &url])).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["max_events"], serde_json::Value::Null);
    let (code, _, err) = synap_async(s(&["room", "set", "cli-room", "--max-events", "many", "--url", &url])).await;
    assert_eq!(code, 2, "a bad flag value is a usage error");
    assert!(err.contains("neither a number nor 'none'"), "stderr: {err}");
    let (code, _, err) = synap_async(s(&["room", "set", "cli-room", "--url", &url])).await;
    assert_eq!(code, 1);
    assert!(err.contains("nothing to change"), "stderr: {err}");

    // A snapshot on demand answers its index.
    let (code, out, err) = synap_async(s(&["cluster", "snapshot", "--url", &url])).await;
    assert_eq!(code, 0, "cluster snapshot: {err}");
    let built: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(built["snapshot_index"].as_u64().is_some_and(|i| i > 0), "{built}");
    node.kill();
}

#[test]
fn unreachable_node_and_bad_flags_fail_with_one_line() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = synap(&["publish", "r", "t", "{}", "--url", &dead]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: cannot reach"), "stderr: {err}");

    let (code, _, err) = synap(&["health", &dead]);
    assert_eq!(code, 1);
    assert!(err.contains("is not ready"), "stderr: {err}");

    let (code, _, err) = synap(&["serve", "--id", "5", "--peers", "1=http://127.0.0.1:1,2=http://127.0.0.1:2"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not list this node's id 5"), "stderr: {err}");

    // A store without a page cache is refused before anything is opened.
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("node");
    let (code, _, err) = synap(&["serve", "--id", "1", "--store-cache-mb", "0", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("--store-cache-mb"), "stderr: {err}");
    assert!(!data.exists(), "the refused start created {}", data.display());
}
