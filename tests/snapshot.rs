//! Snapshots and log purge: a node that joins after the log was purged
//! receives the state as a snapshot, keeps it across a crash, and serves the
//! same history as everyone else; snapshots written while publishes go on
//! hold the state of their own point, not a mix of before and after.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_installs_a_snapshot_and_keeps_it_after_a_crash() {
    let mut cluster = Cluster::start(3, &["--snapshot-every", "40"]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let client = cluster.nodes[0].client();
    let room_names = vec!["snap-a".to_owned(), "snap-b".to_owned()];
    let mut acks = Vec::new();
    // One publish at a time: one log entry each, so the log grows past
    // several snapshot intervals.
    for i in 0..300usize {
        let room = &room_names[i % 2];
        let id = format!("s-{i}");
        let data = json!({ "i": i });
        let r = client.publish(room, "snap.test", &data, None, Some(&id)).await.expect("publish");
        acks.push(Ack { room: room.clone(), offset: r.offset, id, data });
    }
    client.stats("snap-a").await.expect("stats");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let leader_client = cluster.node(leader).client();
    wait_for(Duration::from_secs(30), "the leader to purge its log behind a snapshot", || {
        let c = leader_client.clone();
        async move { c.cluster_status().await.is_ok_and(|s| s.purged_index.is_some_and(|p| p > 100)) }
    })
    .await;

    let via = cluster.nodes[1].url.clone();
    cluster.add_joining_node(4, &via);
    wait_voter(&cluster.nodes[0].client(), 4, Duration::from_secs(60)).await;
    let joiner = cluster.node(4).client();
    wait_voter(&joiner, 4, Duration::from_secs(30)).await;
    let joined = joiner.cluster_status().await.expect("status of node 4");
    assert!(joined.snapshot_index.is_some(), "node 4 caught up without a snapshot: {joined:?}");

    let histories_before = histories(&cluster, &room_names, &acks, Duration::from_secs(30)).await;
    check_acks(&acks, &histories_before);

    // Crash the joiner and bring it back: the installed state is durable.
    cluster.node_mut(4).kill();
    cluster.node_mut(4).start();
    cluster.wait_ready(Duration::from_secs(30)).await;
    // One more publish after the restart: every node, the joiner included,
    // must reach it (the comparison waits for the highest acknowledged
    // offset on every node before it compares).
    let data = json!({ "after": true });
    let after = client.publish("snap-a", "snap.after", &data, None, Some("after")).await.expect("publish");
    acks.push(Ack { room: "snap-a".into(), offset: after.offset, id: "after".into(), data });
    let histories_after = histories(&cluster, &room_names, &acks, Duration::from_secs(30)).await;
    check_acks(&acks, &histories_after);
    assert_eq!(histories_after["snap-a"][&4].last().map(|e| e.offset), Some(after.offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_written_under_load_hold_their_point_and_a_joiner_installs_one() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let rooms = vec!["pit-a".to_owned(), "pit-b".to_owned()];
    let load = Load::start(8, cluster.urls(), rooms.clone());
    load.wait_acks(1_500, Duration::from_secs(120)).await;
    // Past the 100 entries kept behind a snapshot, so that the snapshots
    // below purge the head of the log (publishes share entries under load).
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let leader_client = cluster.node(leader).client();
    wait_for(Duration::from_secs(120), "the leader's log to pass 400 entries", || {
        let c = leader_client.clone();
        async move { c.cluster_status().await.is_ok_and(|s| s.last_log_index.is_some_and(|i| i > 400)) }
    })
    .await;

    // Every node writes a snapshot while the publishers go on: events are
    // applied during each write, and must not leak into it.
    let mut built = Vec::new();
    for node in &cluster.nodes {
        let client = node.client();
        built.push(tokio::spawn(async move { client.snapshot().await }));
    }
    for (node, answer) in cluster.nodes.iter().zip(built) {
        let answer = answer.await.expect("snapshot task").unwrap_or_else(|e| panic!("node {}: {e}", node.id));
        let index = answer["snapshot_index"].as_u64();
        assert!(index.is_some_and(|i| i > 0), "node {} answered {answer}", node.id);
    }
    let after = load.ack_count() + 500;
    load.wait_acks(after, Duration::from_secs(120)).await;

    // A node joining now cannot get the purged log: it installs one of
    // those snapshots, then applies what came after it.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let leader_client = cluster.node(leader).client();
    wait_for(Duration::from_secs(30), "the leader to purge its log behind its snapshot", || {
        let c = leader_client.clone();
        async move { c.cluster_status().await.is_ok_and(|s| s.purged_index.is_some()) }
    })
    .await;
    let via = cluster.nodes[0].url.clone();
    cluster.add_joining_node(4, &via);
    wait_voter(&cluster.node(4).client(), 4, Duration::from_secs(60)).await;
    let joined = cluster.node(4).client().cluster_status().await.expect("status of node 4");
    assert!(joined.snapshot_index.is_some(), "node 4 caught up without a snapshot: {joined:?}");
    let more = load.ack_count() + 200;
    load.wait_acks(more, Duration::from_secs(120)).await;

    let acks: Vec<Ack> = load.stop().await.into_iter().map(|a| a.ack).collect();
    let histories = histories(&cluster, &rooms, &acks, Duration::from_secs(60)).await;
    assert_eq!(histories["pit-a"].len(), 4, "every node, the joiner too, is compared");
    check_acks(&acks, &histories);
}
