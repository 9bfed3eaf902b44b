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
    let credentials: [(&str, Option<&str>, Expected); 5] = [
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
    let mut cluster = Cluster::start(3, &["--api-key", "k1,k2"]);
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
