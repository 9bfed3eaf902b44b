//! One cluster member: its Raft instance, its applied store, and the write
//! path that gets a client's request committed wherever the leader is.
//!
//! Writes go api → [`Node::write`] → (this node's [`Proposer`] if it leads,
//! else the leader's via [`Forwarder`]) → Raft → state machine. A write is
//! answered only once this node has applied it, so a client reading from the
//! node it wrote through sees its own write.

pub mod budget;
pub mod cluster;
pub mod forward;
mod housekeeping;
pub mod identity;
mod lifecycle;
pub mod proposer;
mod protocols;
pub mod readiness;
pub mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::base_url::BaseUrl;
use crate::command::{Reply, Request};
use crate::hub::Hub;
use crate::peer::PeerClient;
use crate::raft::log_store::LogStore;
use crate::raft::{NodeId, Raft};
use crate::store::Store;
use forward::{ForwardError, ForwardReply, Forwarder};
use proposer::{Committed, ProposeError, Proposer};

/// How long a forward still waits for a leader that was replaced while it
/// held the request (see `Node::forward_while_leading`): about one election
/// timeout, so a live old leader's answer, sent as it steps down, arrives.
const REPLACED_LEADER_GRACE: Duration = Duration::from_secs(1);

/// Settings of one node (`synap serve`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's id.
    pub id: NodeId,
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// Base URL the other members and clients use to reach this node.
    pub advertise: BaseUrl,
    /// Where the log, the state and snapshots live.
    pub data_dir: PathBuf,
    /// Initial voters (id → base URL), including this node; empty for a
    /// one-node cluster or a joining node.
    pub peers: BTreeMap<NodeId, BaseUrl>,
    /// A member of a running cluster to join through.
    pub join: Option<BaseUrl>,
    /// API key sent with the join requests, when the cluster has keys.
    pub join_api_key: Option<String>,
    /// Shared secret required on `/raft/*` routes.
    pub cluster_secret: Option<String>,
    /// How long a write may wait for a leader and a commit.
    pub write_timeout: Duration,
    /// Largest accepted event body (data plus metadata), in bytes.
    pub max_event_bytes: usize,
    /// Most bytes of writes waiting for the proposer (and, on a follower,
    /// for the leader) before more are refused with 503.
    pub max_queued_write_bytes: usize,
    /// Whether publishing to a missing room creates it.
    pub auto_create_rooms: bool,
    /// How long a client-supplied publish id is remembered for
    /// deduplication.
    pub dedup_window: Duration,
    /// Most live subscribers this node serves at once.
    pub max_subscribers: usize,
    /// A subscriber whose socket accepts nothing for this long is
    /// disconnected.
    pub subscriber_send_timeout: Duration,
    /// Build a snapshot (and purge the log behind it) every this many
    /// entries; 0 disables snapshots.
    pub snapshot_every: u64,
    /// sled's page cache for the applied state, in bytes.
    pub store_cache_bytes: u64,
    /// TLS files; none: plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Retention of rooms created without saying otherwise.
    pub room_defaults: RoomDefaults,
}

/// Retention settings that new rooms get unless their creation says
/// otherwise (`--default-max-events` etc.). Each node applies its own when
/// it takes the request; the settings then travel in the replicated entry,
/// so every node holds the same. Give every node the same defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomDefaults {
    /// Most events kept.
    pub max_events: Option<u64>,
    /// Oldest events kept, in seconds.
    pub max_age_secs: Option<u64>,
    /// Most payload bytes kept.
    pub max_bytes: Option<u64>,
}

impl RoomDefaults {
    /// Whether any default is set.
    pub fn any(&self) -> bool {
        self.max_events.is_some() || self.max_age_secs.is_some() || self.max_bytes.is_some()
    }

    /// The settings of a new room given `given` (absent: the default;
    /// `null`: no limit): its configuration and its byte limit.
    pub fn resolve(&self, given: &crate::command::RoomChange) -> (crate::command::RoomConfig, Option<u64>) {
        let config = crate::command::RoomConfig {
            max_events: given.max_events.unwrap_or(self.max_events),
            max_age_secs: given.max_age_secs.unwrap_or(self.max_age_secs),
        };
        (config, given.max_bytes.unwrap_or(self.max_bytes))
    }
}

/// Why a write was not answered with a result.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader could take the request before the deadline; nothing was
    /// written.
    #[error("no leader available: {0}")]
    Unavailable(String),
    /// The request may or may not have been committed.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Too many writes are waiting; this one was not taken.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// A running cluster member.
