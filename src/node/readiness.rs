//! Whether a node is ready to serve: it knows a leader and has applied
//! (nearly) everything that leader had committed, as learned from the
//! leader itself. A node that just joined, or restarted after missing
//! entries, has a short log of its own: comparing its applied index with
//! its own last log index would call it ready while it is far behind.
//!
//! A follower asks the leader for its read index (the commit index once a
//! quorum confirmed the leadership) a few times a second; the answer is
//! trusted for a few seconds.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::Node;
use crate::raft::NodeId;

/// How often a follower asks the leader how far it is.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long an answer is trusted.
const FRESH_FOR: Duration = Duration::from_secs(3);
/// Entries a ready node may trail the leader's commit index by (what
/// replication is still carrying under load).
pub const SLACK: u64 = 2;

/// The leader's commit index, as a follower last heard it.
#[derive(Debug, Clone, Copy)]
pub struct LeaderPoint {
    leader: NodeId,
    index: u64,
    at: Instant,
}

/// The latest [`LeaderPoint`] of a node.
#[derive(Debug, Default)]
pub struct Readiness {
    point: Mutex<Option<LeaderPoint>>,
}

impl Readiness {
    fn set(&self, point: Option<LeaderPoint>) {
        *self.point.lock().unwrap_or_else(|p| p.into_inner()) = point;
    }

    /// The leader's index if `leader` answered recently.
    pub fn leader_index(&self, leader: NodeId) -> Option<u64> {
        let point = (*self.point.lock().unwrap_or_else(|p| p.into_inner()))?;
        (point.leader == leader && point.at.elapsed() < FRESH_FOR).then_some(point.index)
    }
}

/// While `node` exists, keeps its [`Readiness`] up to date.
pub async fn run(node: Weak<Node>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if node.raft.metrics().borrow().running_state.is_err() {
            return;
        }
        match node.leader() {
            Some((leader, url)) if leader != node.id() => {
                let asked = Instant::now();
                match node.forwarder.read_index(&url, Duration::from_secs(1)).await {
                    Ok(index) => node.readiness.set(Some(LeaderPoint { leader, index, at: asked })),
                    Err(e) => tracing::debug!("readiness: leader {leader} did not say how far it is: {e}"),
                }
            }
            _ => node.readiness.set(None),
        }
    }
}
