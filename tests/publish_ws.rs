//! Pipelined publishing over one WebSocket (`/publish/ws`): every frame is
//! answered once, with its seq; a room's offsets follow seq order on one
//! connection; bad frames are refused alone; keys are checked per room;
//! a client that sends far more than the server queues before reading its
//! acknowledgements still gets every one.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use synap::client::{Client, PublishAck};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Reads answers until `count` with a seq arrived; also counts the
/// refusals of frames whose seq could not be read.
async fn answers(stream: &mut synap::client::PublishStream, count: usize) -> (BTreeMap<u64, PublishAck>, usize) {
    let mut got = BTreeMap::new();
    let mut unreadable = 0;
    while got.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), stream.recv()).await;
        match next.expect("an answer within 30 s").expect("the stream is open") {
            Ok(ack) => {
                let seq = ack.seq;
                assert!(got.insert(seq, ack).is_none(), "seq {seq} answered twice");
            }
            Err(synap::client::ClientError::Http { status: 400, message }) => {
                assert!(message.contains("not a publish frame"), "{message}");
                unreadable += 1;
            }
            Err(e) => panic!("an unexpected answer: {e}"),
        }
    }
    (got, unreadable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_publishes_through_a_follower_land_in_seq_order() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let leader = cluster.leader(READY).await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).expect("a follower");
    let mut stream = follower.client().publish_stream().await.expect("open the publish stream");

    const FRAMES: u64 = 3_000;
    let bad = [700u64, 1_500];
    for seq in 0..FRAMES {
        let room = if seq % 3 == 0 { "ws-b" } else { "ws-a" };
        if seq == bad[0] {
            let frame = json!({"seq": seq, "room": room, "event": "", "data": {}});
            stream.send_raw(frame.to_string()).await.expect("send");
        } else if seq == bad[1] {
            // No event type: refused, but its seq can be read.
            stream.send_raw(format!("{{\"seq\":{seq},\"room\":\"ws-a\",\"data\":{{}}}}")).await.expect("send");
            // Not JSON at all: refused with no seq.
            stream.send_raw("{\"seq\":".to_owned()).await.expect("send");
        } else {
            let frame = json!({"seq": seq, "room": room, "event": "n", "data": {"seq": seq}});
            stream.send_raw(frame.to_string()).await.expect("send");
        }
    }
    let (acks, unreadable) = answers(&mut stream, FRAMES as usize).await;
    stream.close().await.expect("close");
    assert_eq!(unreadable, 1, "one frame without a readable seq");

    for seq in bad {
        let refused = acks[&seq].outcome.as_ref().expect_err("a bad frame is refused");
        assert_eq!(refused.status, 400, "seq {seq}: {refused:?}");
    }
    // Per room, in seq order: offsets 0, 1, 2, ... and the events hold
    // their seqs in that order on every node.
    for (room, pick) in [("ws-a", 1u64), ("ws-b", 0)] {
        let sent: Vec<u64> = (0..FRAMES).filter(|s| (s % 3 == 0) == (pick == 0) && !bad.contains(s)).collect();
        let offsets: Vec<u64> = sent
            .iter()
            .map(|s| acks[s].outcome.as_ref().unwrap_or_else(|e| panic!("seq {s} refused: {e:?}")).offset)
            .collect();
        let dense: Vec<u64> = (0..sent.len() as u64).collect();
        assert_eq!(offsets, dense, "{room}: offsets follow seq order");
        let histories = cluster.converged_history(room, sent.len() as u64, READY).await;
        for (node, events) in histories {
            let seqs: Vec<u64> = events.iter().map(|e| e.data["seq"].as_u64().expect("seq")).collect();
            assert_eq!(seqs, sent, "{room} on node {node}");
        }
    }
}

const KEYS: &str = r#"
[[keys]]
name = "orders-writer"
key = "orders-key"
permissions = ["publish"]
rooms = ["orders.*"]

[[keys]]
name = "admin"
key = "admin-key"
permissions = ["publish", "subscribe", "admin"]

