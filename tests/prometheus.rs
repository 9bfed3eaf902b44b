//! Metrics as operators use them: every node's `/metrics` passes `promtool
//! check metrics`, and a real Prometheus (Debian package `prometheus`)
//! scraping a local cluster under load answers a publish rate and a publish
//! latency quantile.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use synap_chaos::process::Process;

/// The value of a one-element instant-vector answer, if there is one.
async fn query(prometheus: &str, expr: &str) -> Option<f64> {
    let url = format!("{prometheus}/api/v1/query");
    let answer: Value =
        reqwest::Client::new().get(&url).query(&[("query", expr)]).send().await.ok()?.json().await.ok()?;
    let result = answer["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_cluster_and_answers_a_publish_rate() {
    let promtool = program("SYNAP_PROMTOOL", &["promtool"], "prometheus");
    let prometheus_bin = program("SYNAP_PROMETHEUS", &["prometheus"], "prometheus");
    let cluster = Cluster::start(3, &[]);
    cluster.wait_ready(Duration::from_secs(30)).await;
    let load = Load::start(4, cluster.urls(), vec!["metered".to_owned()]);
    load.wait_acks(50, Duration::from_secs(30)).await;
    let audit = cluster.nodes[0].client().consumer("metered", "audit");
    audit.create(&Default::default()).await.expect("a consumer, for its series");

    let mut all_nodes = String::new();
    for node in &cluster.nodes {
        let text = reqwest::get(format!("{}/metrics", node.url)).await.unwrap().text().await.unwrap();
        assert!(text.contains("synap_room_published_total{room=\"metered\"}"), "node {}: {text}", node.id);
        assert!(text.contains("synap_publish_duration_seconds_bucket"), "node {}", node.id);
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        check.stdin.take().expect("stdin").write_all(text.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "node {}: promtool: {}{}",
            node.id,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        all_nodes.push_str(&text);
    }

    // The shipped dashboard asks only for series the nodes serve.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/synap.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            for name in words.filter(|w| w.starts_with("synap_")) {
                asked += 1;
                assert!(
                    all_nodes.lines().any(|line| line.starts_with(name)),
                    "panel {} asks for {name}, which no node serves",
                    panel["title"]
                );
            }
        }
    }
    assert!(asked > 10, "the dashboard asks for only {asked} series");

    let dir = tempfile::TempDir::new().unwrap();
    let targets: Vec<String> =
        cluster.nodes.iter().map(|n| format!("'{}'", n.url.trim_start_matches("http://"))).collect();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: synap\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Process::new(
        &prometheus_bin,
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir.path().join("prometheus.log"),
    );
    prometheus.start().expect("start prometheus");
    let url = format!("http://127.0.0.1:{port}");

    let (rate, p99) = (
        "sum(rate(synap_room_published_total{room=\"metered\"}[5s]))",
        "histogram_quantile(0.99, sum(rate(synap_publish_duration_seconds_bucket[5s])) by (le))",
    );
    wait_for(Duration::from_secs(60), "Prometheus to answer a publish rate above zero from the cluster", || {
        let url = url.clone();
        async move { query(&url, rate).await.is_some_and(|r| r > 0.0) }
    })
    .await;
    wait_for(Duration::from_secs(30), "Prometheus to answer a p99 publish latency", || {
        let url = url.clone();
        async move { query(&url, p99).await.is_some_and(|s| s > 0.0 && s.is_finite()) }
    })
    .await;
    wait_for(Duration::from_secs(30), "Prometheus to scrape all three nodes", || {
        let url = url.clone();
        async move { query(&url, "sum(up{job=\"synap\"})").await == Some(3.0) }
    })
    .await;
    load.stop().await;
}
