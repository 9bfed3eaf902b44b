//! Cluster lifecycle: opening a node, forming the cluster (`--peers`),
//! joining one (`--join`), membership changes and status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::forward::Forwarder;
use super::identity::{Identity, IdentityError};
use super::proposer::Proposer;
use super::{housekeeping, identity, lifecycle, readiness, restore};
use super::{Node, NodeConfig};
use crate::base_url::BaseUrl;
use crate::durable;
use crate::hub::Hub;
use crate::peer::{Lane, PeerClient};
use crate::raft::log_store::segments::LogError;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::state_machine::{self, StateMachine};
use crate::raft::{self, NodeId};
use crate::store::{database, Database, Store, StoreError};

/// How long a promotion waits for the learner to catch up before it
/// answers "try again" (`--join` does).
const PROMOTE_WAIT: Duration = Duration::from_secs(30);

/// How long `POST /admin/snapshot` waits for the snapshot to be written.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened.
    #[error("cannot open data directory: {0}")]
    Storage(#[from] StoreError),
    /// The Raft log could not be opened.
    #[error("cannot open the raft log: {0}")]
    Log(#[from] LogError),
    /// The data directory belongs to another node, or its identity file
    /// is unreadable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// openraft refused the configuration or failed to start.
    #[error("cannot start raft: {0}")]
    Raft(String),
    /// A data directory restored from a backup could not be finished.
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Must run on the leader; here is who that is.
    #[error("this node is not the leader")]
    NotLeader(Option<(NodeId, BaseUrl)>),
    /// The named node is not a member.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not do it in time.
    #[error("{0}")]
    Unavailable(String),
}

/// One member as `/admin/cluster` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Its advertised URL.
    pub url: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// Highest log index known replicated to it (leader's view only).
    pub matched_index: Option<u64>,
    /// The id of its data directory, once the cluster recorded it.
    #[serde(default)]
    pub incarnation: Option<String>,
}

/// What `/admin/cluster` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The answering node.
    pub id: NodeId,
    /// The cluster's id, once the leader named it.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Its role: Leader, Follower, Candidate or Learner.
    pub state: String,
    /// Current leader, if known.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Last applied index on this node.
    pub last_applied: Option<u64>,
    /// Last log index covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last log index purged from this node's log.
    pub purged_index: Option<u64>,
    /// Every member, voters and learners.
    pub members: Vec<MemberStatus>,
    /// Whether this node stores events in chunks (protocol 4, switched on
    /// by the leader once every member speaks it): from then on no version
    /// before protocol 4 may run as a member.
    #[serde(default)]
    pub packed: bool,
    /// The protocol the replicated state records every member speaks (0
    /// until the leader recorded one; see `RaiseProtocol`).
    #[serde(default)]
    pub protocol: u32,
}

