//! API keys: every cell of the matrix of credentials × surfaces.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEYS: &str = r#"
[[keys]]
name = "admin"
key = "admin-key"
permissions = ["publish", "subscribe", "admin"]

[[keys]]
name = "reader"
key = "read-key"
permissions = ["subscribe"]

[[keys]]
name = "orders-writer"
key = "write-key"
permissions = ["publish"]
rooms = ["orders.*"]

[[keys]]
name = "orders-admin"
key = "orders-admin-key"
permissions = ["publish", "subscribe", "admin"]
rooms = ["orders.*"]
"#;

#[derive(Clone, Copy, Debug)]
enum Surface {
    Publish,
    History,
    WebSocket,
    Sse,
    Command,
    Admin,
    Metrics,
}

/// The status `surface` answers with `key` (None = no credential).
async fn status_of(base: &str, surface: Surface, key: Option<&str>, via_query: bool) -> u16 {
    let room = "orders.eu";
    if let Surface::WebSocket = surface {
        let mut url = format!("{}/stream/{room}/ws", base.replacen("http://", "ws://", 1));
        if let (Some(key), true) = (key, via_query) {
            url.push_str(&format!("?api_key={key}"));
        }
        let mut request = url.into_client_request().unwrap();
        if let (Some(key), false) = (key, via_query) {
            request.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        return match tokio_tungstenite::connect_async(request).await {
            Ok((_, response)) => response.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("ws: {e}"),
        };
    }
    let http = reqwest::Client::new();
    let (method, path, body) = match surface {
        Surface::Publish => {
            (reqwest::Method::POST, format!("/stream/{room}/publish"), Some(json!({"event": "e", "data": 1})))
        }
        Surface::History => (reqwest::Method::GET, format!("/stream/{room}/history"), None),
        Surface::Sse => (reqwest::Method::GET, format!("/stream/{room}/sse"), None),
        Surface::Command => (
            reqwest::Method::POST,
            "/api/v1/command".to_owned(),
            Some(
                json!({"command": "stream.publish", "request_id": "x", "payload": {"room": room, "event": "e", "data": 1}}),
            ),
        ),
        Surface::Admin => (reqwest::Method::GET, "/admin/cluster".to_owned(), None),
        Surface::Metrics => (reqwest::Method::GET, "/metrics".to_owned(), None),
        Surface::WebSocket => unreachable!("handled above"),
    };
    let mut url = format!("{base}{path}");
    if let (Some(key), true) = (key, via_query) {
        url.push_str(&format!("?api_key={key}"));
    }
    let mut request = http.request(method, url).timeout(Duration::from_secs(10));
    if let (Some(key), false) = (key, via_query) {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if let Surface::Command = surface {
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["success"], status == 200, "command answer: {answer}");
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_credential_gets_exactly_its_permissions() {
    let dir = tempfile::TempDir::new().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, KEYS).unwrap();
    let keys_arg = keys.display().to_string();
    let cluster = Cluster::start(1, &["--auth-file", &keys_arg]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let base = cluster.nodes[0].url.clone();
    // Seed the room so history and stats have something to answer.
    let seeded = reqwest::Client::new()
        .post(format!("{base}/stream/orders.eu/publish"))
        .bearer_auth("admin-key")
        .json(&json!({"event": "seed", "data": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(seeded.status(), 200);

    use Surface::*;
    let ok = |s: Surface| match s {
        WebSocket => 101,
        _ => 200,
    };
    let surfaces = [Publish, History, WebSocket, Sse, Command, Admin, Metrics];
    type Expected<'a> = &'a dyn Fn(Surface) -> u16;
    let credentials: [(&str, Option<&str>, Expected); 6] = [
        ("no key", None, &|_| 401),
        ("wrong key", Some("nope"), &|_| 401),
        ("reader", Some("read-key"), &|s| match s {
            History | WebSocket | Sse => ok(s),
            _ => 403,
        }),
        ("orders writer", Some("write-key"), &|s| match s {
            Publish | Command => ok(s),
            _ => 403,
        }),
        // A key scoped to rooms administers those rooms, never the cluster.
        ("orders admin", Some("orders-admin-key"), &|s| match s {
            Admin | Metrics => 403,
            _ => ok(s),
        }),
        ("admin", Some("admin-key"), &|s| ok(s)),
    ];
    for (who, key, expected) in credentials {
        for surface in surfaces {
            for via_query in [false, true] {
                let got = status_of(&base, surface, key, via_query).await;
                assert_eq!(got, expected(surface), "{who} on {surface:?} (key in query: {via_query})");
            }
        }
    }

    // Room patterns: the orders writer may not publish elsewhere.
    let elsewhere = reqwest::Client::new()
        .post(format!("{base}/stream/payments/publish"))
        .bearer_auth("write-key")
        .json(&json!({"event": "e", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    let message: serde_json::Value = elsewhere.json().await.unwrap();
    assert!(message["error"].as_str().unwrap().contains("publish"), "{message}");

    // Health and readiness stay open.
    for path in ["/health", "/ready"] {
        let status = reqwest::get(format!("{base}{path}")).await.unwrap().status();
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_from_the_flag_work_across_a_cluster_and_for_joining() {
    let mut cluster = Cluster::start(3, &["--api-key", "k1,k2", "--cluster-secret", "s3cret"]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let follower = cluster.nodes[1].client().with_api_key(Some("k2".into()));
    let r = follower.publish("secured", "e", &json!({}), None, None).await.expect("publish with k2");
    assert_eq!(r.offset, 0);
    let refused = cluster.nodes[1].client().publish("secured", "e", &json!({}), None, None).await;
    assert!(matches!(refused, Err(synap::client::ClientError::Http { status: 401, .. })), "{refused:?}");
    // A new node started with the same keys joins (its join requests carry one).
    let via = cluster.nodes[0].url.clone();
    cluster.add_joining_node(4, &via);
    wait_voter(&cluster.nodes[0].client().with_api_key(Some("k1".into())), 4, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_keys_are_scoped_by_the_room_patterns_of_the_key() {
    let dir = tempfile::TempDir::new().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, KEYS).unwrap();
    let cluster = Cluster::start(1, &["--auth-file", &keys.display().to_string()]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let http = reqwest::Client::new();
    let set = |key: &'static str| {
        http.post(format!("{base}/kv/set"))
            .bearer_auth("orders-admin-key")
            .json(&json!({"key": key, "value": "v"}))
            .send()
    };
    assert_eq!(set("orders.processed:1").await.unwrap().status(), 200, "inside the key's patterns");
    let outside = set("payments.processed:1").await.unwrap();
    assert_eq!(outside.status(), 403);
    let message: serde_json::Value = outside.json().await.unwrap();
    assert!(message["error"].as_str().unwrap().contains("KV key 'payments.processed:1'"), "{message}");
    let read = http.get(format!("{base}/kv/get/payments.processed:1")).bearer_auth("orders-admin-key").send().await;
    assert_eq!(read.unwrap().status(), 403);
    // The same rule on the command endpoint.
    let command = json!({"command": "kv.get", "request_id": "1", "payload": {"key": "payments.processed:1"}});
    let answer = http.post(format!("{base}/api/v1/command")).bearer_auth("orders-admin-key").json(&command);
    assert_eq!(answer.send().await.unwrap().status(), 403);
}

#[test]
fn a_clustered_node_with_keys_refuses_to_start_without_a_cluster_secret() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let peers = format!("1=http://127.0.0.1:{port},2=http://127.0.0.1:{}", free_port());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_synap"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--peers", &peers, "--api-key", "k"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run synap");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --cluster-secret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_endpoint_refuses_a_bad_key_before_reading_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = Cluster::start(1, &["--api-key", "k"]);
    cluster.wait_ready(READY).await;
    let address = cluster.nodes[0].url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Announce 16 MB and send none of it: only a server that answers before
    // reading the body answers at all.
    let head = format!(
        "POST /api/v1/command HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer wrong\r\n\
         Content-Type: application/json\r\nContent-Length: 16000000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_request_relayed_to_the_leader_keeps_a_key_given_in_the_query() {
    let mut cluster = Cluster::start(3, &["--api-key", "k", "--cluster-secret", "s"]);
    cluster.wait_ready(READY).await;
    let via = cluster.nodes[0].url.clone();
    cluster.add_joining_node(4, &via);
    let keyed = cluster.nodes[0].client().with_api_key(Some("k".into()));
    wait_voter(&keyed, 4, Duration::from_secs(60)).await;
    let leader = keyed.cluster_status().await.unwrap().leader.expect("a leader");
    let follower = cluster.nodes.iter().find(|n| n.id != leader && n.id != 4).unwrap().url.clone();
    let removed =
        reqwest::Client::new().delete(format!("{follower}/admin/cluster/members/4?api_key=k")).send().await.unwrap();
    assert_eq!(removed.status(), 200, "{}", removed.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_keys_but_no_cluster_secret_refuses_to_add_nodes() {
    let cluster = Cluster::start(1, &["--api-key", "k"]);
    cluster.wait_ready(READY).await;
    let added = reqwest::Client::new()
        .post(format!("{}/admin/cluster/learners", cluster.nodes[0].url))
        .bearer_auth("k")
        .json(&json!({"id": 2, "url": format!("http://127.0.0.1:{}", free_port())}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 400);
    let message: serde_json::Value = added.json().await.unwrap();
    assert!(message["error"].as_str().unwrap().contains("--cluster-secret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_authentication_and_keys_reloaded_on_sighup() {
    let dir = tempfile::TempDir::new().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, KEYS).unwrap();
    let cluster = Cluster::start(1, &["--auth-file", &keys.display().to_string()]);
    cluster.wait_ready(READY).await;
    let list = format!("{}/stream/list", cluster.nodes[0].url);
    let http = reqwest::Client::new();
    let status_with = |user: &'static str, key: &'static str| {
        let request = http.get(&list).basic_auth(user, Some(key));
        async move { request.send().await.expect("request").status().as_u16() }
    };
    // The SDKs' Basic authentication: the key's name as user, the key as password.
    assert_eq!(status_with("reader", "read-key").await, 200);
    assert_eq!(status_with("admin", "read-key").await, 401, "a user that is not the key's name");
    assert_eq!(status_with("newcomer", "new-key").await, 401);

    // A key added to the file works after a SIGHUP, without a restart.
    let added = format!("{KEYS}\n[[keys]]\nname = \"newcomer\"\nkey = \"new-key\"\npermissions = [\"subscribe\"]\n");
    std::fs::write(&keys, added).unwrap();
    let pid = cluster.nodes[0].pid().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_for(Duration::from_secs(10), "the node to accept the key added to its auth file", || {
        let status = status_with("newcomer", "new-key");
        async move { status.await == 200 }
    })
    .await;
    // A broken file is not taken: the keys stay.
    std::fs::write(&keys, "this is [ not toml").unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let node = &cluster.nodes[0];
    wait_for(Duration::from_secs(10), "the node to log that it kept its keys", || {
        let logged = node.log_tail(50).contains("API keys not reloaded");
        async move { logged }
    })
    .await;
    assert_eq!(status_with("newcomer", "new-key").await, 200);
    assert!(node.is_running(), "a SIGHUP must not stop the node");
}
