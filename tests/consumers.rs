//! Durable consumers on a real cluster: leases, redelivery, dead letters
//! and naks; state identical on every node (one caught up through a
//! snapshot) and kept across workers; competing workers on different
//! nodes through a leader kill.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use synap::client::{Client, ConsumerOptions, NamedStart, StartSpec};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unacked_message_is_redelivered_then_dead_lettered_and_a_nak_brings_one_back_at_once() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    let client = Client::cluster(&cluster.urls());
    let consumer = client.consumer("payments", "billing");
    let options = ConsumerOptions {
        ack_wait_ms: Some(300),
        max_deliver: Some(3),
        dead_letter: Some("payments-dead".into()),
        ..Default::default()
    };
    let created = consumer.create(&options).await.expect("create");
    assert_eq!((created.next_offset, created.pending, created.config.max_deliver), (0, 0, 3));
    let meta = json!({ "correlation_id": "c-1" });
    let poison = client.publish("payments", "payment.failed", &json!({ "n": 1 }), Some(&meta), None).await.unwrap();

    // Never acked: delivered three times, each after the last lease ended.
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let fetch = consumer.fetch(10, Duration::from_secs(5)).await.expect("fetch");
        let got: Vec<(u64, u32)> = fetch.messages.iter().map(|m| (m.event.offset, m.delivery)).collect();
        deliveries.extend(got);
    }
    assert_eq!(deliveries, vec![(poison.offset, 1), (poison.offset, 2), (poison.offset, 3)]);

    // Then it moves to the dead-letter room (the leader's housekeeping
    // does it without any fetch), with its origin in the metadata.
    let dead = client.clone();
    wait_for(WAIT, "the message in payments-dead", || {
        let dead = dead.clone();
        async move { dead.history("payments-dead", 0, 10).await.is_ok_and(|p| p.events.len() == 1) }
    })
    .await;
    let moved = client.history("payments-dead", 0, 10).await.unwrap().events.remove(0);
    assert_eq!((moved.event.as_str(), &moved.data), ("payment.failed", &json!({ "n": 1 })));
    assert_eq!(moved.metadata["correlation_id"], "c-1");
    assert_eq!(moved.metadata["dead_letter_room"], "payments");
    assert_eq!(moved.metadata["dead_letter_consumer"], "billing");
    assert_eq!(moved.metadata["dead_letter_deliveries"], "3");
    let info = consumer.info().await.unwrap();
    assert_eq!((info.dead_lettered, info.pending, info.lag, info.redelivered), (1, 0, 0, 2));

    // A nak'd message comes back at once, before its lease would end.
    let next = client.publish("payments", "payment.completed", &json!({ "n": 2 }), None, None).await.unwrap();
    let long = ConsumerOptions { ack_wait_ms: Some(60_000), ..options.clone() };
    assert!(consumer.create(&long).await.is_ok());
    let first = consumer.fetch(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.messages.iter().map(|m| (m.event.offset, m.delivery)).collect::<Vec<_>>(), vec![(next.offset, 1)]);
    assert_eq!(consumer.nak(&[next.offset], Duration::ZERO).await.unwrap(), 1);
    let again = consumer.fetch(1, Duration::ZERO).await.unwrap();
    assert_eq!(again.messages.iter().map(|m| (m.event.offset, m.delivery)).collect::<Vec<_>>(), vec![(next.offset, 2)]);
    assert_eq!(consumer.ack(&[next.offset]).await.unwrap(), 1);
    assert_eq!(consumer.ack(&[next.offset]).await.unwrap(), 0, "a second ack finds nothing pending");
    let stats = client.stats("payments").await.unwrap();
    assert_eq!(stats.consumers, vec!["billing".to_owned()]);
    let (status, metrics) = raw(reqwest::Method::GET, &format!("{}/metrics", cluster.nodes[0].url), None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    for line in [
        r#"synap_consumer_dead_lettered{room="payments",consumer="billing"} 1"#,
        r#"synap_consumer_redelivered{room="payments",consumer="billing"} 3"#,
        r#"synap_consumer_lag{room="payments",consumer="billing"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line} in /metrics:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_consumer_requests_get_a_4xx_and_change_nothing() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_ready(WAIT).await;
    let url = &cluster.nodes[0].url;
    let put = |body: &'static str| {
        let url = format!("{url}/stream/orders/consumers/email");
        async move { raw(reqwest::Method::PUT, &url, Some(body)).await }
    };
    for (body, needle) in [
        (r#"{"max_ack_pending":0}"#, "max_ack_pending"),
        (r#"{"ack_wait_ms":0}"#, "ack_wait_ms"),
        (r#"{"dead_letter":"orders"}"#, "dead_letter"),
        (r#"{"types":"a..b"}"#, "types"),
        (r#"{"start":"yesterday"}"#, "start"),
        (r#"{"colour":"red"}"#, "colour"),
    ] {
        let (status, answer) = put(body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert!(answer["error"].as_str().unwrap_or("").contains(needle), "{body} -> {answer}");
    }
    let (status, answer) = raw(reqwest::Method::GET, &format!("{url}/stream/orders/consumers/email"), None).await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = put(r#"{"start":"latest"}"#).await;
    assert_eq!(status, 201);
    let (status, answer) = put(r#"{"start":"latest"}"#).await;
    assert_eq!((status, answer["config"]["start"].clone()), (200, json!("latest")));
    let fetch = format!("{url}/stream/orders/consumers/email/fetch");
    for body in [r#"{"max":0}"#, r#"{"max":1001}"#, r#"{"wait_ms":30001}"#] {
        let (status, answer) = raw(reqwest::Method::POST, &fetch, Some(body)).await;
        assert_eq!(status, 400, "{body} -> {answer}");
    }
    let ack = format!("{url}/stream/orders/consumers/email/ack");
    for body in [r#"{"offsets":[]}"#, r#"{"offsets":[1],"delay_ms":5}"#, r#"{"offsets":"1"}"#] {
        let (status, answer) = raw(reqwest::Method::POST, &ack, Some(body)).await;
        assert_eq!(status, 400, "{body} -> {answer}");
    }
    let (status, _) =
        raw(reqwest::Method::POST, &format!("{url}/stream/orders/consumers/nobody/fetch"), Some("{}")).await;
    assert_eq!(status, 404);
    let client = cluster.nodes[0].client();
    let info = client.consumer("orders", "email").info().await.unwrap();
    assert_eq!((info.delivered, info.pending, info.config.start), (0, 0, StartSpec::Named(NamedStart::Latest)));

    // A fetch with nothing ready waits for an event (sent while the fetch
    // is on its way or waiting, it answers with the event, not empty).
    let waiting = {
        let consumer = client.consumer("orders", "email");
        tokio::spawn(async move { consumer.fetch(5, Duration::from_secs(20)).await })
    };
    let published = client.publish("orders", "order.created", &json!({ "late": true }), None, None).await.unwrap();
    let fetched = waiting.await.expect("task").expect("fetch");
    let got: Vec<u64> = fetched.messages.iter().map(|m| m.event.offset).collect();
    assert_eq!(got, vec![published.offset]);
}

/// Every running node's view of the consumer, once they all agree.
async fn agreed_info(cluster: &Cluster, room: &str, name: &str) -> Value {
    let clients: Vec<Client> = cluster.running().map(|n| n.client()).collect();
    let agreed = Arc::new(Mutex::new(Value::Null));
    let found = agreed.clone();
    wait_for(WAIT, "every node to show the same consumer state", || {
        let clients = clients.clone();
        let found = found.clone();
        async move {
            let mut views = Vec::new();
            for client in &clients {
                match client.consumer(room, name).info().await {
                    Ok(info) => views.push(serde_json::to_value(info).expect("json")),
                    Err(_) => return false,
                }
            }
            let same = views.windows(2).all(|w| w[0] == w[1]);
            if same {
                *found.lock().unwrap() = views[0].clone();
            }
            same
        }
    })
    .await;
    let value = agreed.lock().unwrap().clone();
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_state_is_the_same_on_every_node_and_a_new_worker_resumes_after_the_last_ack() {
    let mut cluster = Cluster::start(3, &["--snapshot-every", "40"]);
    cluster.wait_ready(WAIT).await;
    let client = cluster.nodes[0].client();
    let consumer = client.consumer("orders", "email");
    // Leases far longer than the test, so that no lease ends while the
    // messages are fetched however slow the machine (an ended lease would
    // hand an unacked message out again among new ones); the unacked ones
    // are handed back with a nak below instead.
    let options = ConsumerOptions { ack_wait_ms: Some(600_000), types: Some("order.*".into()), ..Default::default() };
    consumer.create(&options).await.expect("create");
    // One entry per publish and per ack, so the log outgrows several
    // snapshot intervals.
    for i in 0..120u64 {
        let event = if i % 3 == 2 { "user.registered" } else { "order.created" };
        client.publish("orders", event, &json!({ "i": i }), None, None).await.expect("publish");
    }
    let mut acked = BTreeSet::new();
    let mut unacked = BTreeSet::new();
    for _ in 0..20 {
        let fetch = consumer.fetch(3, Duration::ZERO).await.expect("fetch");
        for (k, message) in fetch.messages.iter().enumerate() {
            assert_eq!(message.event.event, "order.created", "the filter lets only order.* through");
            if k == 2 {
                unacked.insert(message.event.offset);
            } else {
                consumer.ack(&[message.event.offset]).await.expect("ack");
                acked.insert(message.event.offset);
            }
        }
    }
    assert_eq!((acked.len(), unacked.len()), (40, 20));
    let leader = cluster.leader(WAIT).await;
    let leader_client = cluster.node(leader).client();
    wait_for(WAIT, "the leader to purge its log behind a snapshot", || {
        let c = leader_client.clone();
        async move { c.cluster_status().await.is_ok_and(|s| s.purged_index.is_some_and(|p| p > 100)) }
    })
    .await;
    let via = cluster.nodes[1].url.clone();
    cluster.add_joining_node(4, &via);
    wait_voter(&cluster.nodes[0].client(), 4, Duration::from_secs(60)).await;
    let joined = cluster.node(4).client().cluster_status().await.expect("status of node 4");
    assert!(joined.snapshot_index.is_some(), "node 4 caught up without a snapshot: {joined:?}");

    let info = agreed_info(&cluster, "orders", "email").await;
    assert_eq!(info["acked"], 40);
    assert_eq!(info["pending"], 20);
    // 120 events, 80 of them order.created: 60 delivered (20 of them not
    // acked), 20 not yet.
    assert_eq!(info["lag"], 40);
    assert_eq!(info["ack_floor"], unacked.first().copied().unwrap());

    // A new worker on the joined node gets the unacked messages once they
    // are handed back, and the new ones; never an acked one.
    let unacked_offsets: Vec<u64> = unacked.iter().copied().collect();
    assert_eq!(consumer.nak(&unacked_offsets, Duration::ZERO).await.expect("nak"), 20);
    let worker = cluster.node(4).client().consumer("orders", "email");
    let mut seen = Vec::new();
    // 80 order.created events: 60 delivered (20 unacked), 20 never.
    while seen.len() < 40 {
        let fetch = worker.fetch(50, Duration::from_secs(5)).await.expect("fetch");
        assert!(!fetch.messages.is_empty(), "nothing more after {} messages", seen.len());
        let offsets: Vec<u64> = fetch.messages.iter().map(|m| m.event.offset).collect();
        worker.ack(&offsets).await.expect("ack");
        seen.extend(fetch.messages.iter().map(|m| (m.event.offset, m.delivery)));
    }
    // Each unacked message once more (its second delivery), each new one
    // once, no acked one.
    let seen: BTreeMap<u64, u32> = seen.into_iter().collect();
    assert_eq!(seen.len(), 40, "a message came twice");
    for offset in &unacked {
        assert_eq!(seen.get(offset), Some(&2), "unacked offset {offset}");
    }
    assert!(seen.keys().all(|o| !acked.contains(o)), "an acked message came back");
    assert!(seen.iter().filter(|(o, _)| !unacked.contains(o)).all(|(_, d)| *d == 1));
    let info = agreed_info(&cluster, "orders", "email").await;
    assert_eq!((info["acked"].clone(), info["pending"].clone(), info["lag"].clone()), (json!(80), json!(0), json!(0)));
}

/// Retries a KV operation through elections (503) until it answers.
async fn kv_retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, synap::client::ClientError>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what} failed for {WAIT:?}: {e}"),
        }
    }
}

/// What one worker saw: every (offset, delivery) it was handed, and the
/// offsets whose side effect it performed.
#[derive(Default)]
struct WorkerLog {
    deliveries: Vec<(u64, u32)>,
    effects: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_on_different_nodes_share_the_work_through_a_leader_kill() {
    const EVENTS: u64 = 5_000;
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    // Until the cluster records protocol 5, a member that is down blocks
    // consumers (it might be an older version).
    cluster.wait_protocol(5, WAIT).await;
    let leader = cluster.leader(WAIT).await;
    let followers: Vec<u64> = cluster.nodes.iter().map(|n| n.id).filter(|id| *id != leader).collect();
    let setup = cluster.node(leader).client();
    setup
        .consumer("jobs", "workers")
        .create(&ConsumerOptions { ack_wait_ms: Some(10_000), max_deliver: Some(0), ..Default::default() })
        .await
        .expect("create");
    for start in (0..EVENTS).step_by(1000) {
        let events: Vec<Value> =
            (start..start + 1000).map(|i| json!({ "event": "job.created", "data": { "job": i } })).collect();
        let url = format!("{}/stream/jobs/batch", cluster.node(leader).url);
        let (status, answer) = raw(reqwest::Method::POST, &url, Some(&json!({ "events": events }).to_string())).await;
        assert_eq!(status, 200, "{answer}");
    }

    // One worker on each follower; each knows every node (the consumer
    // handle moves on when its node is unavailable).
    let mut workers = Vec::new();
    for (w, id) in followers.iter().enumerate() {
        let mut urls = vec![cluster.node(*id).url.clone()];
        urls.extend(cluster.urls().into_iter().filter(|u| *u != cluster.node(*id).url));
        let client = Client::cluster(&urls);
        let log = Arc::new(Mutex::new(WorkerLog::default()));
        let seen = log.clone();
        let task = tokio::spawn(async move {
            let consumer = client.consumer("jobs", "workers");
            let token = format!("worker-{w}");
            loop {
                let fetch = consumer.fetch(50, Duration::from_millis(500)).await.expect("fetch");
                if fetch.messages.is_empty() {
                    let info = consumer.info().await.expect("info");
                    if info.acked >= EVENTS {
                        return;
                    }
                    continue;
                }
                let mut done = Vec::new();
                for message in &fetch.messages {
                    let offset = message.event.offset;
                    seen.lock().unwrap().deliveries.push((offset, message.delivery));
                    // The side effect, guarded: whoever sets the key first
                    // does it; a set whose answer was lost is recognised by
                    // the token it left.
                    let key = format!("jobs-done-{offset}");
                    let node = client.clone();
                    let written = kv_retry("kv set", || node.kv_set(&key, &token, None, true)).await;
                    let mine = written || kv_retry("kv get", || node.kv_get(&key)).await.as_deref() == Some(&token);
                    if mine {
                        seen.lock().unwrap().effects.push(offset);
                    }
                    done.push(offset);
                }
                consumer.ack(&done).await.expect("ack");
            }
        });
        workers.push((task, log));
    }

    // Kill the leader once a fifth of the work is done.
    let info_client = cluster.node(followers[0]).client();
    wait_for(WAIT, "a fifth of the jobs acked", || {
        let c = info_client.clone();
        async move { c.consumer("jobs", "workers").info().await.is_ok_and(|i| i.acked >= EVENTS / 5) }
    })
    .await;
    cluster.node_mut(leader).kill();
    for (task, _) in &mut workers {
        tokio::time::timeout(Duration::from_secs(120), task).await.expect("workers finish").expect("worker");
    }

    let mut deliveries: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    let mut effects: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_worker = Vec::new();
    for (_, log) in &workers {
        let log = log.lock().unwrap();
        per_worker.push(log.deliveries.len());
        for delivery in &log.deliveries {
            *deliveries.entry(*delivery).or_default() += 1;
        }
        for offset in &log.effects {
            *effects.entry(*offset).or_default() += 1;
        }
    }
    // No lease was handed out twice: each delivery number of a message
    // went to one fetch.
    let doubled: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "leased twice at once: {doubled:?}");
    let processed: BTreeSet<u64> = deliveries.keys().map(|(offset, _)| *offset).collect();
    assert_eq!(processed.len() as u64, EVENTS, "every job delivered at least once");
    let twice: Vec<_> = effects.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "side effects not exactly once: {twice:?}");
    assert_eq!(effects.len() as u64, EVENTS);
    assert!(per_worker.iter().all(|n| *n > 0), "both workers got work: {per_worker:?}");
    let info = agreed_info(&cluster, "jobs", "workers").await;
    assert_eq!(
        (info["acked"].clone(), info["pending"].clone(), info["lag"].clone()),
        (json!(EVENTS), json!(0), json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_push_socket_never_has_more_than_max_ack_pending_messages_unacked() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const EVENTS: u64 = 50;
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    let client = cluster.nodes[1].client();
    let consumer = client.consumer("clicks", "analytics");
    let options = ConsumerOptions { max_ack_pending: Some(10), ack_wait_ms: Some(60_000), ..Default::default() };
    consumer.create(&options).await.expect("create");
    for i in 0..EVENTS {
        client.publish("clicks", "page.viewed", &json!({ "i": i }), None, None).await.expect("publish");
    }
    let url = format!("{}/stream/clicks/consumers/analytics/ws", cluster.nodes[1].url.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let mut unacked: BTreeSet<u64> = BTreeSet::new();
    let mut received: BTreeSet<u64> = BTreeSet::new();
    let mut most_unacked = 0;
    let mut held_back = false;
    while received.len() < EVENTS as usize {
        let next = tokio::time::timeout(WAIT, socket.next()).await.expect("a frame within the wait");
        let Some(Ok(Message::Text(text))) = next else { panic!("socket ended: {next:?}") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            Some("message") => {
                let offset = frame["offset"].as_u64().unwrap();
                assert_eq!(frame["delivery"], 1, "nothing is redelivered within the lease");
                assert!(received.insert(offset), "offset {offset} came twice");
                unacked.insert(offset);
                most_unacked = most_unacked.max(unacked.len());
                assert!(unacked.len() <= 10, "{} messages out unacked", unacked.len());
            }
            Some("acked") => {
                for offset in frame["offsets"].as_array().unwrap() {
                    unacked.remove(&offset.as_u64().unwrap());
                }
            }
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
        if unacked.len() == 10 && !held_back {
            // Hold all ten: the server has leased all it may, whoever asks.
            held_back = true;
            let info = consumer.info().await.unwrap();
            assert_eq!((info.pending, info.delivered), (10, 10));
            let fetch = client.consumer("clicks", "analytics").fetch(5, Duration::ZERO).await.unwrap();
            assert!(fetch.messages.is_empty(), "a fetch got {} past max_ack_pending", fetch.messages.len());
        }
        if unacked.len() == 10 {
            // Ack three at a time: at most three more come.
            let three: Vec<u64> = unacked.iter().take(3).copied().collect();
            let frame = json!({ "type": "ack", "offsets": three });
            socket.send(Message::Text(frame.to_string().into())).await.unwrap();
            for offset in three {
                unacked.remove(&offset);
            }
        }
    }
    assert_eq!(most_unacked, 10);
    let rest: Vec<u64> = unacked.iter().copied().collect();
    socket.send(Message::Text(json!({ "type": "ack", "offsets": rest }).to_string().into())).await.unwrap();
    let info = client.consumer("clicks", "analytics");
    wait_for(WAIT, "every message acked", || {
        let info = info.clone();
        async move { info.info().await.is_ok_and(|i| i.acked == EVENTS && i.pending == 0) }
    })
    .await;
    socket.send(Message::Text(r#"{"type":"ack"}"#.into())).await.unwrap();
    let error = loop {
        let next = tokio::time::timeout(WAIT, socket.next()).await.expect("an answer");
        let Some(Ok(Message::Text(text))) = next else { panic!("socket ended: {next:?}") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "error" {
            break frame;
        }
    };
    assert_eq!(error["status"], 400, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_delivery_moves_to_another_node_when_its_node_dies() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use synap::client::Settle;

    const EVENTS: u64 = 300;
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(WAIT).await;
    cluster.wait_protocol(5, WAIT).await;
    let leader = cluster.leader(WAIT).await;
    let doomed = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).unwrap();
    let mut urls = vec![cluster.node(doomed).url.clone()];
    urls.extend(cluster.urls().into_iter().filter(|u| *u != cluster.node(doomed).url));
    let client = Client::cluster(&urls);
    let consumer = client.consumer("clicks", "analytics");
    let options = ConsumerOptions { ack_wait_ms: Some(2_000), max_ack_pending: Some(20), ..Default::default() };
    consumer.create(&options).await.expect("create");
    let publisher = cluster.node(leader).client();
    let publishing = tokio::spawn(async move {
        for i in 0..EVENTS {
            publisher.publish("clicks", "page.viewed", &json!({ "i": i }), None, None).await.expect("publish");
        }
    });
    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicU64::new(0));
    let pushing = {
        let (handled, count, consumer) = (handled.clone(), count.clone(), consumer.clone());
        tokio::spawn(async move {
            consumer
                .push(|message| {
                    let mut handled = handled.lock().unwrap();
                    handled.insert(message.event.offset);
                    count.fetch_add(1, Ordering::SeqCst);
                    if handled.len() as u64 == EVENTS {
                        Settle::Stop
                    } else {
                        Settle::Ack
                    }
                })
                .await
        })
    };
    let counter = count.clone();
    wait_for(WAIT, "a third of the events pushed", || {
        let counter = counter.clone();
        async move { counter.load(Ordering::SeqCst) >= EVENTS / 3 }
    })
    .await;
    cluster.node_mut(doomed).kill();
    publishing.await.expect("publisher");
    tokio::time::timeout(Duration::from_secs(60), pushing).await.expect("push ends").expect("task").expect("push");
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled, (0..EVENTS).collect::<BTreeSet<u64>>(), "every event handled");
}
