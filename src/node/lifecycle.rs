//! One log line per change an operator follows a cluster by: leadership
//! (with the term), and membership (nodes joining, leaving, promoted). Every
//! node logs what it sees, from openraft's metrics; snapshots log where they
//! are built and installed (`raft::state_machine`).

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::raft::{NodeId, RaftMetrics};

/// The part of the metrics these lines are about.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    leader: Option<NodeId>,
    term: u64,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
}

impl Seen {
    fn of(metrics: &RaftMetrics) -> Self {
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership.nodes().map(|(id, _)| *id).filter(|id| !voters.contains(id)).collect();
        Self { leader: metrics.current_leader, term: metrics.current_term, voters, learners }
    }
}

/// Logs each change of `metrics` until the sender is gone (Raft stopped).
pub async fn run(mut metrics: watch::Receiver<RaftMetrics>) {
    let mut seen = Seen::default();
    loop {
        let now = Seen::of(&metrics.borrow_and_update());
        report(&seen, &now);
        seen = now;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn report(before: &Seen, now: &Seen) {
    if now.leader != before.leader {
        match now.leader {
            Some(leader) => tracing::info!(leader, term = now.term, "leader changed"),
            None => tracing::info!(term = now.term, "no leader"),
        }
    }
    let members = |s: &Seen| s.voters.union(&s.learners).copied().collect::<BTreeSet<_>>();
    let (was, is) = (members(before), members(now));
    for id in is.difference(&was) {
        let role = if now.voters.contains(id) { "voter" } else { "learner" };
        tracing::info!(node = id, role, "node joined");
    }
    for id in was.difference(&is) {
        tracing::info!(node = id, "node left");
    }
    for id in now.voters.intersection(&before.learners) {
        tracing::info!(node = id, "learner promoted to voter");
    }
    if now.voters != before.voters || now.learners != before.learners {
        tracing::info!(voters = ?now.voters, learners = ?now.learners, "membership changed");
    }
}
