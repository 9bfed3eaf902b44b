//! Group commit: one task turns the concurrent requests of many clients into
//! few Raft entries.
//!
//! openraft pays a log fsync (on the leader and on each follower) per
//! `client_write`. The proposer therefore takes every request waiting in its
//! queue, packs them into one [`Command`], proposes it, and answers each
//! client with its own [`Reply`] once the entry is applied. While proposals
//! are in flight new requests pile up and form the next, larger batch, so the
//! batch size grows with the load by itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::budget::{Budget, Reservation};
use crate::clock;
use crate::command::{Command, Reply, Request};
use crate::raft::{Node, NodeId, Raft};

/// Most requests packed into one Raft entry.
const MAX_BATCH_REQUESTS: usize = 2048;
/// Most bytes (roughly) of requests packed into one Raft entry: openraft
/// sends up to 300 entries per append RPC.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most Raft entries proposed and not yet applied at once. One, the
/// classic group commit: while an entry is being replicated and fsynced,
/// everything that arrives waits and forms the next, larger entry. With 4
/// the entries were smaller and 64 publishers got ~15% less throughput, and
/// one publisher the same latency.
const MAX_IN_FLIGHT: usize = 1;

/// A request that was committed and applied on this node.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The state machine's answer.
    pub reply: Reply,
    /// Log index of the entry that carried the request.
    pub log_index: u64,
}

/// Why a proposal did not produce a [`Committed`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; the request was not appended anywhere.
    #[error("this node is not the leader")]
    NotLeader {
        /// The leader, if this node knows it.
        leader: Option<(NodeId, Node)>,
    },
    /// The entry may or may not commit (Raft stopped while it was pending).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// Too many bytes of writes are already waiting; nothing was queued.
    #[error("{0}")]
    Overloaded(String),
}

struct Pending {
    request: Request,
    reply: oneshot::Sender<Result<Committed, ProposeError>>,
    /// Its bytes in the queue's budget, given back when it leaves the queue.
    _queued: Reservation,
}

/// Handle to the proposer task of this node.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Pending>,
    budget: Budget,
    /// The term in which this leader is removing itself (`u64::MAX`: none):
    /// see [`Proposer::step_down_in`].
    stepping_down: Arc<AtomicU64>,
}

impl Proposer {
    /// Starts the proposer task for `raft`; its commands carry
    /// `dedup_window` for the state machine's publish-id deduplication.
    ///
    /// An entry that is neither applied nor refused within `give_up` frees
    /// its slot and its clients hear "outcome unknown": openraft answers a
    /// proposal only when it is applied or truncated, and a leader that was
    /// cut off and then caught up from a snapshot may never see either.
    ///
    /// Commands are stamped with a clock that never runs behind `applied`,
    /// the latest timestamp the state machine applied: a new leader whose
    /// wall clock lags its predecessor's keeps time moving forward.
    ///
    /// At most `max_queued_bytes` of requests wait at once; beyond that a
    /// proposal is refused at once ([`ProposeError::Overloaded`]).
    pub fn start(
        raft: Raft,
        dedup_window: Duration,
        give_up: Duration,
        applied: watch::Receiver<u64>,
        max_queued_bytes: usize,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let clock = ClusterClock { last: 0, applied };
        let stepping_down = Arc::new(AtomicU64::new(u64::MAX));
        tokio::spawn(run(raft, rx, dedup_window.as_millis() as u64, give_up, clock, stepping_down.clone()));
        Self { queue, budget: Budget::new(max_queued_bytes), stepping_down }
    }

