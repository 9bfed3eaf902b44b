//! The room API on one node: lifecycle, batch publish, history paging,
//! negative offsets, type filters, retention and strong reads.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

/// A one-node cluster holding room `events` with ten events, alternating
/// `user.created` (even offsets) and `order.paid` (odd ones).
async fn ten_events() -> (Cluster, String, synap::client::Client) {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let client = cluster.nodes[0].client();
    let events: Vec<_> = (0..10)
        .map(|i| json!({ "event": if i % 2 == 0 { "user.created" } else { "order.paid" }, "data": { "i": i } }))
        .collect();
    let (status, body) =
        raw(Method::POST, &format!("{base}/stream/events/batch"), Some(&json!({ "events": events }).to_string())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offsets"], json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), "a batch gets consecutive offsets, in order");
    (cluster, base, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_room_twice_conflicts_and_get_or_create_does_not() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let (status, body) = raw(Method::POST, &format!("{base}/stream/events"), Some(r#"{"max_events":1000}"#)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["stats"]["max_events"], 1000);
    let (status, body) = raw(Method::POST, &format!("{base}/stream/events"), None).await;
    assert_eq!((status, body["error"].clone()), (409, json!("room 'events' already exists")));
    let (status, body) = raw(Method::PUT, &format!("{base}/stream/events"), None).await;
    assert_eq!((status, body["created"].clone()), (200, json!(false)));
    assert_eq!(body["stats"]["max_events"], 1000, "get-or-create keeps the existing settings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_through_a_room() {
    let (_cluster, _, client) = ten_events().await;
    let page = client.history("events", 0, 4).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(page.next_offset, 4);
    assert_eq!((page.min_offset, page.max_offset), (0, Some(9)));
    let page = client.history("events", page.next_offset as i64, 100).await.unwrap();
    assert_eq!(page.events.first().map(|e| e.offset), Some(4));
    assert_eq!(page.next_offset, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_offset_counts_back_from_the_end() {
    let (_cluster, _, client) = ten_events().await;
    let tail = client.history("events", -3, 100).await.unwrap();
    assert_eq!(tail.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![7, 8, 9]);
    let all = client.history("events", -100, 100).await.unwrap();
    assert_eq!(all.events.len(), 10, "further back than the start is the start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_filter_returns_exactly_the_matching_events() {
    let (_cluster, base, client) = ten_events().await;
    let all = client.history_all("events").await.unwrap();
    let (status, body) = raw(Method::GET, &format!("{base}/stream/events/history?types=user.*&limit=100"), None).await;
    assert_eq!(status, 200);
    let filtered: Vec<u64> = body["events"].as_array().unwrap().iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = all.iter().filter(|e| e.event == "user.created").map(|e| e.offset).collect();
    assert_eq!(filtered, expected);
    assert_eq!(filtered.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_room_list_describe_the_rooms() {
    let (_cluster, _, client) = ten_events().await;
    let stats = client.stats("events").await.unwrap();
    assert_eq!((stats.event_count, stats.next_offset, stats.generation), (10, 10, 1));
    assert_eq!(client.rooms().await.unwrap(), vec!["events".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_read_sees_the_last_write() {
    let (_cluster, base, _) = ten_events().await;
    let (status, body) =
        raw(Method::GET, &format!("{base}/stream/events/history?consistency=strong&from_offset=-1"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["events"][0]["offset"], 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_room_comes_back_as_a_new_generation_from_offset_0() {
    let (_cluster, base, client) = ten_events().await;
    let (status, _) = raw(Method::DELETE, &format!("{base}/stream/events"), None).await;
    assert_eq!(status, 200);
    let (status, _) = raw(Method::GET, &format!("{base}/stream/events/history"), None).await;
    assert_eq!(status, 404);
    let r = client.publish("events", "again", &json!({}), None, None).await.unwrap();
    assert_eq!(r.offset, 0);
    let stats = client.stats("events").await.unwrap();
    assert_eq!((stats.generation, stats.event_count), (2, 1));
    let again = client.history_all("events").await.unwrap();
    assert_eq!(again.len(), 1, "events of the deleted generation are gone: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_count_trims_the_oldest_events() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let client = cluster.nodes[0].client();
    let (status, _) = raw(Method::POST, &format!("{base}/stream/capped"), Some(r#"{"max_events":5}"#)).await;
    assert_eq!(status, 201);
    for i in 0..12 {
        client.publish("capped", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let page = client.history("capped", 0, 100).await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![7, 8, 9, 10, 11]);
    assert_eq!(page.min_offset, 7);
    assert_eq!(page.events[0].data, json!({ "i": 7 }));
    let stats = client.stats("capped").await.unwrap();
    assert_eq!((stats.event_count, stats.published_total), (5, 12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_data_and_does_not_reinitialise() {
    let mut cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let client = cluster.nodes[0].client();
    let first = client.publish("durable", "one", &json!({ "n": 1 }), None, None).await.unwrap();
    let log_before = client.cluster_status().await.unwrap().last_log_index;
    cluster.nodes[0].stop();
    cluster.nodes[0].start();
    cluster.wait_ready(READY).await;
    let status = client.cluster_status().await.unwrap();
    assert!(status.last_log_index >= log_before, "the log survived the restart: {status:?}");
    assert_eq!(client.history_all("durable").await.unwrap().len(), 1, "the event survived the restart");
    let second = client.publish("durable", "two", &json!({ "n": 2 }), None, None).await.unwrap();
    assert_eq!((first.offset, second.offset), (0, 1));
    let (status, body) = raw(Method::POST, &format!("{}/admin/cluster/init", cluster.nodes[0].url), None).await;
    assert_eq!(status, 400, "re-initialising is refused: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_events_is_bounded_in_bytes_and_the_next_one_continues() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let client = cluster.nodes[0].client();
    let big = "x".repeat(900_000);
    for i in 0..12 {
        client.publish("big", "blob", &json!({ "i": i, "blob": big }), None, None).await.unwrap();
    }
    let (status, page) = raw(Method::GET, &format!("{base}/stream/big/history?limit=10000"), None).await;
    assert_eq!(status, 200);
    let events = page["events"].as_array().unwrap();
    assert!((1..12).contains(&events.len()), "a 4 MiB page holds a few of the 900 KB events, not {}", events.len());
    let last = events.last().unwrap()["offset"].as_u64().unwrap();
    assert_eq!(page["next_offset"].as_u64(), Some(last + 1), "the next page starts after the last one shown");
    let all = client.history_all("big").await.unwrap();
    assert_eq!(all.iter().map(|e| e.data["i"].as_u64().unwrap()).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_trims_a_room_nobody_publishes_to() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let base = cluster.nodes[0].url.clone();
    let client = cluster.nodes[0].client();
    let (status, _) = raw(Method::POST, &format!("{base}/stream/brief"), Some(r#"{"max_age_secs":1}"#)).await;
    assert_eq!(status, 201);
    for i in 0..3 {
        client.publish("brief", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    // No more publishes: the leader's housekeeping ages them out.
    wait_for(std::time::Duration::from_secs(15), "the three events to age out", || {
        let client = client.clone();
        async move { client.stats("brief").await.is_ok_and(|s| s.min_offset == 3 && s.event_count == 0) }
    })
    .await;
    assert!(client.history_all("brief").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_retention_applies_to_the_events_already_there_on_every_node() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    cluster.wait_protocol(synap::command::ROOM_SETTINGS_PROTOCOL, std::time::Duration::from_secs(30)).await;
    let base = cluster.nodes[1].url.clone();
    let client = cluster.nodes[1].client();
    for i in 0..20 {
        client.publish("kept", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let kept = format!("{base}/stream/kept");
    let patch = |body: &'static str| raw(Method::PATCH, &kept, Some(body));

    // Bad input is refused and changes nothing.
    for (body, expected) in [
        (r#"{"max_events":0}"#, "at least 1"),
        ("{}", "nothing to change"),
        (r#"{"max_size":10}"#, "unknown field"),
        (r#"{"max_events":"5"}"#, "invalid"),
    ] {
        let (status, answer) = patch(body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains(expected), "{body}: {answer}");
    }
    let (status, _) = raw(Method::PATCH, &format!("{base}/stream/absent"), Some(r#"{"max_events":5}"#)).await;
    assert_eq!(status, 404);
    assert_eq!(client.stats("kept").await.unwrap().min_offset, 0);

    let (status, answer) = patch(r#"{"max_events":5}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["stats"]["min_offset"].as_u64(), answer["stats"]["max_events"].as_u64()), (Some(15), Some(5)));
    let history = cluster.converged_history("kept", 20, std::time::Duration::from_secs(10)).await;
    for (node, events) in &history {
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, (15..20).collect::<Vec<_>>(), "node {node}");
    }

    // The command endpoint and the client lift the limit again.
    let (status, answer) = raw(
        Method::POST,
        &format!("{base}/api/v1/command"),
        Some(r#"{"command":"stream.update","request_id":"r1","payload":{"room":"kept","max_events":null,"max_age_secs":3600}}"#),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["payload"]["stats"]["max_events"], serde_json::Value::Null, "{answer}");
    assert_eq!(answer["payload"]["stats"]["max_age_secs"], 3600, "{answer}");
    for i in 20..30 {
        client.publish("kept", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let stats = client.stats("kept").await.unwrap();
    assert_eq!((stats.min_offset, stats.next_offset), (15, 30), "without a count limit all new events stay");
    let change = synap::command::RoomChange { max_events: Some(Some(3)), max_age_secs: Some(None), max_bytes: None };
    let stats = cluster.nodes[2].client().update_room("kept", &change).await.unwrap();
    assert_eq!((stats.min_offset, stats.max_events, stats.max_age_secs), (27, Some(3), None));

    // By bytes: each payload here is 8 bytes ({"i":27}); 20 keep two.
    let (status, answer) = patch(r#"{"max_bytes":0}"#).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = patch(r#"{"max_events":null,"max_bytes":20}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["stats"]["min_offset"].as_u64(), answer["stats"]["max_bytes"].as_u64()), (Some(28), Some(20)));
    client.publish("kept", "tick", &json!({ "i": 30 }), None, None).await.unwrap();
    let history = cluster.converged_history("kept", 31, std::time::Duration::from_secs(10)).await;
    for (node, events) in &history {
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![29, 30], "node {node}: a new event pushes the oldest out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_take_the_default_settings_unless_their_creation_says_otherwise() {
    let defaults = ["--default-max-events", "5", "--default-max-bytes", "100000"];
    let cluster = Cluster::start(3, &defaults);
    cluster.wait_ready(READY).await;
    cluster.wait_protocol(synap::command::ROOM_SETTINGS_PROTOCOL, std::time::Duration::from_secs(30)).await;
    let follower = cluster.nodes[1].client();
    let base = cluster.nodes[1].url.clone();

    // A room made by a publish through a follower gets the defaults, on
    // every node.
    for i in 0..8 {
        follower.publish("auto", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let histories = cluster.converged_history("auto", 8, READY).await;
    for (id, history) in &histories {
        let offsets: Vec<u64> = history.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5, 6, 7], "node {id} keeps the newest five");
    }
    let stats = cluster.nodes[2].client().stats("auto").await.unwrap();
    assert_eq!((stats.max_events, stats.max_age_secs, stats.max_bytes), (Some(5), None, Some(100000)));

    // A creation that says otherwise: null removes a default, a number
    // replaces it, absent keeps it.
    let (status, answer) =
        raw(Method::POST, &format!("{base}/stream/explicit"), Some(r#"{"max_events":null,"max_bytes":300}"#)).await;
    assert_eq!(status, 201, "{answer}");
    let stats = &answer["stats"];
    assert_eq!((stats["max_events"].clone(), stats["max_bytes"].clone()), (json!(null), json!(300)), "{answer}");
    for i in 0..10 {
        // Each payload is {"pad":"xx…"}: 40 bytes of data; 300 bytes keep 7.
        follower.publish("explicit", "tick", &json!({ "pad": format!("{i:030}") }), None, None).await.unwrap();
    }
    let kept = follower.stats("explicit").await.unwrap();
    assert_eq!((kept.min_offset, kept.next_offset), (3, 10), "{kept:?}");

    // The command endpoint too; bad settings are refused and create nothing.
    let command = format!("{base}/api/v1/command");
    let create = |payload: serde_json::Value| {
        let body = json!({ "command": "stream.create", "request_id": "r", "payload": payload }).to_string();
        let command = command.clone();
        async move { raw(Method::POST, &command, Some(&body)).await }
    };
    let (status, answer) = create(json!({ "room": "bad", "max_bytes": 0 })).await;
    assert!(answer["error"].as_str().unwrap_or_default().contains("max_bytes must be at least 1"), "{status} {answer}");
    assert!(follower.stats("bad").await.is_err(), "a refused creation creates nothing");
    let (_, answer) = create(json!({ "room": "commanded", "max_age_secs": 3600 })).await;
    assert_eq!(answer["success"], json!(true), "{answer}");
    let stats = follower.stats("commanded").await.unwrap();
    assert_eq!((stats.max_events, stats.max_age_secs, stats.max_bytes), (Some(5), Some(3600), Some(100000)));
}