pub struct Node {
    /// Settings it was started with.
    pub config: NodeConfig,
    /// Who its data directory belongs to.
    pub identity: identity::Identity,
    /// The Raft handle.
    pub raft: Raft,
    /// Read access to the applied state.
    pub store: Store,
    /// Live fan-out to subscribers.
    pub hub: Arc<Hub>,
    /// HTTP to the other nodes.
    pub peers: PeerClient,
    /// The Raft log (its size decides when to snapshot).
    log: LogStore,
    applied: watch::Receiver<u64>,
    /// The latest command timestamp applied here: cluster time.
    clock: watch::Receiver<u64>,
    /// How far the leader is, as this node last heard it.
    readiness: readiness::Readiness,
    /// Set when the node must stop (it learned it may not run).
    stopped: watch::Sender<Option<String>>,
    /// Whether this node may take part in replication: a node that starts
    /// without state first asks its peers whether the cluster already knows
    /// its id by another data directory. Until then it refuses appends,
    /// votes and snapshots: a leader sent appends by a wiped follower would
    /// see its log go backwards.
    cleared: std::sync::atomic::AtomicBool,
    proposer: Proposer,
    forwarder: Forwarder,
    /// The protocol every member speaks, as last asked.
    protocols: tokio::sync::Mutex<protocols::MemberProtocols>,
}

impl Node {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Cluster time on this node: the timestamp of the latest command it
    /// applied (Unix ms). It moves with every entry, at least once a second
    /// (the leader's housekeeping), and is the same on every node at the
    /// same log index: what TTLs are judged by.
    pub fn cluster_time(&self) -> u64 {
        *self.clock.borrow()
    }

    /// Whether every member (voters and learners) says it speaks
    /// `protocol`: requests newer than that are not proposed until then.
    pub async fn all_members_speak(&self, protocol: u32) -> bool {
        self.protocols.lock().await.all_speak(self, protocol).await
    }

    /// Changes whenever this node applies more of the log (its value is
    /// the last applied index).
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Asks the server to stop this node with `reason` (an error exit):
    /// for what makes it unsafe to run on, such as a wiped data directory.
    pub fn stop_with(&self, reason: String) {
        tracing::error!("{reason}");
        self.stopped.send_replace(Some(reason));
    }

