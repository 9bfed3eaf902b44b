//! Work a node does on its own, once a second.
//!
//! Every node snapshots itself once its log holds more bytes than its
//! state (and at least [`LOG_BYTES_PER_SNAPSHOT`]), besides openraft's
//! count-based policy: the log, and what a follower far behind must
//! replay, stays bounded in bytes (past that it gets a snapshot), while
//! the cost of snapshots, each a copy of the whole state, stays linear in
//! what is written.
//!
//! The leader proposes `Expire` (expired KV keys and old dedup records) and
//! `Trim` (events past their room's age limit, also in rooms nobody
//! publishes to). Each entry also moves cluster time forward, which is what
//! KV reads judge expiry by.
//!
//! It also dead-letters consumer messages whose last delivery's lease
//! ended (an empty `Lease`), so that they move without a fetch.
//!
//! Once every member speaks this version's protocol, the leader records it
//! in the state (`RaiseProtocol`): requests that need it are then proposed
//! even while a member is down.
//!
//! `Trim` is protocol 2, `Identify` and `Register` 3, `PackEvents` 4,
//! consumers and `RaiseProtocol` 5:
//! each is proposed only once every member says it speaks it, so that a
//! rolling upgrade never commits an entry an older member cannot apply (or
//! state it cannot read: events stored packed).

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::{identity, Node};
use crate::base_url::BaseUrl;
use crate::clock;
use crate::command::{Request, CONSUMERS_PROTOCOL, PROTOCOL};

/// How often the leader proposes its housekeeping.
pub const EVERY: Duration = Duration::from_secs(1);

/// A node snapshots itself once its log holds this many bytes, at least.
pub const LOG_BYTES_PER_SNAPSHOT: u64 = 64 * 1024 * 1024;
/// Time between two snapshots triggered by size, at least (the first has
/// to finish and purge before the log shrinks).
const SNAPSHOT_PAUSE: Duration = Duration::from_secs(10);

/// While `node` exists and leads, proposes its housekeeping every [`EVERY`].
pub async fn run(node: Weak<Node>) {
    let mut tick = tokio::time::interval(EVERY);
    let mut last_snapshot: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let metrics = node.raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let log_bytes = node.log.live_bytes();
        let threshold = LOG_BYTES_PER_SNAPSHOT.max(node.store.size_on_disk());
        let snapshots_on = node.config.snapshot_every > 0;
        let paused = last_snapshot.is_some_and(|at| at.elapsed() < SNAPSHOT_PAUSE);
        if snapshots_on && log_bytes > threshold && !paused {
            tracing::info!(log_bytes, state_bytes = threshold, "the log outgrew the state: snapshotting");
            if let Err(e) = node.raft.trigger().snapshot().await {
                tracing::warn!("cannot trigger a snapshot: {e}");
            }
            last_snapshot = Some(Instant::now());
        }
        check_identity(&node);
        if metrics.current_leader != Some(node.id()) {
            continue;
        }
        // Stamped no earlier than this when proposed (see the proposer's
        // clock), so nothing due now is missed.
        let now = clock::wall_ms().max(node.cluster_time());
        let window = node.config.dedup_window.as_millis() as u64;
        if node.store.expiry_due(now, window).unwrap_or(true) {
            if let Err(e) = node.proposer.propose(Request::Expire).await {
                tracing::debug!("expiry proposal: {e}");
            }
        }
        let aged = node.store.rooms().is_ok_and(|rooms| rooms.iter().any(|r| r.config.max_age_secs.is_some()));
        if aged && node.all_members_speak(2).await {
            if let Err(e) = node.proposer.propose(Request::Trim).await {
                tracing::debug!("trim proposal: {e}");
            }
        }
        if node.all_members_speak(3).await {
            record_identities(&node).await;
        }
        if node.store.protocol().is_ok_and(|p| p < PROTOCOL) && node.all_members_speak(PROTOCOL).await {
            if let Err(e) = node.proposer.propose(Request::RaiseProtocol { to: PROTOCOL }).await {
                tracing::debug!("protocol proposal: {e}");
            }
        }
        if node.store.protocol().is_ok_and(|p| p >= CONSUMERS_PROTOCOL) {
            dead_letter_due(&node, now).await;
        }
        if matches!(node.store.packed(), Ok(false)) && node.all_members_speak(4).await {
            if let Err(e) = node.proposer.propose(Request::PackEvents).await {
                tracing::debug!("pack proposal: {e}");
            }
        }
    }
}

/// The leader: dead-letters the messages whose last lease ended, without
/// waiting for a fetch (a lease of nothing does it).
async fn dead_letter_due(node: &Node, now: u64) {
    let Ok(due) = node.store.dead_letters_due(now) else { return };
    for (room, name) in due {
        if let Err(e) = node.proposer.propose(Request::Lease { room, name, max: 0 }).await {
            tracing::debug!("dead-letter proposal: {e}");
        }
    }
}

/// Every node: says which cluster it belongs to in its internal requests,
/// and stops if the cluster knows its id by another incarnation (its data
/// directory was wiped or replaced: it forgot its log and its vote).
fn check_identity(node: &Node) {
    if let Ok(Some(cluster)) = node.store.cluster_id() {
        node.peers.set_cluster(&cluster);
    }
    if let Ok(Some(known)) = node.store.incarnation(node.id()) {
        if known != node.identity.incarnation && node.stop_reason().is_none() {
            node.stop_with(format!(
                "this cluster knows node {id} by another data directory (incarnation {known}, this one is {mine}): \
                 it was wiped or replaced and has forgotten its log and vote. Remove it (`synap cluster remove {id} \
                 --url <a member>`), then start it with --join <a member>",
                id = node.id(),
                mine = node.identity.incarnation
            ));
        }
    }
}

/// The leader: names the cluster once, and records the incarnation of
/// every member that has none recorded (asking the member for it).
async fn record_identities(node: &Node) {
    if matches!(node.store.cluster_id(), Ok(None)) {
        let cluster = uuid::Uuid::new_v4().simple().to_string();
        if let Err(e) = node.proposer.propose(Request::Identify { cluster }).await {
            tracing::debug!("identify proposal: {e}");
        }
    }
    let members: Vec<(u64, BaseUrl)> = {
        let metrics = node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        membership.nodes().map(|(id, n)| (*id, BaseUrl::lenient(&n.addr))).collect()
    };
    for (id, url) in members {
        if !matches!(node.store.incarnation(id), Ok(None)) {
            continue;
        }
        let incarnation = if id == node.id() {
            Some(node.identity.incarnation.clone())
        } else {
            identity::ask(&node.peers, &url, node.id())
                .await
                .filter(|i| i.identity.node == id)
                .map(|i| i.identity.incarnation)
        };
        if let Some(incarnation) = incarnation {
            if let Err(e) = node.proposer.propose(Request::Register { node: id, incarnation }).await {
                tracing::debug!("register proposal for node {id}: {e}");
            }
        }
    }
}
