//! Fault injection on a seeded schedule: one fault at a time, each held for
//! a few seconds and then healed, so that a majority always comes back.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::target::Target;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// kill -9 a node (often the leader), restart it later with its data.
    Kill,
    /// Freeze a node (SIGSTOP / docker pause), thaw it later.
    Pause,
    /// Cut a node (often the leader) off the network, reconnect it later.
    Partition,
    /// kill -9 every node, restart them all.
    RestartAll,
    /// Add a node (join), or remove the one added last.
    Membership,
    /// Cut the power of one node, or of every node at once (local target):
    /// kill -9, drop every unsynced write, restart on what survived.
    PowerCut,
}

impl Fault {
    /// Parses a `--faults` entry.
    pub fn parse(name: &str) -> Result<Fault, String> {
        match name.trim() {
            "kill" => Ok(Fault::Kill),
            "pause" => Ok(Fault::Pause),
            "partition" => Ok(Fault::Partition),
            "restart-all" => Ok(Fault::RestartAll),
            "membership" => Ok(Fault::Membership),
            "powercut" => Ok(Fault::PowerCut),
            other => {
                Err(format!("unknown fault '{other}' (kill, pause, partition, restart-all, membership, powercut)"))
            }
        }
    }

    /// Its `--faults` name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::RestartAll => "restart-all",
            Fault::Membership => "membership",
            Fault::PowerCut => "powercut",
        }
    }
}

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct Injected {
    /// Which.
    pub fault: Fault,
    /// On which node(s).
    pub what: String,
    /// Seconds into the run it started.
    pub at: f64,
    /// How long it was held, in seconds.
    pub held: f64,
}

/// The fault schedule of a run.
pub struct Nemesis {
    faults: Vec<Fault>,
    rng: SmallRng,
    /// Voters the cluster should have (membership changes this).
    pub members: Vec<u64>,
    added: Vec<u64>,
    /// Whether a power cut has taken the whole cluster down yet.
    cut_whole_cluster: bool,
}

/// Asks the nodes who leads; `None` if no running node knows.
pub async fn leader(target: &Target) -> Option<u64> {
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().ok()?;
    for url in target.live_urls() {
        let Ok(response) = http.get(format!("{url}/admin/cluster")).send().await else { continue };
        let Ok(status) = response.json::<serde_json::Value>().await else { continue };
        if let Some(leader) = status["leader"].as_u64() {
            return Some(leader);
        }
    }
    None
}

impl Nemesis {
    /// A schedule over `faults`, reproducible from `seed`.
    pub fn new(faults: Vec<Fault>, seed: u64, members: Vec<u64>) -> Self {
        Self { faults, rng: SmallRng::seed_from_u64(seed), members, added: Vec::new(), cut_whole_cluster: false }
    }

    /// Injects one fault, holds it, heals it. Returns what was done.
    pub async fn strike(&mut self, target: &mut Target, started: Instant) -> Result<Option<Injected>, String> {
        if self.faults.is_empty() {
            return Ok(None);
        }
        let fault = self.faults[self.rng.random_range(0..self.faults.len())];
        let hold = Duration::from_millis(self.rng.random_range(1500..5000));
        let at = started.elapsed().as_secs_f64();
        // Half of the single-node faults go to the leader: that is where
        // they hurt.
        let leader = leader(target).await;
        let up: Vec<usize> =
            (0..target.nodes.len()).filter(|&i| target.nodes[i].up && !target.nodes[i].paused).collect();
        let pick = |rng: &mut SmallRng| -> Option<usize> {
            let leader_index = leader.and_then(|l| up.iter().copied().find(|&i| target.nodes[i].id == l));
            match leader_index {
                Some(i) if rng.random_bool(0.5) => Some(i),
                _ if up.is_empty() => None,
                _ => Some(up[rng.random_range(0..up.len())]),
            }
        };
        let what = match fault {
            Fault::Kill => {
                let Some(i) = pick(&mut self.rng) else { return Ok(None) };
                target.kill(i)?;
                tokio::time::sleep(hold).await;
                target.start(i)?;
                format!("node {}", target.nodes[i].id)
            }
            Fault::Pause => {
                let Some(i) = pick(&mut self.rng) else { return Ok(None) };
                target.pause(i)?;
                tokio::time::sleep(hold).await;
                target.resume(i)?;
                format!("node {}", target.nodes[i].id)
            }
            Fault::Partition => {
                let Some(i) = pick(&mut self.rng) else { return Ok(None) };
                target.isolate(i)?;
                tokio::time::sleep(hold).await;
                target.reconnect(i)?;
                format!("node {} isolated", target.nodes[i].id)
            }
            Fault::RestartAll => {
                for i in 0..target.nodes.len() {
                    if target.nodes[i].up {
                        target.kill(i)?;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let members = self.members.clone();
                target.heal(&members)?;
                "all nodes".to_owned()
            }
            Fault::Membership => self.change_membership(target).await?,
            Fault::PowerCut => {
                // The first cut, and half of the others, take the whole
                // cluster down at once: then no node's memory can make up
                // for another's disk.
                let whole_cluster = !self.cut_whole_cluster || self.rng.random_bool(0.5);
                self.cut_whole_cluster = true;
                if whole_cluster {
                    let running: Vec<usize> = (0..target.nodes.len()).filter(|&i| target.nodes[i].up).collect();
                    target.cut_power(&running)?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let members = self.members.clone();
                    target.heal(&members)?;
                    "all nodes".to_owned()
                } else {
                    let Some(i) = pick(&mut self.rng) else { return Ok(None) };
                    target.cut_power(&[i])?;
                    tokio::time::sleep(hold).await;
                    target.start(i)?;
                    format!("node {}", target.nodes[i].id)
                }
            }
        };
        Ok(Some(Injected { fault, what, at, held: started.elapsed().as_secs_f64() - at }))
    }

    async fn change_membership(&mut self, target: &mut Target) -> Result<String, String> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?;
        if let Some(id) = self.added.pop() {
            // Remove the node added last, through another node, then stop it.
            let via = target.nodes.iter().find(|n| n.up && n.id != id).map(|n| n.url.clone()).ok_or("no node")?;
            let response = http
                .delete(format!("{via}/admin/cluster/members/{id}"))
                .send()
                .await
                .map_err(|e| format!("remove node {id}: {e}"))?;
            if !response.status().is_success() {
                self.added.push(id);
                return Ok(format!("removing node {id} refused ({}), kept", response.status()));
            }
            self.members.retain(|m| *m != id);
            if let Some(i) = target.nodes.iter().position(|n| n.id == id) {
                target.kill(i)?;
            }
            Ok(format!("node {id} removed"))
        } else {
            let i = target.add_node()?;
            let id = target.nodes[i].id;
            self.members.push(id);
            self.added.push(id);
            Ok(format!("node {id} added"))
        }
    }
}
