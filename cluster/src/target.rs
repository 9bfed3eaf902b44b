//! The cluster under test and the faults that can be done to it: a set of
//! local `synap` processes, or the compose cluster's containers.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use synap_chaos::powercut::PowerDisk;
use synap_chaos::process::{free_port, Process};

/// How to reach and hurt one node.
pub struct Node {
    /// Node id.
    pub id: u64,
    /// Base URL from this process.
    pub url: String,
    /// Local target: the process, which knows how to start it again.
    process: Option<Process>,
    /// Compose target: the container name.
    container: Option<String>,
    /// Whether the node is meant to be running (not killed, not removed).
    pub up: bool,
    /// Whether it is paused (SIGSTOP / docker pause).
    pub paused: bool,
    /// Whether it is cut off the network (compose only).
    pub partitioned: bool,
    /// Local target with power cuts: the disk under its data directory.
    disk: Option<PowerDisk>,
}

/// How to run the local nodes.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// Put each node's data directory on a power-cut disk.
    pub power_cuts: bool,
    /// Extra `synap serve` arguments for every node.
    pub node_args: Vec<String>,
}

/// The cluster under test.
pub struct Target {
    /// Its nodes, including removed ones (`up == false`).
    pub nodes: Vec<Node>,
    kind: Kind,
}

enum Kind {
    Local { binary: PathBuf, dir: tempfile::TempDir, secret: String, options: LocalOptions },
    Compose { network: String },
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Target {
    /// Starts `n` local nodes of `binary` on free ports of 127.0.0.1.
    pub fn local(binary: PathBuf, n: usize, options: LocalOptions) -> Result<Self, String> {
        let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
        let secret = format!("chaos-{}", std::process::id());
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        let peers: Vec<String> =
            ports.iter().enumerate().map(|(i, p)| format!("{}=http://127.0.0.1:{p}", i + 1)).collect();
        let mut target = Target { nodes: Vec::new(), kind: Kind::Local { binary, dir, secret, options } };
        for (i, port) in ports.iter().enumerate() {
            let node = target.local_node(i as u64 + 1, *port, vec!["--peers".into(), peers.join(",")])?;
            target.nodes.push(node);
        }
        for i in 0..target.nodes.len() {
            target.start(i)?;
        }
        Ok(target)
    }

    fn local_node(&self, id: u64, port: u16, extra: Vec<String>) -> Result<Node, String> {
        let Kind::Local { binary, dir, secret, options } = &self.kind else {
            return Err("not a local target".into());
        };
        let (disk, data_dir) = if options.power_cuts {
            let mount = dir.path().join(format!("disk{id}"));
            std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
            let disk = PowerDisk::mount(&mount)
                .map_err(|e| format!("mounting a power-cut disk at {}: {e}", mount.display()))?;
            (Some(disk), mount.join("data"))
        } else {
            (None, dir.path().join(format!("node{id}")))
        };
        let mut args = vec![
            "serve".to_owned(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--cluster-secret".into(),
            secret.clone(),
        ];
        args.extend(extra);
        args.extend(options.node_args.iter().cloned());
        let log = dir.path().join(format!("node{id}.log"));
        let process = Process::new(binary, args, log).env("SYNAP_LOG", "synap=info,openraft=warn");
        Ok(Node {
            id,
            url: format!("http://127.0.0.1:{port}"),
            process: Some(process),
            container: None,
            up: false,
            paused: false,
            partitioned: false,
            disk,
        })
    }

    /// The compose cluster of `deploy/docker-compose.yml`, already running.
    pub fn compose(n: usize) -> Result<Self, String> {
        run("docker", &["info"]).map_err(|e| format!("docker is not available: {e}"))?;
        let nodes = (1..=n as u64)
            .map(|id| Node {
                id,
                url: format!("http://127.0.0.1:{}", 15500 + id),
                process: None,
                container: Some(format!("synap{id}")),
                up: true,
                paused: false,
                partitioned: false,
                disk: None,
            })
            .collect();
        Ok(Target { nodes, kind: Kind::Compose { network: "synap-net".into() } })
    }

    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Local { .. } => "local",
            Kind::Compose { .. } => "compose",
        }
    }

    /// Whether network partitions can be made here.
    pub fn can_partition(&self) -> bool {
        matches!(self.kind, Kind::Compose { .. })
    }

    /// Whether power can be cut here (local nodes on power-cut disks).
    pub fn can_cut_power(&self) -> bool {
        self.nodes.iter().any(|n| n.disk.is_some())
    }

    /// Whether nodes can be added and removed here.
    pub fn can_change_membership(&self) -> bool {
        matches!(self.kind, Kind::Local { .. })
    }

