//! Test harness: real `synap` processes on 127.0.0.1 with free ports and
//! temporary data directories (run through `synap_chaos::process`, as the
//! chaos tool runs its local nodes).
//!
//! Each test binary uses part of this module; what one does not use is not
//! dead code.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use synap::client::{Client, Event};
use synap_chaos::process::Process;
use tempfile::TempDir;

/// How long a node may take to become ready (elections, catching up).
pub const READY: Duration = Duration::from_secs(30);

/// Runs this build's `synap` with `args`; returns (exit code, stdout,
/// stderr).
pub fn synap(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synap")).args(args).output().expect("run synap");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// A program a test needs from Debian's `package`: the path in `env` if
/// set, else the first of `names` on PATH; fails saying what to install.
pub fn program(env: &str, names: &[&str], package: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    for name in names {
        let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().expect("sh");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        if !path.is_empty() {
            return PathBuf::from(path);
        }
    }
    panic!("{} not found: apt-get install {package} (or set {env})", names.join(" or "));
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    synap_chaos::process::free_port().expect("free port")
}

/// One `synap serve` process and how to restart it.
pub struct NodeProc {
    pub id: u64,
    pub url: String,
    pub data_dir: PathBuf,
    /// The CA its certificate is checked against (its `--tls-ca`), when it
    /// serves TLS.
    pub ca: Option<PathBuf>,
    process: Process,
}

/// The value of `flag` in `args`.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

/// `https` when `args` make a node serve TLS.
fn scheme(args: &[String]) -> &'static str {
    if args.iter().any(|a| a == "--tls-cert") {
        "https"
    } else {
        "http"
    }
}

impl NodeProc {
    /// A node of this build's binary with `args` (after `serve`), logging to
    /// `log`. Not started yet.
    pub fn new(id: u64, port: u16, data_dir: PathBuf, log: PathBuf, args: Vec<String>) -> NodeProc {
        let mut all = vec![
            "serve".to_owned(),
            "--id".to_owned(),
            id.to_string(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
        ];
        let url = format!("{}://127.0.0.1:{port}", scheme(&args));
        let ca = flag_value(&args, "--tls-ca").map(PathBuf::from);
        all.extend(args);
        let process =
            Process::new(Path::new(env!("CARGO_BIN_EXE_synap")), all, log).env("SYNAP_LOG", "synap=info,openraft=warn");
        NodeProc { id, url, data_dir, ca, process }
    }

    pub fn start(&mut self) {
        self.process.start().unwrap_or_else(|e| panic!("node {}: {e}", self.id));
    }

    /// SIGTERM (graceful: in-flight requests finish), and reap; SIGKILL if
    /// it has not exited after 10 s.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Adds `serve` flags for the next start.
    pub fn add_args(&mut self, more: &[&str]) {
        self.process.add_args(more);
    }

    /// How it ended, if it exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    pub fn client(&self) -> Client {
        let client = Client::new(&self.url);
        match &self.ca {
            Some(ca) => client.with_ca(ca).expect("the node's CA file loads"),
            None => client,
        }
    }
}