    /// Whether this node may take part in replication yet.
    pub fn is_cleared(&self) -> bool {
        self.cleared.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn clear(&self) {
        self.cleared.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resolves once [`Node::stop_with`] was called.
    pub async fn stop_requested(&self) {
        let mut stopped = self.stopped.subscribe();
        // The sender lives as long as the node, which outlives this call.
        let _ = stopped.wait_for(Option::is_some).await;
    }

    /// Why [`Node::stop_with`] was called, if it was.
    pub fn stop_reason(&self) -> Option<String> {
        self.stopped.borrow().clone()
    }

    /// The current leader and its URL, as far as this node knows.
    pub fn leader(&self) -> Option<(NodeId, BaseUrl)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        // Member addresses were checked when they joined.
        Some((leader, BaseUrl::lenient(&node.addr)))
    }

    /// Gets `request` committed by the leader and applied here, retrying
    /// across leader changes while that is safe, until `write_timeout`.
    pub async fn write(&self, request: Request) -> Result<Reply, WriteError> {
        let deadline = Instant::now() + self.config.write_timeout;
        let mut metrics = self.raft.metrics();
        let mut last_problem = String::from("no leader elected");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(WriteError::Unavailable(last_problem));
            }
            match self.leader() {
                Some((leader, _)) if leader == self.id() => {
                    match tokio::time::timeout(remaining, self.proposer.propose(request.clone())).await {
                        Ok(Ok(committed)) => return Ok(committed.reply),
                        Ok(Err(ProposeError::NotLeader { .. })) => last_problem = "leadership changed".into(),
                        Ok(Err(ProposeError::Unknown(e))) => return Err(WriteError::Unknown(e)),
                        Ok(Err(ProposeError::Overloaded(e))) => return Err(WriteError::Overloaded(e)),
                        Err(_) => return Err(WriteError::Unknown("not committed within the write timeout".into())),
                    }
                }
                Some((leader, url)) => match self.forward_while_leading(leader, &url, &request, remaining).await {
                    Ok(ForwardReply::Committed { reply, log_index }) => {
                        return self.wait_applied(log_index, deadline).await.map(|()| reply);
                    }
                    Ok(ForwardReply::NotLeader { .. }) => {
                        last_problem = format!("node {leader} is no longer the leader")
                    }
                    Ok(ForwardReply::Unknown(e)) => return Err(WriteError::Unknown(e)),
                    Ok(ForwardReply::Overloaded(e)) => return Err(WriteError::Overloaded(e)),
                    Err(ForwardError::NotTaken(e)) => last_problem = format!("leader {leader} unreachable: {e}"),
                    Err(ForwardError::Unknown(e)) => return Err(WriteError::Unknown(e)),
                    Err(ForwardError::Overloaded(e)) => return Err(WriteError::Overloaded(e)),
                },
                None => {}
            }
            // Wait for the cluster to change (new leader, new term), but
            // poll at least every 50 ms: a refused connection to a dead
            // leader changes no metric until the election.
            let pause = remaining.min(Duration::from_millis(50));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    /// Forwards `request` to `leader`, but gives up soon after this node
    /// learns of another leader: a leader that was replaced (paused, cut
    /// off) may hold the request until the deadline, and its outcome is
    /// unknown either way, so the client hears so within
    /// [`REPLACED_LEADER_GRACE`] rather than at the deadline. The grace is
    /// for a replaced leader that is alive and answers: one removed from
    /// the cluster on purpose commits what it proposed before the removal
    /// and refuses the rest as not taken, both definite answers.
    async fn forward_while_leading(
        &self,
        leader: NodeId,
        url: &BaseUrl,
        request: &Request,
        remaining: Duration,
    ) -> Result<ForwardReply, ForwardError> {
        let forward = self.forwarder.forward(url, request, remaining);
        tokio::pin!(forward);
        {
            let mut metrics = self.raft.metrics();
            let replaced = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != leader));
            tokio::select! {
                reply = &mut forward => return reply,
                _ = replaced => {}
            }
        }
        match tokio::time::timeout(REPLACED_LEADER_GRACE, forward).await {
            Ok(reply) => reply,
            Err(_) => Err(ForwardError::Unknown(format!("node {leader} stopped leading while it held the request"))),
        }
    }

    /// The leader side of `/raft/forward`: proposes only if this node leads.
    pub async fn propose_forwarded(&self, request: Request, timeout: Duration) -> ForwardReply {
        match self.leader() {
            Some((leader, _)) if leader == self.id() => {}
            other => return ForwardReply::NotLeader { leader: other.map(|(id, _)| id) },
        }
        match tokio::time::timeout(timeout, self.proposer.propose(request)).await {
            Ok(Ok(Committed { reply, log_index })) => ForwardReply::Committed { reply, log_index },
            Ok(Err(ProposeError::NotLeader { leader })) => ForwardReply::NotLeader { leader: leader.map(|(id, _)| id) },
            Ok(Err(ProposeError::Unknown(e))) => ForwardReply::Unknown(e),
            Ok(Err(ProposeError::Overloaded(e))) => ForwardReply::Overloaded(e),
            Err(_) => ForwardReply::Unknown("not committed within the write timeout".into()),
        }
    }

    /// Waits until this node has applied `log_index`, up to `deadline`.
    pub async fn wait_applied(&self, log_index: u64, deadline: Instant) -> Result<(), WriteError> {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout_at(deadline, applied.wait_for(|index| *index >= log_index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(WriteError::Unknown(format!(
                "committed at log index {log_index} but not yet applied on this node; read from the leader"
            ))),
        }
    }

    /// Waits until this node has applied everything the leader had
    /// committed when the call started (a linearizable read point).
    pub async fn read_barrier(&self) -> Result<(), WriteError> {
        let deadline = Instant::now() + self.config.write_timeout;
        match self.leader() {
            // On the leader, the read index is applied before it is returned.
            Some((leader, _)) if leader == self.id() => self.local_read_index().await.map(|_| ()),
            Some((_, url)) => {
                let index = self.forwarder.read_index(&url, self.config.write_timeout).await.map_err(|e| match e {
                    ForwardError::NotTaken(e) | ForwardError::Unknown(e) | ForwardError::Overloaded(e) => {
                        WriteError::Unavailable(e)
                    }
                })?;
                self.wait_applied(index, deadline).await
            }
            None => Err(WriteError::Unavailable("no leader elected".into())),
        }
    }

    /// The leader's read index (`/raft/read-index` answers it): the commit
    /// index once a quorum confirmed this node still leads, returned after
    /// it is applied here.
    pub async fn local_read_index(&self) -> Result<u64, WriteError> {
        let fut = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.config.write_timeout, fut).await {
            Ok(Ok(index)) => Ok(index.map_or(0, |id| id.index)),
            Ok(Err(e)) => Err(WriteError::Unavailable(e.to_string())),
            Err(_) => Err(WriteError::Unavailable("no quorum answered in time".into())),
        }
    }
}