    /// URLs of the nodes that are meant to be members and running.
    pub fn live_urls(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.up).map(|n| n.url.clone()).collect()
    }

    /// Starts (or restarts) node `i` with its data.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        match (&mut node.process, &node.container) {
            (Some(process), _) => process.start().map_err(|e| e.to_string())?,
            (None, container) => run("docker", &["start", container.as_deref().unwrap_or_default()])?,
        }
        node.up = true;
        node.paused = false;
        Ok(())
    }

    /// SIGKILL node `i` (it stays down until [`Target::start`]).
    pub fn kill(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        match (&mut node.process, &node.container) {
            (Some(process), _) => {
                process.kill();
            }
            (None, container) => run("docker", &["kill", container.as_deref().unwrap_or_default()])?,
        }
        node.up = false;
        node.paused = false;
        Ok(())
    }

    /// Cuts the power of nodes `which` at once: kills each (`kill -9`),
    /// then drops from each disk everything that was not synced. They stay
    /// down until [`Target::start`].
    pub fn cut_power(&mut self, which: &[usize]) -> Result<(), String> {
        let mut dead = Vec::new();
        for &i in which {
            let node = &mut self.nodes[i];
            if node.disk.is_none() {
                return Err(format!("node {} is not on a power-cut disk", node.id));
            }
            if let Some(pid) = node.process.as_mut().and_then(Process::kill) {
                dead.push(pid);
            }
            node.up = false;
            node.paused = false;
        }
        for &i in which {
            if let Some(disk) = &self.nodes[i].disk {
                disk.cut(&dead);
            }
        }
        Ok(())
    }

    /// Freezes node `i` (SIGSTOP or `docker pause`).
    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        match (&mut node.process, &node.container) {
            (Some(process), _) => process.pause().map_err(|e| e.to_string())?,
            (None, container) => run("docker", &["pause", container.as_deref().unwrap_or_default()])?,
        }
        node.paused = true;
        Ok(())
    }

    /// Thaws node `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        match (&mut node.process, &node.container) {
            (Some(process), _) => process.resume().map_err(|e| e.to_string())?,
            (None, container) => run("docker", &["unpause", container.as_deref().unwrap_or_default()])?,
        }
        node.paused = false;
        Ok(())
    }

    /// Cuts node `i` off the cluster network (compose only).
    pub fn isolate(&mut self, i: usize) -> Result<(), String> {
        let Kind::Compose { network } = &self.kind else { return Err("partitions need the compose target".into()) };
        let node = &mut self.nodes[i];
        run("docker", &["network", "disconnect", network, node.container.as_deref().unwrap_or_default()])?;
        node.partitioned = true;
        Ok(())
    }

    /// Reconnects node `i` to the cluster network.
    pub fn reconnect(&mut self, i: usize) -> Result<(), String> {
        let Kind::Compose { network } = &self.kind else { return Ok(()) };
        let node = &mut self.nodes[i];
        let container = node.container.clone().unwrap_or_default();
        run("docker", &["network", "connect", "--alias", &container, network, &container])?;
        node.partitioned = false;
        Ok(())
    }

    /// Starts a new node that joins through a running member (local only).
    pub fn add_node(&mut self) -> Result<usize, String> {
        let via = self.live_urls().first().cloned().ok_or("no live node to join through")?;
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let port = free_port().map_err(|e| e.to_string())?;
        let node = self.local_node(id, port, vec!["--join".into(), via])?;
        self.nodes.push(node);
        let i = self.nodes.len() - 1;
        self.start(i)?;
        Ok(i)
    }

    /// Undoes every fault: thaws, reconnects and restarts what should run.
    pub fn heal(&mut self, members: &[u64]) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i)?;
            }
            if self.nodes[i].partitioned {
                self.reconnect(i)?;
            }
            if !self.nodes[i].up && members.contains(&self.nodes[i].id) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Last lines of each local node's log (for a failing report).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            if let Some(process) = &node.process {
                out.push_str(&format!("--- node {} ---\n{}\n", node.id, process.log_tail(lines)));
            }
        }
        out
    }

    /// Waits until every running member answers `/ready`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.up) {
            loop {
                let ready = http.get(format!("{}/ready", node.url)).send().await.is_ok_and(|r| r.status().is_success());
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("node {} not ready after {timeout:?}", node.id));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // A local process is thawed and killed when it drops; disks
            // unmount after it (field order of `Node`).
            if node.paused {
                if let Some(container) = &node.container {
                    let _ = Command::new("docker").args(["unpause", container]).status();
                }
            }
        }
    }
}