/// Opens the node's storage and starts Raft. Forming or joining a cluster
/// happens in [`bootstrap`], once the node serves HTTP.
pub async fn open(config: NodeConfig) -> Result<Arc<Node>, StartError> {
    durable::create_dir_all(&config.data_dir).map_err(StoreError::from)?;
    let alone = config.peers.is_empty() && config.join.is_none();
    restore::finish(&config.data_dir, config.id, &config.advertise, alone)?;
    // A directory without an identity was written by a version before
    // identities, which had no trust marker either: its state is trusted.
    let before_markers = !Identity::exists(&config.data_dir);
    let identity = Identity::load_or_create(&config.data_dir, config.id)?;
    let db_dir = config.data_dir.join(database::DIR);
    let db = Arc::new(Database::open(&db_dir, config.store_cache_bytes, before_markers)?);
    let log = LogStore::open_in(&config.data_dir, db.sled())?;
    let store = Store::open(db)?;
    let hub = Hub::new(store.clone(), config.max_subscribers);
    let sm = StateMachine::open(store.clone(), &config.data_dir.join(state_machine::DIR), hub.clone())?;
    let applied = sm.subscribe();
    let applied_clock = sm.subscribe_clock();

    let raft_config = Config {
        cluster_name: "synap".into(),
        // Elections decide how long writes stall after a leader dies. Once a
        // leader was established, openraft waits its leader lease
        // (= election_timeout_max) plus a random election timeout before a
        // follower stands, and a split vote costs another timeout: with these
        // values the first attempt comes 1.2-1.6 s after the last heartbeat.
        // 100 ms heartbeats leave that far above fsync stalls under load.
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // A chunk RPC must fit in it, and the last one includes loading the
        // whole state into sled on the follower (over a minute for millions
        // of records on a slow disk); otherwise the transfer starts over,
        // forever.
        install_snapshot_timeout: 300_000,
        // Fewer, larger chunks for snapshots that may hold the whole state.
        snapshot_max_chunk_size: 16 * 1024 * 1024,
        snapshot_policy: if config.snapshot_every == 0 {
            SnapshotPolicy::Never
        } else {
            SnapshotPolicy::LogsSinceLast(config.snapshot_every)
        },
        // Keep some log behind a snapshot so that a follower slightly behind
        // gets entries, not a whole snapshot; never more than one interval.
        // Entries can be megabytes each: keep few, and let a follower further
        // behind than that catch up from a snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_every.clamp(1, 100),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let peer_tls = config.tls.as_ref().map(|files| files.peer_client_config()).transpose()?;
    let peers = PeerClient::new(config.cluster_secret.clone(), peer_tls.as_ref())?
        .with_sender(config.id, identity.incarnation.clone());
    let network = NetworkFactory::new(config.id, peers.clone());
    let raft = raft::Raft::new(config.id, Arc::new(raft_config), network, log.clone(), sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let give_up = config.write_timeout * 2;
    let max_queued = config.max_queued_write_bytes;
    let proposer = Proposer::start(raft.clone(), config.dedup_window, give_up, applied_clock.clone(), max_queued);
    let forwarder = Forwarder::new(peers.clone(), config.max_queued_write_bytes);
    let readiness = readiness::Readiness::default();
    let (stopped, _) = watch::channel(None);
    let cleared = std::sync::atomic::AtomicBool::new(raft.is_initialized().await.unwrap_or(true));
    let node = Arc::new(Node {
        config,
        identity,
        raft,
        store,
        hub,
        peers,
        log,
        applied,
        clock: applied_clock,
        readiness,
        stopped,
        cleared,
        proposer,
        forwarder,
        protocols: Default::default(),
    });
    tokio::spawn(housekeeping::run(Arc::downgrade(&node)));
    tokio::spawn(readiness::run(Arc::downgrade(&node)));
    tokio::spawn(lifecycle::run(node.raft.metrics()));
    Ok(node)
}

/// Forms or joins the cluster as the configuration says. Never
/// re-initialises a node that already has Raft state.
pub async fn bootstrap(node: Arc<Node>) {
    let initialized = node.raft.is_initialized().await.unwrap_or(true);
    if initialized {
        // A joining node that crashed between the learner and the voter
        // step comes back as a learner: finish the join.
        if let Some(join) = node.config.join.clone() {
            let membership = node.raft.metrics().borrow().membership_config.clone();
            let membership = membership.membership();
            let learner = membership.get_node(&node.id()).is_some() && !membership.voter_ids().any(|v| v == node.id());
            if learner {
                tracing::info!("join: resuming, this node is still a learner");
                join_cluster(&node, &join, true).await;
            }
        }
        return;
    }
    if let Some(join) = node.config.join.clone() {
        join_cluster(&node, &join, false).await;
    } else if node.config.peers.is_empty() {
        node.clear();
        let members = BTreeMap::from([(node.id(), node.config.advertise.clone())]);
        if let Err(e) = node.initialize(members).await {
            tracing::error!("cannot initialise a one-node cluster: {e}");
        }
    } else {
        form_with_peers(&node).await;
    }
}

/// What the peers of an uninitialised node say.
enum Survey {
    /// A peer knows this node's id by another data directory.
    Stale(String),
    /// Some peer already belongs to a cluster.
    Running,
    /// No peer belongs to a cluster yet; `all_up` if every one answers.
    Forming {
        /// Every peer answers `/health`.
        all_up: bool,
    },
}

/// An uninitialised node with `--peers`: waits until the cluster forms (the
/// lowest id forms it once every peer answers), never forms a second one
/// beside a running cluster, and stops if the cluster knows its id by
/// another data directory: then it was wiped, and has forgotten its log
/// and its vote.
async fn form_with_peers(node: &Node) {
    let lowest = node.config.peers.keys().next() == Some(&node.id());
    let mut said = false;
    loop {
        if node.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let survey = survey_peers(node).await;
        if !matches!(survey, Survey::Stale(_)) {
            node.clear();
        }
        match survey {
            Survey::Stale(message) => {
                node.stop_with(message);
                return;
            }
            Survey::Running if !said => {
                said = true;
                tracing::warn!(
                    "the peers already run a cluster: not forming one; waiting to be replicated to (start a \
                     node that is new to the cluster with --join instead)"
                );
            }
            Survey::Forming { all_up: true } if lowest => match node.initialize(node.config.peers.clone()).await {
                Ok(()) => {
                    tracing::info!("cluster initialised with {} voters", node.config.peers.len());
                    return;
                }
                Err(e) => tracing::warn!("not initialising: {e}"),
            },
            Survey::Forming { all_up: false } if lowest && !said => {
                said = true;
                tracing::info!("waiting for every peer before initialising the cluster");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn survey_peers(node: &Node) -> Survey {
    let mut all_up = true;
    let mut running = false;
    for (id, url) in &node.config.peers {
        if *id == node.id() {
            continue;
        }
        let health = node.peers.request(Lane::Public, reqwest::Method::GET, url, "/health");
        all_up &= health.timeout(Duration::from_secs(1)).send().await.is_ok_and(|r| r.status().is_success());
        let Some(peer) = identity::ask(&node.peers, url, node.id()).await else { continue };
        if !peer.initialized {
            continue;
        }
        running = true;
        if let Some(known) = peer.recorded.filter(|known| *known != node.identity.incarnation) {
            return Survey::Stale(rejoin_advice(node, &known, url));
        }
    }
    if running {
        Survey::Running
    } else {
        Survey::Forming { all_up }
    }
}

fn rejoin_advice(node: &Node, known: &str, member: &BaseUrl) -> String {
    format!(
        "the cluster knows node {id} by another data directory (incarnation {known}; this one, {mine}, starts \
         empty or was replaced): it has forgotten its log and its vote and must not take part as node {id}. \
         Remove it, `synap cluster remove {id} --url {member}`, then start it with `--join {member}` (which also \
         does the removal itself)",
        id = node.id(),
        mine = node.identity.incarnation
    )
}

/// Before joining: if the cluster already has a member with this node's id
/// and another data directory (this node was wiped), that member is
/// removed first, so that this one joins as a new learner.
async fn remove_stale_self(node: &Node, join: &BaseUrl) {
    loop {
        let Some(peer) = identity::ask(&node.peers, join, node.id()).await else { return };
        let stale = peer.members.contains(&node.id()) && peer.recorded.as_deref() != Some(&node.identity.incarnation);
        if !stale {
            return;
        }
        tracing::warn!("join: the cluster has a node {} with another data directory; removing it first", node.id());
        let path = format!("/admin/cluster/members/{}", node.id());
        let mut request = node.peers.request(Lane::Public, reqwest::Method::DELETE, join, &path);
        if let Some(key) = &node.config.join_api_key {
            request = request.bearer_auth(key);
        }
        match request.timeout(Duration::from_secs(60)).send().await {
            Ok(resp) if resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND => return,
            Ok(resp) => tracing::warn!("join: removing the old node {}: {}", node.id(), resp.status()),
            Err(e) => tracing::warn!("join: removing the old node {}: {e}", node.id()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn join_cluster(node: &Node, join: &BaseUrl, only_promote: bool) {
    if !only_promote {
        remove_stale_self(node, join).await;
    }
    node.clear();
    let learner = serde_json::json!({ "id": node.id(), "url": node.config.advertise });
    let voter = serde_json::json!({ "id": node.id() });
    let steps = [("learners", learner), ("voters", voter)];
    for (path, body) in steps.into_iter().skip(usize::from(only_promote)) {
        loop {
            let url = join.join(&format!("/admin/cluster/{path}"));
            let request = node.peers.post(Lane::Public, join, &format!("/admin/cluster/{path}"));
            let mut request = request.json(&body).timeout(Duration::from_secs(300));
            if let Some(key) = &node.config.join_api_key {
                request = request.bearer_auth(key);
            }
            match request.send().await {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    tracing::warn!("join: {url} answered {status}: {text}");
                }
                Err(e) => tracing::warn!("join: {url}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tracing::info!("join: {path} step done");
    }
}

fn node_of(url: &BaseUrl) -> raft::Node {
    raft::Node { addr: url.as_str().to_owned() }
}

impl Node {
    /// Initialises a new cluster with `members` as voters.
    pub async fn initialize(&self, members: BTreeMap<NodeId, BaseUrl>) -> Result<(), AdminError> {
        if !members.contains_key(&self.id()) {
            return Err(AdminError::Invalid(format!("members must include this node ({})", self.id())));
        }
        let nodes: BTreeMap<_, _> = members.iter().map(|(id, url)| (*id, node_of(url))).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(AdminError::Invalid("the cluster is already initialised".into()))
            }
            Err(e) => Err(AdminError::Invalid(e.to_string())),
        }
    }

    /// Adds `id` at `url` as a learner and waits until it has caught up.
    /// Membership changes answer the log index of the change.
    pub async fn add_learner(&self, id: NodeId, url: &BaseUrl) -> Result<u64, AdminError> {
        self.ensure_leader()?;
        let result = self.raft.add_learner(id, node_of(url), true).await;
        self.membership_result(result)
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<u64, AdminError> {
        self.ensure_leader()?;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(AdminError::NotFound(format!("node {id} is not a member; add it as a learner first")));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index));
        }
        self.wait_caught_up(id).await?;
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
    }

    /// Waits (up to [`PROMOTE_WAIT`]) until learner `id` holds nearly all of
    /// this leader's log: a voter without the data would count towards
    /// every quorum while holding nothing, one failure from losing it.
    async fn wait_caught_up(&self, id: NodeId) -> Result<(), AdminError> {
        let deadline = Instant::now() + PROMOTE_WAIT;
        let mut metrics = self.raft.metrics();
        let mut reported = Instant::now();
        loop {
            let (matched, last) = {
                let m = metrics.borrow_and_update();
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
                (matched, m.last_log_index.unwrap_or(0))
            };
            if matched.is_some_and(|matched| matched + readiness::SLACK >= last) {
                return Ok(());
            }
            let progress = format!("matched {} of {last}", matched.map_or("nothing".into(), |m| m.to_string()));
            if Instant::now() >= deadline {
                return Err(AdminError::Unavailable(format!(
                    "node {id} is still catching up ({progress}); promote it once it has"
                )));
            }
            if reported.elapsed() >= Duration::from_secs(5) {
                tracing::info!("promotion of node {id} waits for it to catch up: {progress}");
                reported = Instant::now();
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        }
    }

    /// Removes `id` from the cluster, voter or learner.
    pub async fn remove(&self, id: NodeId) -> Result<u64, AdminError> {
        self.ensure_leader()?;
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(AdminError::NotFound(format!("node {id} is not a member")));
        }
        let change = if membership.voter_ids().any(|v| v == id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let leaving = id == self.id();
        if leaving {
            self.proposer.step_down_in(Some(self.raft.metrics().borrow().current_term));
        }
        let removed = self.change_membership(change).await;
        if leaving && removed.is_err() {
            self.proposer.step_down_in(None);
        }
        removed
    }

    /// Builds a snapshot of this node's state now (the log behind it is
    /// purged after) and answers its last index once it is written.
    pub async fn snapshot(&self) -> Result<Option<u64>, AdminError> {
        let applied = self.raft.metrics().borrow().last_applied.map(|id| id.index);
        self.raft.trigger().snapshot().await.map_err(|e| AdminError::Unavailable(format!("cannot snapshot: {e}")))?;
        let built = self
            .raft
            .wait(Some(SNAPSHOT_WAIT))
            .metrics(|m| m.snapshot.map(|id| id.index) >= applied, "snapshot built")
            .await
            .map_err(|e| AdminError::Unavailable(format!("snapshot not built within {SNAPSHOT_WAIT:?}: {e}")))?;
        Ok(built.snapshot.map(|id| id.index))
    }

    /// Where this node stands in the cluster.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                url: node.addr.clone(),
                voter: voters.contains(id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index),
                incarnation: self.store.incarnation(*id).ok().flatten(),
            })
            .collect();
        ClusterStatus {
            id: self.id(),
            cluster: self.store.cluster_id().ok().flatten(),
            packed: self.store.packed().unwrap_or(false),
            protocol: self.store.protocol().unwrap_or(0),
            state: format!("{:?}", metrics.state),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            members,
        }
    }

    /// Ready: a leader is known, and this node has applied (nearly) all
    /// it had committed. On the leader: a quorum answered in the last 3 s
    /// and its own log is applied. On another node: the leader said how far
    /// it is in the last few seconds, and this node is within
    /// [`readiness::SLACK`] entries of that.
    pub fn is_ready(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return false;
        };
        let applied = metrics.last_applied.map_or(0, |id| id.index);
        if leader == self.id() {
            let caught_up = metrics.last_applied.map(|id| id.index) >= metrics.last_log_index;
            return caught_up && metrics.millis_since_quorum_ack.is_some_and(|ms| ms < 3_000);
        }
        self.readiness.leader_index(leader).is_some_and(|index| applied + readiness::SLACK >= index)
    }

    fn ensure_leader(&self) -> Result<(), AdminError> {
        match self.leader() {
            Some((leader, _)) if leader == self.id() => Ok(()),
            other => Err(AdminError::NotLeader(other)),
        }
    }

    async fn change_membership(&self, change: ChangeMembers<NodeId, raft::Node>) -> Result<u64, AdminError> {
        // Right after start or another change, openraft answers InProgress
        // until the previous membership commits: retry for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = self.raft.change_membership(change.clone(), false).await;
            match result {
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return self.membership_result(other),
            }
        }
    }

    fn membership_result(
        &self,
        result: Result<ClientWriteResponse<raft::TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, raft::Node>>>,
    ) -> Result<u64, AdminError> {
        match result {
            Ok(response) => Ok(response.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.zip(f.leader_node).map(|(id, n)| (id, BaseUrl::lenient(&n.addr)));
                Err(AdminError::NotLeader(leader))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(AdminError::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(AdminError::Unavailable(e.to_string())),
        }
    }
}
