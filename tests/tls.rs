//! TLS as operators run it: a three-node cluster over HTTPS with mutual TLS
//! on `/raft/*`, certificates made by `synap certs`, clients that check the
//! CA, WSS subscriptions, a joiner, and certificates replaced on SIGHUP.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};
use synap::client::{Client, Received, StartAt, SubscribeOptions};

/// `synap certs` into `dir` for one certificate, `node`, valid for
/// 127.0.0.1 and localhost; answers the CA's path.
fn make_certs(dir: &Path) -> PathBuf {
    let out = dir.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = synap(&["certs", "--out", out, "--name", "node", "--host", "127.0.0.1,localhost"]);
    assert_eq!(code, 0, "synap certs: {stderr}");
    let made: Value = serde_json::from_str(&stdout).expect("synap certs prints JSON");
    assert_eq!(made["nodes"][0]["cert"], json!(dir.join("node.pem")), "{stdout}");
    PathBuf::from(made["ca"].as_str().expect("the CA's path"))
}

fn tls_args(dir: &Path, ca: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).display().to_string();
    let ca = ca.display().to_string();
    [
        "--tls-cert",
        &path("node.pem"),
        "--tls-key",
        &path("node.key"),
        "--tls-ca",
        &ca,
        "--tls-client-ca",
        &ca,
        "--cluster-secret",
        "tls-test-secret",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mutual_tls_cluster_replicates_and_serves_https_and_wss() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_certs(certs.path());
    let args = tls_args(certs.path(), &ca);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, &arg_refs);
    assert!(cluster.nodes.iter().all(|n| n.url.starts_with("https://")));
    cluster.wait_ready(READY).await;

    // Publishes through every node: followers forward to the leader over
    // mutual TLS.
    for i in 0..30u64 {
        let node = &cluster.nodes[(i % 3) as usize];
        let ack = node.client().publish("secure", "order.created", &json!({ "n": i }), None, None).await.unwrap();
        assert_eq!(ack.offset, i, "dense offsets through node {}", node.id);
    }
    let histories = cluster.converged_history("secure", 30, READY).await;
    let first = &histories[&1];
    assert!(histories.values().all(|h| h == first), "every node holds the same history");

    // A WSS subscription from the start sees every event in order.
    let mut seen = Vec::new();
    let subscriber = cluster.nodes[2].client();
    let subscribed = subscriber.subscribe("secure", StartAt::Offset(0), SubscribeOptions::default(), |received| {
        if let Received::Event(event) = received {
            seen.push(event.data["n"].as_u64().expect("n"));
        }
        if seen.len() == 30 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    tokio::time::timeout(READY, subscribed).await.expect("30 events over WSS in time").unwrap();
    assert_eq!(seen, (0..30).collect::<Vec<u64>>());

    // A joiner gets the history over TLS too.
    let via = cluster.nodes[0].url.clone();
    let joiner = cluster.add_joining_node(4, &via);
    wait_voter(&cluster.nodes[0].client(), 4, READY).await;
    let joined = cluster.nodes[joiner].client();
    wait_for(READY, "the joiner to hold the 30 events", || {
        let joined = joined.clone();
        async move { joined.stats("secure").await.is_ok_and(|s| s.next_offset == 30) }
    })
    .await;
    assert_eq!(&joined.history_all("secure").await.unwrap(), first);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = cluster.nodes[0].url.replacen("https://", "http://", 1);
    let answer = reqwest::Client::new().get(format!("{plain}/health")).send().await;
    assert!(answer.is_err(), "plain HTTP must not be answered: {answer:?}");
    let hint = Client::new(&plain).ready().await.unwrap_err().to_string();
    assert!(hint.contains("does the node serve TLS? use https://"), "{hint}");

    // A client that does not know the CA refuses the node's certificate.
    let stranger = Client::new(&cluster.nodes[0].url).ready().await.unwrap_err().to_string();
    assert!(stranger.contains("UnknownIssuer"), "{stranger}");

    // /raft/* needs a client certificate: the secret alone is refused,
    // the node's certificate gets past the check (to a bad-body 400).
    let vote = format!("{}/raft/vote", cluster.nodes[0].url);
    let anonymous = synap::tls::client_config(Some(&ca), None).unwrap();
    let anonymous = synap::tls::http_client(Some(&anonymous), |b| b).unwrap();
    let refused = anonymous.post(&vote).header("x-synap-cluster-secret", "tls-test-secret").send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("client certificate"), "{body}");
    let identity = (certs.path().join("node.pem"), certs.path().join("node.key"));
    let member = synap::tls::client_config(Some(&ca), Some((&identity.0, &identity.1))).unwrap();
    let member = synap::tls::http_client(Some(&member), |b| b).unwrap();
    let garbage =
        member.post(&vote).header("x-synap-cluster-secret", "tls-test-secret").body("x").send().await.unwrap();
    assert_eq!(garbage.status(), 400, "a certified member's bad body is a 400, not a 403");

    // The command line with --ca.
    let url = cluster.nodes[1].url.clone();
    let ca_text = ca.display().to_string();
    let (code, _, stderr) = synap(&["publish", "secure", "cli.sent", "{\"n\":30}", "--url", &url, "--ca", &ca_text]);
    assert_eq!(code, 0, "synap publish --ca: {stderr}");
    let (code, stdout, stderr) = synap(&["history", "secure", "--from", "30", "--url", &url, "--ca", &ca_text]);
    assert_eq!(code, 0, "synap history --ca: {stderr}");
    let event: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!((event["offset"].as_u64(), event["event"].as_str()), (Some(30), Some("cli.sent")));
    let (code, _, stderr) = synap(&["health", "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
}

/// Copies the certificate and key of `from` over the files a node serves.
fn install(from: &Path, live: &Path) {
    for name in ["node.pem", "node.key"] {
        std::fs::copy(from.join(name), live.join(name)).unwrap();
    }
}

async fn ready_with(url: &str, ca: &Path) -> Result<(), String> {
    // A new client each time: a pooled connection would keep the
    // certificate it was opened with.
    Client::new(url).with_ca(ca).unwrap().ready().await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_replaced_on_sighup_and_a_broken_file_is_refused() {
    let (first, second, live) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first_ca = make_certs(first.path());
    let second_ca = make_certs(second.path());
    install(first.path(), live.path());
    let mut args = tls_args(live.path(), &first_ca);
    args.truncate(6); // no --tls-client-ca or secret on a one-node cluster
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = Cluster::start(1, &arg_refs);
    cluster.wait_ready(READY).await;
    let node = &cluster.nodes[0];
    let pid = node.pid().expect("running").to_string();
    let hangup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    ready_with(&node.url, &first_ca).await.unwrap();
    let refused = ready_with(&node.url, &second_ca).await.unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");

    // Another CA's certificate, and a SIGHUP: new connections get it.
    install(second.path(), live.path());
    hangup();
    wait_for(READY, "the node to serve the second CA's certificate", || {
        let url = node.url.clone();
        let ca = second_ca.clone();
        async move { ready_with(&url, &ca).await.is_ok() }
    })
    .await;
    let refused = ready_with(&node.url, &first_ca).await.unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");

    // A broken file is refused: the node keeps serving the last good one.
    std::fs::write(live.path().join("node.pem"), "not a certificate").unwrap();
    hangup();
    wait_for(READY, "the log to say the certificates were not reloaded", || {
        let log = node.log_tail(usize::MAX);
        async move { log.contains("TLS certificates not reloaded") }
    })
    .await;
    assert!(node.is_running(), "a bad reload must not stop the node");
    ready_with(&node.url, &second_ca).await.unwrap();
}

#[test]
fn a_tls_node_refuses_plain_peer_urls_and_unusable_files() {
    let certs = tempfile::tempdir().unwrap();
    let ca = make_certs(certs.path());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let args = tls_args(certs.path(), &ca);
    let mut plain_peers = vec!["serve", "--data-dir", &data, "--peers", "1=http://127.0.0.1:1,2=https://127.0.0.1:2"];
    plain_peers.extend(args.iter().map(String::as_str));
    let (code, _, stderr) = synap(&plain_peers);
    assert_eq!(code, 1);
    assert!(stderr.contains("--peers: http://127.0.0.1:1 is not https://"), "{stderr}");

    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let key = certs.path().join("node.key").display().to_string();
    let (code, _, stderr) =
        synap(&["serve", "--data-dir", &data, "--listen", &listen, "--tls-cert", &key, "--tls-key", &key]);
    assert_eq!(code, 1);
    assert!(stderr.contains("node.key: no PEM certificate in the file"), "{stderr}");
    let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(created.is_empty(), "nothing is created before the files check out: {created:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_moves_to_a_new_ca_on_sighup_and_its_nodes_still_reach_each_other() {
    let (old, new, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(old.path());
    make_certs(new.path());
    let live_ca = live.path().join("ca.pem");
    install(old.path(), live.path());
    std::fs::copy(old.path().join("ca.pem"), &live_ca).unwrap();
    let args = tls_args(live.path(), &live_ca);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start(3, &arg_refs);
    cluster.wait_ready(READY).await;
    let leader = cluster.leader(READY).await;
    let restarted = cluster.nodes.iter().map(|n| n.id).find(|id| *id != leader).expect("a follower");

    // Every file replaced by the new CA's; the running nodes reload. The
    // restarted follower's peers must open new connections to it, so they
    // must trust the new CA and present their new certificates (its
    // --tls-client-ca now names only the new CA).
    install(new.path(), live.path());
    std::fs::copy(new.path().join("ca.pem"), &live_ca).unwrap();
    cluster.node_mut(restarted).kill();
    for node in cluster.running() {
        let pid = node.pid().expect("running").to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }
    for node in cluster.running() {
        wait_for(READY, &format!("node {} to log the reload", node.id), || {
            let log = node.log_tail(usize::MAX);
            async move { log.contains("TLS certificates reloaded") }
        })
        .await;
    }
    cluster.node_mut(restarted).start();
    let client = cluster.node(leader).client();
    for i in 0..5 {
        client.publish("rotated", "tick", &json!({ "i": i }), None, None).await.unwrap();
    }
    let histories = cluster.converged_history("rotated", 5, READY).await;
    assert_eq!(histories.len(), 3, "the restarted node caught up over the new certificates");
    let first = &histories[&leader];
    assert!(histories.values().all(|h| h == first));
}