/// Clusters of one test binary run one at a time: a dozen nodes of several
/// tests fighting over two cores turn election and commit latencies into
/// noise.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A set of nodes sharing one temporary directory.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: TempDir,
    pub extra_args: Vec<String>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts `n` nodes with `--peers` listing all of them.
    pub fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Cluster::configure(n, extra_args);
        for node in &mut cluster.nodes {
            node.start();
        }
        cluster
    }

    /// Like [`Cluster::start`], without starting the nodes (to prepare
    /// their data directories first).
    pub fn configure(n: usize, extra_args: &[&str]) -> Cluster {
        // A test that failed while holding the lock poisons it; the lock
        // only orders tests, so the next one may go ahead.
        let turn = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = TempDir::new().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let scheme = scheme(&extra);
        let peers: Vec<String> =
            ports.iter().enumerate().map(|(i, p)| format!("{}={scheme}://127.0.0.1:{p}", i + 1)).collect();
        let peers = peers.join(",");
        let mut cluster = Cluster { nodes: Vec::new(), dir, extra_args: extra, _turn: turn };
        for (i, port) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let mut args = vec!["--peers".to_owned(), peers.clone()];
            args.extend(cluster.extra_args.clone());
            let node = cluster.make_node(id, *port, args);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn make_node(&self, id: u64, port: u16, extra: Vec<String>) -> NodeProc {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let log = self.dir.path().join(format!("node{id}.log"));
        NodeProc::new(id, port, data_dir, log, extra)
    }

    /// Starts a new node that joins through `via`.
    pub fn add_joining_node(&mut self, id: u64, via: &str) -> usize {
        let port = free_port();
        let mut extra = vec!["--join".to_owned(), via.to_owned()];
        extra.extend(self.extra_args.clone());
        let mut node = self.make_node(id, port, extra);
        node.start();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn node(&self, id: u64) -> &NodeProc {
        self.nodes.iter().find(|n| n.id == id).expect("no such node")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut NodeProc {
        self.nodes.iter_mut().find(|n| n.id == id).expect("no such node")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn running(&self) -> impl Iterator<Item = &NodeProc> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// Waits until every running node answers `/ready`.
    pub async fn wait_ready(&self, timeout: Duration) {
        let ids: Vec<u64> = self.running().map(|n| n.id).collect();
        for id in ids {
            let client = self.node(id).client();
            wait_for(timeout, &format!("node {id} to be ready"), || {
                let client = client.clone();
                async move { client.ready().await.is_ok() }
            })
            .await;
        }
    }

    /// Waits until every running node's state records that all members
    /// speak `protocol` (the leader records it within a second or two of
    /// forming the cluster): features of that protocol then go on while a
    /// member is down.
    pub async fn wait_protocol(&self, protocol: u32, timeout: Duration) {
        for node in self.running() {
            let client = node.client();
            wait_for(timeout, &format!("node {} to record protocol {protocol}", node.id), || {
                let client = client.clone();
                async move { client.cluster_status().await.is_ok_and(|s| s.protocol >= protocol) }
            })
            .await;
        }
    }

    /// The leader id as the running nodes agree on it.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        let clients: Vec<Client> = self.running().map(|n| n.client()).collect();
        let mut found = None;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut leaders = Vec::new();
            for client in &clients {
                if let Ok(status) = client.cluster_status().await {
                    leaders.push(status.leader);
                }
            }
            if leaders.len() == clients.len() && leaders.windows(2).all(|w| w[0] == w[1]) {
                if let Some(Some(leader)) = leaders.first() {
                    if self.nodes.iter().any(|n| n.id == *leader && n.is_running()) {
                        found = Some(*leader);
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.unwrap_or_else(|| panic!("running nodes did not agree on a live leader within {timeout:?}"))
    }

    /// Waits until `room` has `count` events on every running node, then
    /// returns each node's full history of it.
    pub async fn converged_history(&self, room: &str, count: u64, timeout: Duration) -> BTreeMap<u64, Vec<Event>> {
        let mut histories = BTreeMap::new();
        for node in self.running() {
            let client = node.client();
            let what = format!("node {} to hold {count} events in {room}", node.id);
            wait_for(timeout, &what, || {
                let client = client.clone();
                async move { client.stats(room).await.is_ok_and(|s| s.next_offset >= count) }
            })
            .await;
            histories.insert(node.id, client.history_all(room).await.expect("history"));
        }
        histories
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes {
            // A panic's message may be far above the last lines.
            let whole = node.log_tail(usize::MAX);
            let panics: Vec<&str> = whole.lines().filter(|l| l.contains("panicked")).take(20).collect();
            if !panics.is_empty() {
                eprintln!("----- node {} panics -----\n{}", node.id, panics.join("\n"));
            }
            eprintln!("----- node {} log (last 40 lines) -----\n{}", node.id, node.log_tail(40));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Polls `check` until it holds, failing with `what` after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `client`'s node lists node `id` as a voter.
pub async fn wait_voter(client: &Client, id: u64, timeout: Duration) {
    let what = format!("{} to list node {id} as a voter", client.base_url());
    wait_for(timeout, &what, || {
        let client = client.clone();
        async move { client.cluster_status().await.is_ok_and(|s| s.members.iter().any(|m| m.id == id && m.voter)) }
    })
    .await;
}

/// Raw HTTP for tests that check status codes and bodies.
pub async fn raw(method: reqwest::Method, url: &str, body: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url).timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// An acknowledged publish: what was sent and where it landed.
#[derive(Debug, Clone)]
pub struct Ack {
    pub room: String,
    pub offset: u64,
    pub id: String,
    pub data: Value,
}

/// Checks `acks` against the histories of every node: each acknowledged
/// offset holds exactly the acknowledged event, offsets are dense from 0, and
/// all nodes hold identical histories.
pub fn check_acks(acks: &[Ack], histories: &BTreeMap<String, BTreeMap<u64, Vec<Event>>>) {
    for (room, per_node) in histories {
        let mut reference: Option<(&u64, &Vec<Event>)> = None;
        for (node, events) in per_node {
            for (i, event) in events.iter().enumerate() {
                assert_eq!(event.offset, i as u64, "node {node} room {room}: offsets not dense at position {i}");
            }
            match reference {
                None => reference = Some((node, events)),
                Some((ref_node, ref_events)) => {
                    assert_eq!(ref_events, events, "room {room}: node {node} differs from node {ref_node}")
                }
            }
        }
    }
    for ack in acks {
        let per_node = histories.get(&ack.room).unwrap_or_else(|| panic!("room {} missing", ack.room));
        for (node, events) in per_node {
            let event = events
                .get(ack.offset as usize)
                .unwrap_or_else(|| panic!("node {node}: acknowledged {}@{} is missing", ack.room, ack.offset));
            assert_eq!(event.id, ack.id, "node {node}: {}@{} holds another event", ack.room, ack.offset);
            assert_eq!(event.data, ack.data, "node {node}: {}@{} has other data", ack.room, ack.offset);
        }
    }
}

/// An acknowledged publish of a [`Load`], with when it was sent and when
/// its acknowledgement arrived.
#[derive(Debug, Clone)]
pub struct Acked {
    pub sent: Instant,
    pub done: Instant,
    pub ack: Ack,
}

/// Background publishers: each task publishes to `rooms` through `urls`
/// in turn until stopped, recording every acknowledgement and failure.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub acks: std::sync::Arc<std::sync::Mutex<Vec<Acked>>>,
    pub failures: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Load {
    pub fn start(publishers: usize, urls: Vec<String>, rooms: Vec<String>) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for p in 0..publishers {
            let (stop, acks, failures) = (stop.clone(), acks.clone(), failures.clone());
            let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();
            let rooms = rooms.clone();
            tasks.push(tokio::spawn(async move {
                let mut seq = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let client = &clients[(p + seq) % clients.len()];
                    let room = &rooms[(p + seq) % rooms.len()];
                    let id = format!("p{p}-{seq}");
                    let data = serde_json::json!({ "publisher": p, "seq": seq });
                    let sent = Instant::now();
                    match client.publish(room, "load.tick", &data, None, Some(&id)).await {
                        Ok(r) => acks.lock().unwrap().push(Acked {
                            sent,
                            done: Instant::now(),
                            ack: Ack { room: room.clone(), offset: r.offset, id, data },
                        }),
                        Err(e) => {
                            failures.lock().unwrap().push((Instant::now(), e.to_string()));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    seq += 1;
                }
            }));
        }
        Load { stop, tasks, acks, failures }
    }

    pub fn ack_count(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Waits until at least `n` publishes were acknowledged.
    pub async fn wait_acks(&self, n: usize, timeout: Duration) {
        let acks = self.acks.clone();
        wait_for(timeout, &format!("{n} acknowledged publishes"), || {
            let acks = acks.clone();
            async move { acks.lock().unwrap().len() >= n }
        })
        .await;
    }

    /// Stops the publishers and returns every acknowledgement.
    pub async fn stop(self) -> Vec<Acked> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("publisher task");
        }
        let acks = self.acks.lock().unwrap().clone();
        acks
    }
}

/// Every node's full history of every room in `rooms`.
pub async fn histories(
    cluster: &Cluster,
    rooms: &[String],
    acks: &[Ack],
    timeout: Duration,
) -> BTreeMap<String, BTreeMap<u64, Vec<Event>>> {
    let mut all = BTreeMap::new();
    for room in rooms {
        let expected = acks.iter().filter(|a| &a.room == room).map(|a| a.offset + 1).max().unwrap_or(0);
        all.insert(room.clone(), cluster.converged_history(room, expected, timeout).await);
    }
    all
}
