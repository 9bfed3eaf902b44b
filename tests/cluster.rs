//! The replicated room log against a real three-node cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;
use synap::client::Client;

const CONVERGE: Duration = Duration::from_secs(30);

fn rooms(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_publishes_give_identical_dense_histories() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let room_names = rooms(&["alpha", "beta", "gamma"]);
    let urls = cluster.urls();

    // Three concurrent publishers, each going through a different node,
    // 300 events in all, spread over three rooms.
    let mut tasks = Vec::new();
    for p in 0..3usize {
        let client = Client::new(&urls[p]);
        let room_names = room_names.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..100usize {
                let room = &room_names[(p + i) % 3];
                let id = format!("rr-{p}-{i}");
                let data = json!({ "p": p, "i": i });
                let r = client.publish(room, "test.rr", &data, None, Some(&id)).await.expect("publish");
                assert_eq!(&r.room, room);
                acks.push(Ack { room: room.clone(), offset: r.offset, id, data });
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.unwrap());
    }
    assert_eq!(acks.len(), 300);
    let histories = histories(&cluster, &room_names, &acks, CONVERGE).await;
    for (room, per_node) in &histories {
        assert_eq!(per_node.len(), 3, "room {room} read from every node");
        for events in per_node.values() {
            assert_eq!(events.len(), 100, "room {room} holds exactly the 100 acknowledged events");
        }
    }
    check_acks(&acks, &histories);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_through_a_follower_is_forwarded_and_readable_there() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let leader = cluster.leader(READY).await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    let client = follower.client();

    let first = client.publish("orders", "order.created", &json!({"n": 1}), None, None).await.expect("publish");
    let second = client.publish("orders", "order.created", &json!({"n": 2}), None, None).await.expect("publish");
    assert_eq!(first.offset, 0);
    assert_eq!(second.offset, 1);

    // Read-your-writes on the follower, without waiting.
    let page = client.history("orders", 0, 10).await.expect("history");
    let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![0, 1]);
    assert_eq!(page.events[1].data, json!({"n": 2}));
    assert_eq!(page.events[1].timestamp, second.timestamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_under_load_loses_nothing() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let room_names = rooms(&["k1", "k2"]);
    let load = Load::start(8, cluster.urls(), room_names.clone());
    load.wait_acks(200, Duration::from_secs(30)).await;

    let leader = cluster.leader(READY).await;
    cluster.node_mut(leader).kill();
    let killed_at = Instant::now();
    let before = load.ack_count();
    load.wait_acks(before + 50, Duration::from_secs(30)).await;
    let resumed = load
        .acks
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.sent > killed_at)
        .map(|a| a.done.duration_since(killed_at))
        .min()
        .expect("an acknowledgement of a publish sent after the kill");
    assert!(
        resumed < Duration::from_secs(3),
        "the first publish sent after the leader was killed was acknowledged {resumed:?} after the kill"
    );

    cluster.node_mut(leader).start();
    load.wait_acks(load.ack_count() + 50, Duration::from_secs(30)).await;
    let acks: Vec<Ack> = load.stop().await.into_iter().map(|a| a.ack).collect();
    cluster.wait_ready(READY).await;
    let histories = histories(&cluster, &room_names, &acks, CONVERGE).await;
    assert_eq!(histories["k1"].len(), 3, "the restarted node serves history too");
    check_acks(&acks, &histories);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_every_node_mid_load_keeps_every_acknowledged_event() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let room_names = rooms(&["crash"]);
    let load = Load::start(8, cluster.urls(), room_names.clone());
    load.wait_acks(300, Duration::from_secs(30)).await;
    for node in &mut cluster.nodes {
        node.kill();
    }
    let acks: Vec<Ack> = load.stop().await.into_iter().map(|a| a.ack).collect();
    for node in &mut cluster.nodes {
        node.start();
    }
    cluster.wait_ready(READY).await;
    let histories = histories(&cluster, &room_names, &acks, CONVERGE).await;
    check_acks(&acks, &histories);

    // The restarted cluster takes new writes after the old ones.
    let max_acked = acks.iter().map(|a| a.offset).max().unwrap();
    let next =
        cluster.nodes[0].client().publish("crash", "after.restart", &json!({}), None, None).await.expect("publish");
    assert!(next.offset > max_acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_and_another_leaves_while_publishing_continues() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let room_names = rooms(&["members"]);
    // Publish through the nodes that stay members throughout; node 1 is
    // removed (and then stopped) halfway.
    let load = Load::start(4, cluster.urls()[1..].to_vec(), room_names.clone());
    load.wait_acks(100, Duration::from_secs(30)).await;

    let via = cluster.nodes[1].url.clone();
    cluster.add_joining_node(4, &via);
    wait_voter(&cluster.nodes[0].client(), 4, Duration::from_secs(60)).await;
    let after_join = load.ack_count();
    load.wait_acks(after_join + 50, Duration::from_secs(30)).await;

    // Remove node 1 through another node; it may well be the leader.
    let admin = cluster.node(2).client();
    admin.remove(1).await.expect("remove node 1");
    let status = admin.cluster_status().await.expect("status");
    assert!(status.members.iter().all(|m| m.id != 1), "node 1 still listed: {status:?}");
    // An operator stops a removed node gracefully: requests it is still
    // serving finish instead of ending with an unknown outcome.
    cluster.node_mut(1).stop();
    let after_remove = load.ack_count();
    load.wait_acks(after_remove + 50, Duration::from_secs(30)).await;

    let failures = load.failures.lock().unwrap().clone();
    let acks: Vec<Ack> = load.stop().await.into_iter().map(|a| a.ack).collect();
    assert!(failures.is_empty(), "publishes failed during membership changes: {failures:?}");
    let histories = histories(&cluster, &room_names, &acks, CONVERGE).await;
    assert!(histories["members"].contains_key(&4), "node 4 serves history");
    check_acks(&acks, &histories);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_never_acknowledges_a_publish() {
    let mut cluster = Cluster::start(3, &["--write-timeout-ms", "2000"]);
    cluster.wait_ready(READY).await;
    cluster.nodes[0].client().publish("lonely", "before", &json!({}), None, None).await.expect("publish");
    let survivor = cluster.leader(READY).await;
    let others: Vec<u64> = cluster.nodes.iter().map(|n| n.id).filter(|id| *id != survivor).collect();
    for id in others {
        cluster.node_mut(id).kill();
    }
    let url = format!("{}/stream/lonely/publish", cluster.node(survivor).url);
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, body) = raw(Method::POST, &url, Some(r#"{"event":"minority","data":{}}"#)).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "attempt {attempt}: a lone node answered {status}: {body}");
        assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "503 carries a message: {body}");
        assert!(took < Duration::from_secs(4), "attempt {attempt}: answer took {took:?} with a 2 s deadline");
    }
    let page = cluster.node(survivor).client().history("lonely", 0, 100).await.expect("history");
    assert_eq!(page.events.len(), 1, "only the event published with a majority is visible: {page:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_a_message_and_changes_nothing() {
    let cluster = Cluster::start(3, &["--max-event-bytes", "1000"]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[1].url.clone();
    let client = cluster.nodes[1].client();
    client.publish("good", "seed", &json!({"ok": true}), None, None).await.expect("seed publish");
    let before = client.history_all("good").await.expect("history");
    let rooms_before = client.rooms().await.expect("rooms");

    let long_room = "r".repeat(256);
    let big = format!(r#"{{"event":"big","data":"{}"}}"#, "x".repeat(2000));
    let cases: Vec<(Method, String, Option<String>, u16)> = vec![
        (Method::POST, format!("{base}/stream/good/publish"), Some("{not json".into()), 400),
        (Method::POST, format!("{base}/stream/good/publish"), Some(r#"{"event":5,"data":{}}"#.into()), 400),
        (Method::POST, format!("{base}/stream/good/publish"), Some(r#"{"event":"a"}"#.into()), 400),
        (Method::POST, format!("{base}/stream/good/publish"), Some(r#"{"event":"a","data":1,"extra":1}"#.into()), 400),
        (Method::POST, format!("{base}/stream/good/publish"), Some(r#"{"event":"","data":1}"#.into()), 400),
        (
            Method::POST,
            format!("{base}/stream/good/publish"),
            Some(r#"{"event":"a","data":1,"metadata":[1]}"#.into()),
            400,
        ),
        (Method::POST, format!("{base}/stream/good/publish"), Some(big.clone()), 413),
        (Method::POST, format!("{base}/stream/good/batch"), Some(r#"{"events":[]}"#.into()), 400),
        (
            Method::POST,
            format!("{base}/stream/good/batch"),
            Some(format!(r#"{{"events":[{{"event":"ok","data":1}},{}]}}"#, big)),
            413,
        ),
        (Method::POST, format!("{base}/stream/{long_room}/publish"), Some(r#"{"event":"a","data":1}"#.into()), 400),
        (Method::POST, format!("{base}/stream/bad%20name/publish"), Some(r#"{"event":"a","data":1}"#.into()), 400),
        (Method::POST, format!("{base}/stream/bad$name/publish"), Some(r#"{"event":"a","data":1}"#.into()), 400),
        (Method::GET, format!("{base}/stream/good/history?from_offset=abc"), None, 400),
        (Method::GET, format!("{base}/stream/good/history?unknown=1"), None, 400),
        (Method::GET, format!("{base}/stream/good/history?types=a..b"), None, 400),
        (Method::GET, format!("{base}/stream/missing/history"), None, 404),
        (Method::GET, format!("{base}/stream/missing/stats"), None, 404),
        (Method::POST, format!("{base}/stream/good"), None, 409),
        (Method::POST, format!("{base}/stream/newroom"), Some(r#"{"max_events":"many"}"#.into()), 400),
        (Method::DELETE, format!("{base}/stream/missing"), None, 404),
        (Method::DELETE, format!("{base}/admin/cluster/members/99"), None, 404),
    ];
    for (method, url, body, want) in cases {
        let (status, answer) = raw(method.clone(), &url, body.as_deref()).await;
        assert_eq!(status, want, "{method} {url} answered {status}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{method} {url}: no error message in {answer}");
        assert_eq!(answer["code"], want, "{method} {url}: code field");
    }

    let after = client.history_all("good").await.expect("history");
    assert_eq!(before, after, "refused requests changed the history");
    assert_eq!(rooms_before, client.rooms().await.expect("rooms"), "refused requests created rooms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_routes_require_the_cluster_secret() {
    let cluster = Cluster::start(3, &["--cluster-secret", "s3cret"]);
    cluster.wait_ready(READY).await;
    let leader = cluster.leader(READY).await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap();
    // Forwarding between nodes carries the secret.
    let r = follower.client().publish("secured", "ok", &json!({}), None, None).await.expect("publish");
    assert_eq!(r.offset, 0);

    // A forged forward (a valid bincode publish) without or with a wrong
    // secret is refused and appends nothing.
    let forged = synap::codec::encode(&synap::node::forward::ForwardRequest {
        requests: vec![synap::command::Request::Publish {
            events: vec![synap::command::NewEvent {
                room: "secured".into(),
                event_type: "forged".into(),
                data: "{}".into(),
                metadata: None,
                id: "forged-1".into(),
                dedup: true,
            }],
            create_missing: true,
        }],
        timeout_ms: 1000,
    })
    .unwrap();
    let http = reqwest::Client::new();
    let leader_url = &cluster.node(leader).url;
    for secret in [None, Some("wrong")] {
        for path in ["/raft/forward", "/raft/vote", "/raft/append"] {
            let mut request = http.post(format!("{leader_url}{path}")).body(forged.clone());
            if let Some(secret) = secret {
                request = request.header(synap::peer::SECRET_HEADER, secret);
            }
            let status = request.send().await.unwrap().status().as_u16();
            assert_eq!(status, 401, "{path} with secret {secret:?}");
        }
    }
    let page = cluster.node(leader).client().history("secured", 0, 10).await.unwrap();
    assert_eq!(page.events.len(), 1, "a refused internal request appended: {page:?}");
}