    /// This leader is about to remove itself in `term` (`None`: it is not
    /// after all): until the term ends it refuses new requests as not
    /// taken, so that none of its entries follow the membership change that
    /// removes it. Entries after that change may commit or not once it
    /// steps down, and their clients would hear "outcome unknown"; entries
    /// before it commit with it.
    pub fn step_down_in(&self, term: Option<u64>) {
        self.stepping_down.store(term.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Proposes `request` and waits until it is applied on this node.
    /// Dropping the returned future abandons the request: if it has not
    /// been proposed yet, it never will be.
    pub async fn propose(&self, request: Request) -> Result<Committed, ProposeError> {
        let queued = self.budget.try_reserve(weight(&request)).ok_or_else(|| {
            ProposeError::Overloaded(format!(
                "the leader already has {} KiB of writes waiting (limit {} KiB); try again",
                self.budget.used() / 1024,
                self.budget.limit() / 1024
            ))
        })?;
        let (reply, rx) = oneshot::channel();
        let stopped = || ProposeError::Unknown("the proposer stopped".into());
        self.queue.send(Pending { request, reply, _queued: queued }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Rough size of a request in an entry, to keep entries (and so append
/// RPCs) bounded in bytes, not only in count.
pub(crate) fn weight(request: &Request) -> usize {
    match request {
        Request::Publish { events, .. } => {
            events.iter().map(|e| 64 + e.data.len() + e.metadata.as_ref().map_or(0, String::len)).sum()
        }
        Request::KvSet { value, .. } => 64 + value.len(),
        Request::Ack { offsets, .. } | Request::Nak { offsets, .. } => 64 + 8 * offsets.len(),
        _ => 64,
    }
}

/// Packs `first` and whatever `next` yields into one entry's worth: at most
/// [`MAX_BATCH_REQUESTS`] requests and about [`MAX_BATCH_BYTES`]. The one
/// that does not fit is handed back, to start the next entry; `first` goes
/// in whatever its size.
fn gather<T>(first: T, weight: impl Fn(&T) -> usize, mut next: impl FnMut() -> Option<T>) -> (Vec<T>, Option<T>) {
    let mut bytes = weight(&first);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
        let Some(item) = next() else { break };
        let size = weight(&item);
        if bytes + size > MAX_BATCH_BYTES {
            return (batch, Some(item));
        }
        bytes += size;
        batch.push(item);
    }
    (batch, None)
}

async fn run(
    raft: Raft,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    dedup_window_ms: u64,
    give_up: Duration,
    mut clock: ClusterClock,
    stepping_down: Arc<AtomicU64>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Pending> = None;
    loop {
        // Wait for a free slot first: requests that arrive meanwhile join
        // this batch instead of making their own entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // Requests whose client gave up (its future was dropped) are not
        // proposed at all.
        let first = match carried.take() {
            Some(pending) => pending,
            None => loop {
                match queue.recv().await {
                    Some(pending) if pending.reply.is_closed() => continue,
                    Some(pending) => break pending,
                    None => return,
                }
            },
        };
        let next = || loop {
            let pending = queue.try_recv().ok()?;
            if !pending.reply.is_closed() {
                return Some(pending);
            }
        };
        let (batch, rest) = gather(first, |p| weight(&p.request), next);
        carried = rest;
        let (requests, waiters): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
        let (requests, shares) = merge_publishes(requests);
        // Only a refusal before submission proves the requests were not
        // taken. After it, openraft's ForwardToLeader can also mean "appended
        // here, then truncated", and with five or more voters such an entry
        // may still commit elsewhere: that is reported as unknown below.
        let metrics = raft.metrics().borrow().clone();
        let leaving = stepping_down.load(Ordering::SeqCst) == metrics.current_term;
        if metrics.current_leader != Some(metrics.id) || leaving {
            let leader = metrics
                .current_leader
                .and_then(|id| metrics.membership_config.membership().get_node(&id).cloned().map(|node| (id, node)));
            for waiter in waiters {
                let _ = waiter.send(Err(ProposeError::NotLeader { leader: leader.clone() }));
            }
            continue;
        }
        crate::telemetry::proposed(requests.len());
        let command = Command { timestamp_ms: clock.now(), dedup_window_ms, requests };
        let receiver = match raft.client_write_ff(Arc::new(command)).await {
            Ok(receiver) => receiver,
            Err(fatal) => {
                let error = ProposeError::Unknown(format!("raft stopped: {fatal}"));
                for waiter in waiters {
                    let _ = waiter.send(Err(error.clone()));
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(give_up, receiver).await;
            drop(permit);
            let replies = match outcome {
                Ok(Ok(Ok(response))) => Ok((response.log_id.index, response.data)),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(forward)))) => Err(ProposeError::Unknown(format!(
                    "leadership moved to {:?} while the entry was pending; it may or may not commit",
                    forward.leader_id
                ))),
                Ok(Ok(Err(other))) => Err(ProposeError::Unknown(other.to_string())),
                Ok(Err(_)) => Err(ProposeError::Unknown("raft dropped the proposal".into())),
                Err(_) => Err(ProposeError::Unknown(format!("not applied within {give_up:?}"))),
            };
            match replies {
                Ok((log_index, replies)) => {
                    for (waiter, share) in waiters.into_iter().zip(shares) {
                        let Some(reply) = share.of(&replies) else { continue };
                        let _ = waiter.send(Ok(Committed { reply, log_index }));
                    }
                }
                Err(error) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

/// Which part of which merged request answers one client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    /// The merged request it went into.
    request: usize,
    /// For a publish: its events within the merged one.
    events: Option<std::ops::Range<usize>>,
}

impl Share {
    /// This client's answer among the merged requests' `replies`.
    fn of(&self, replies: &[Reply]) -> Option<Reply> {
        let reply = replies.get(self.request)?;
        Some(match (reply, &self.events) {
            (Reply::Published(all), Some(range)) => Reply::Published(all.get(range.clone())?.to_vec()),
            (other, _) => other.clone(),
        })
    }
}

/// Merges the single-room publishes of one room into one request, so that
/// the state machine stores their events together (one chunk instead of a
/// record per event) — the shape of many clients publishing one event each.
///
/// The requests of one entry come from concurrent clients, so any order
/// among them is a valid one, with two limits kept here: a client's own
/// requests are never reordered (each waits for its answer before sending
/// the next), and a publish never moves across a request that is not a
/// single-room publish (a room deleted or re-created in between would see
/// the event on the other side). Merged publishes stay all or nothing
/// together: they target the same room with the same `create_missing`, so
/// the state machine would accept or refuse each of them alike.
fn merge_publishes(requests: Vec<Request>) -> (Vec<Request>, Vec<Share>) {
    let mut merged: Vec<Request> = Vec::with_capacity(requests.len());
    let mut shares = Vec::with_capacity(requests.len());
    // Open merges since the last barrier: (room, create_missing) → index.
    let mut open: std::collections::HashMap<(String, bool), usize> = std::collections::HashMap::new();
    for request in requests {
        let room = match &request {
            Request::Publish { events, create_missing } => {
                let room = events.first().map(|e| e.room.as_str());
                room.filter(|r| events.iter().all(|e| e.room == *r)).map(|r| (r.to_owned(), *create_missing))
            }
            _ => None,
        };
        let Some(key) = room else {
            open.clear();
            shares.push(Share { request: merged.len(), events: None });
            merged.push(request);
            continue;
        };
        let Request::Publish { events, .. } = request else { unreachable!("only publishes have a room key") };
        match open.get(&key).copied() {
            Some(index) => {
                let Request::Publish { events: into, .. } = &mut merged[index] else {
                    unreachable!("open merges are publishes")
                };
                shares.push(Share { request: index, events: Some(into.len()..into.len() + events.len()) });
                into.extend(events);
            }
            None => {
                open.insert(key.clone(), merged.len());
                shares.push(Share { request: merged.len(), events: Some(0..events.len()) });
                merged.push(Request::Publish { events, create_missing: key.1 });
            }
        }
    }
    (merged, shares)
}

/// Unix milliseconds that never go backwards: not on this proposer when the
/// wall clock does, and not behind what the cluster already applied.
struct ClusterClock {
    last: u64,
    applied: watch::Receiver<u64>,
}

impl ClusterClock {
    fn now(&mut self) -> u64 {
        self.last = self.last.max(clock::wall_ms()).max(*self.applied.borrow());
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{NewEvent, Published};

    fn publish(data_bytes: usize, metadata_bytes: usize) -> Request {
        let event = NewEvent {
            room: "r".into(),
            event_type: "t".into(),
            data: "x".repeat(data_bytes),
            metadata: (metadata_bytes > 0).then(|| "m".repeat(metadata_bytes)),
            id: "id".into(),
            dedup: false,
        };
        Request::Publish { events: vec![event.clone(), event], create_missing: true }
    }

    #[test]
    fn a_request_weighs_its_payload_plus_a_fixed_overhead() {
        assert_eq!(weight(&publish(100, 20)), 2 * (64 + 120));
        let kv = Request::KvSet { key: "k".into(), value: "v".repeat(10), ttl_ms: None, nx: false };
        assert_eq!(weight(&kv), 74);
        assert_eq!(weight(&Request::Expire), 64);
    }

    #[test]
    fn a_batch_stops_at_the_request_count() {
        let mut source = 1..;
        let (batch, carried) = gather(0, |_| 1, || source.next());
        assert_eq!(batch.len(), MAX_BATCH_REQUESTS);
        assert_eq!(carried, None, "nothing taken beyond the count");
        assert_eq!(source.next(), Some(MAX_BATCH_REQUESTS), "the rest stays queued");
    }

    #[test]
    fn the_request_that_would_overflow_the_bytes_is_carried_to_the_next_entry() {
        let third = MAX_BATCH_BYTES / 3;
        let mut queue = vec![third, third, third].into_iter();
        let (batch, carried) = gather(third, |w| *w, || queue.next());
        assert_eq!(batch, vec![third, third, third]);
        assert_eq!(carried, Some(third));
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn an_oversized_first_request_goes_alone() {
        let mut queue = vec![1usize].into_iter();
        let (batch, carried) = gather(MAX_BATCH_BYTES * 2, |w| *w, || queue.next());
        assert_eq!(batch, vec![MAX_BATCH_BYTES * 2]);
        assert_eq!(carried, None, "the bytes limit is met: nothing more is taken");
        assert_eq!(queue.next(), Some(1));
    }

    fn one(room: &str, id: &str) -> Request {
        let event = NewEvent {
            room: room.into(),
            event_type: "t".into(),
            data: "1".into(),
            metadata: None,
            id: id.into(),
            dedup: true,
        };
        Request::Publish { events: vec![event], create_missing: true }
    }

    fn ids(request: &Request) -> Vec<&str> {
        match request {
            Request::Publish { events, .. } => events.iter().map(|e| e.id.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn publishes_to_one_room_merge_until_a_request_of_another_kind() {
        let requests = vec![
            one("a", "1"),
            one("b", "2"),
            one("a", "3"),
            Request::DeleteRoom { room: "a".into() },
            one("a", "4"),
            one("b", "5"),
            one("b", "6"),
        ];
        let (merged, shares) = merge_publishes(requests);
        let merged_ids: Vec<Vec<&str>> = merged.iter().map(ids).collect();
        assert_eq!(merged_ids, vec![vec!["1", "3"], vec!["2"], vec![], vec!["4"], vec!["5", "6"]]);
        let at: Vec<(usize, Option<std::ops::Range<usize>>)> =
            shares.iter().map(|s| (s.request, s.events.clone())).collect();
        assert_eq!(
            at,
            vec![
                (0, Some(0..1)),
                (1, Some(0..1)),
                (0, Some(1..2)),
                (2, None),
                (3, Some(0..1)),
                (4, Some(0..1)),
                (4, Some(1..2))
            ]
        );
    }

    #[test]
    fn publishes_that_could_be_answered_differently_do_not_merge() {
        let mut strict = one("a", "2");
        if let Request::Publish { create_missing, .. } = &mut strict {
            *create_missing = false;
        }
        let mut two_rooms = one("a", "3");
        if let (Request::Publish { events, .. }, Request::Publish { events: other, .. }) =
            (&mut two_rooms, one("b", "x"))
        {
            events.extend(other);
        }
        let (merged, _) = merge_publishes(vec![one("a", "1"), strict, two_rooms, one("a", "4")]);
        let merged_ids: Vec<Vec<&str>> = merged.iter().map(ids).collect();
        assert_eq!(merged_ids, vec![vec!["1"], vec!["2"], vec!["3", "x"], vec!["4"]]);
    }

    #[test]
    fn each_client_gets_its_own_part_of_a_merged_answer() {
        let landed = |offset| Published { room: "a".into(), offset, timestamp: 9, duplicate: false };
        let replies = vec![Reply::Published(vec![landed(0), landed(1), landed(2)]), Reply::Deleted];
        let second = Share { request: 0, events: Some(1..3) };
        assert_eq!(second.of(&replies), Some(Reply::Published(vec![landed(1), landed(2)])));
        assert_eq!(Share { request: 1, events: None }.of(&replies), Some(Reply::Deleted));
        let refused = vec![Reply::Rejected(crate::command::Rejection::RoomNotFound("a".into()))];
        assert_eq!(second.of(&refused), Some(refused[0].clone()), "a refusal is everyone's");
        assert_eq!(Share { request: 3, events: None }.of(&replies), None);
    }

    #[test]
    fn the_cluster_clock_never_goes_back() {
        let (_applied, rx) = watch::channel(0);
        let mut clock = ClusterClock { last: u64::MAX - 1, applied: rx };
        assert_eq!(clock.now(), u64::MAX - 1, "a wall clock behind the last stamp does not pull it back");
        let (_applied, rx) = watch::channel(0);
        let mut fresh = ClusterClock { last: 0, applied: rx };
        let (a, b) = (fresh.now(), fresh.now());
        assert!(a > 1_700_000_000_000 && b >= a);
    }

    #[test]
    fn a_new_leader_stamps_no_earlier_than_what_was_applied() {
        let ahead = clock::wall_ms() + 3_600_000;
        let (applied, rx) = watch::channel(ahead);
        let mut clock = ClusterClock { last: 0, applied: rx };
        assert_eq!(clock.now(), ahead, "the previous leader's clock was an hour ahead of ours");
        applied.send_replace(ahead + 5);
        assert_eq!(clock.now(), ahead + 5);
    }
}