[[keys]]
name = "reader"
key = "read-key"
permissions = ["subscribe"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_checked_at_the_handshake_and_per_room() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, KEYS).expect("write keys");
    let cluster = Cluster::start(1, &["--auth-file", keys.to_str().expect("utf-8 path")]);
    cluster.wait_ready(READY).await;
    let node = &cluster.nodes[0];

    for key in [None, Some("read-key"), Some("nope")] {
        let client = Client::new(&node.url).with_api_key(key.map(str::to_owned));
        let refused = client.publish_stream().await.err();
        let expected = if key == Some("read-key") { "403" } else { "401" };
        let refused = refused.unwrap_or_else(|| panic!("key {key:?} may not open a publish stream"));
        assert!(refused.to_string().contains(expected), "key {key:?}: {refused}");
    }

    let client = Client::new(&node.url).with_api_key(Some("orders-key".into()));
    let mut stream = client.publish_stream().await.expect("a publish key opens the stream");
    stream.send("orders.eu", "created", &json!({"n": 1}), None, Some("o-1")).await.expect("send");
    stream.send("billing", "created", &json!({"n": 2}), None, None).await.expect("send");
    stream.send("orders.eu", "created", &json!({"n": 1}), None, Some("o-1")).await.expect("send");
    let (acks, _) = answers(&mut stream, 3).await;
    let first = acks[&0].outcome.as_ref().expect("its own room");
    let refused = acks[&1].outcome.as_ref().expect_err("another room");
    assert_eq!((refused.status, refused.code.as_str()), (403, "forbidden"));
    let again = acks[&2].outcome.as_ref().expect("a retry with the same id");
    assert!(again.duplicate && again.offset == first.offset, "the retry finds the original: {again:?}");
    let admin = Client::new(&node.url).with_api_key(Some("admin-key".into()));
    let stats = admin.stats("orders.eu").await.expect("stats");
    assert_eq!(stats.next_offset, 1, "one event, published once");
    assert!(matches!(admin.stats("billing").await, Err(synap::client::ClientError::Http { status: 404, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_reads_late_still_gets_every_answer() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(READY).await;
    let url = format!("{}/publish/ws", cluster.nodes[0].url.replacen("http://", "ws://", 1));
    let request = url.into_client_request().expect("request");
    let (socket, _) = tokio_tungstenite::connect_async(request).await.expect("connect");
    let (mut sink, mut source) = socket.split();

    // Ten times what the server queues, sent before reading anything: the
    // server stops reading until its rounds catch up, and the sender waits
    // on TCP instead of anything being dropped.
    const FRAMES: u64 = 10 * synap::client::MAX_IN_FLIGHT as u64;
    let sender = tokio::spawn(async move {
        for seq in 0..FRAMES {
            let frame = json!({"seq": seq, "room": "late", "event": "n", "data": {"pad": "p".repeat(200)}});
            sink.send(Message::Text(frame.to_string().into())).await.expect("send");
        }
        sink
    });
    // Offsets start at 0 in a new room, so each one equals its seq.
    for expected_seq in 0..FRAMES {
        let message = tokio::time::timeout(Duration::from_secs(30), source.next()).await;
        let message = message.expect("an answer within 30 s").expect("open").expect("readable");
        let Message::Text(text) = message else { panic!("a text frame, got {message:?}") };
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(answer["type"], "ack", "{answer}");
        // One room on one connection: answers come in seq order.
        assert_eq!(answer["seq"], expected_seq, "{answer}");
        assert_eq!(answer["offset"], expected_seq, "{answer}");
    }
    let mut sink = sender.await.expect("the sender finished");
    sink.close().await.expect("close");
}

/// Both ends read their sockets a few KiB at a time
/// (`protocol::WS_READ_BUFFER`); events many times that size still arrive
/// whole: published over the pipelined stream, delivered to a subscriber
/// of the client library.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_far_larger_than_one_socket_read_arrive_whole() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(READY).await;
    let client = cluster.nodes[1].client();
    let mut stream = client.publish_stream().await.expect("open the publish stream");
    let sizes = [20 * synap::protocol::WS_READ_BUFFER, 3, 60 * synap::protocol::WS_READ_BUFFER];
    for (i, size) in sizes.iter().enumerate() {
        let data = json!({ "i": i, "pad": "x".repeat(*size) });
        stream.send("large", "blob", &data, None, None).await.expect("send");
    }
    let (acks, unreadable) = answers(&mut stream, sizes.len()).await;
    stream.close().await.expect("close");
    assert_eq!(unreadable, 0);
    let offsets: Vec<u64> = acks.values().map(|a| a.outcome.as_ref().expect("published").offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);

    let mut received = Vec::new();
    let subscriber = cluster.nodes[2].client();
    let subscription = subscriber.subscribe(
        "large",
        synap::client::StartAt::Offset(0),
        synap::client::SubscribeOptions::default(),
        |r| {
            if let synap::client::Received::Event(e) = r {
                received.push(e);
            }
            match received.len() < sizes.len() {
                true => std::ops::ControlFlow::Continue(()),
                false => std::ops::ControlFlow::Break(()),
            }
        },
    );
    tokio::time::timeout(Duration::from_secs(30), subscription)
        .await
        .expect("three events within 30 s")
        .expect("the subscription ends cleanly");
    for (i, (event, size)) in received.iter().zip(sizes).enumerate() {
        assert_eq!(event.offset, i as u64);
        assert_eq!(event.data, json!({ "i": i, "pad": "x".repeat(size) }), "event {i} arrived whole");
    }
}
