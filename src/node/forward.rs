//! Forwarding of writes from a follower to the leader (`/raft/forward`).
//!
//! A follower never proposes: it sends the validated [`Request`]s to the
//! leader, batched, and the leader's proposer packs them with its own
//! clients' requests. Whether a
//! failed forward may be retried depends on whether the leader can have taken
//! it; [`ForwardError`] keeps that distinction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use super::budget::{Budget, Reservation};
use super::proposer::weight;
use crate::base_url::BaseUrl;
use crate::codec;
use crate::command::{Reply, Request};
use crate::peer::{Lane, PeerClient};
use crate::raft::NodeId;

/// Body of `POST /raft/forward`: the writes a follower gathered while its
/// previous forwards were in flight.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The writes to propose, each answered on its own.
    pub requests: Vec<Request>,
    /// How long the leader may take, in milliseconds.
    pub timeout_ms: u64,
}

/// Answer to one request of `POST /raft/forward` (the body is a list of
/// these, in request order).
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Committed and applied on the leader at this log index.
    Committed {
        /// The state machine's answer.
        reply: Reply,
        /// Log index of the entry; the follower waits to apply it too.
        log_index: u64,
    },
    /// The target is not the leader and did not append the request.
    NotLeader {
        /// Who it thinks leads.
        leader: Option<NodeId>,
    },
    /// The leader proposed it but does not know whether it committed.
    Unknown(String),
    /// The leader has too many writes waiting and did not take it.
    Overloaded(String),
}

/// Why a forward failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The leader provably did not take the request (connection refused,
    /// or it answered that it is not the leader): safe to retry.
    #[error("leader unavailable: {0}")]
    NotTaken(String),
    /// The request may have been taken: retrying could apply it twice.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// This node has too many writes waiting to be forwarded; not taken.
    #[error("{0}")]
    Overloaded(String),
}

/// Most forward RPCs in flight from one node; requests arriving meanwhile
/// wait and travel together in the next one.
const MAX_IN_FLIGHT: usize = 4;
/// Most requests in one forward RPC.
const MAX_BATCH: usize = 1024;
/// Most bytes (roughly) of requests in one forward RPC: far below the
/// internal routes' body limit, so that a burst of large writes travels in
/// several RPCs instead of one the leader refuses.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

struct Pending {
    url: BaseUrl,
    request: Request,
    deadline: Instant,
    reply: oneshot::Sender<Result<ForwardReply, ForwardError>>,
    /// Its bytes in the forwarder's budget, given back once it is sent.
    _queued: Reservation,
}

/// Forwards writes to the leader, many per RPC: like the leader's
/// proposer, it gathers the requests that arrive while earlier forwards are
/// in flight, so the leader handles one HTTP request per batch rather than
/// one per client write.
#[derive(Clone)]
pub struct Forwarder {
    peers: PeerClient,
    queue: mpsc::UnboundedSender<Pending>,
    budget: Budget,
}

impl Forwarder {
    /// A forwarder over `peers` that lets at most `max_queued_bytes` of
    /// requests wait. Starts its batching task, so it needs a tokio runtime.
    pub fn new(peers: PeerClient, max_queued_bytes: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_batches(peers.clone(), rx));
        Self { peers, queue, budget: Budget::new(max_queued_bytes) }
    }

    /// Sends `request` to the leader at `leader_url` and waits up to
    /// `timeout` for its answer. Dropping the future abandons the request:
    /// if it has not been sent yet, it never will be.
    pub async fn forward(
        &self,
        leader_url: &BaseUrl,
        request: &Request,
        timeout: Duration,
    ) -> Result<ForwardReply, ForwardError> {
        let queued = self.budget.try_reserve(weight(request)).ok_or_else(|| {
            ForwardError::Overloaded(format!(
                "this node already has {} KiB of writes waiting for the leader (limit {} KiB); try again",
                self.budget.used() / 1024,
                self.budget.limit() / 1024
            ))
        })?;
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let pending = Pending { url: leader_url.clone(), request: request.clone(), deadline, reply, _queued: queued };
        self.queue.send(pending).map_err(|_| ForwardError::NotTaken("the forwarder stopped".into()))?;
        match tokio::time::timeout(timeout + Duration::from_millis(200), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ForwardError::Unknown("the forwarder dropped the request".into())),
            Err(_) => Err(ForwardError::Unknown("no answer from the leader within the write timeout".into())),
        }
    }
}

/// Routes each request to the batching worker of its leader, so that RPCs
/// stuck on a leader that went away (paused, cut off) hold only that
/// leader's slots while the new leader's batches flow.
async fn run_batches(peers: PeerClient, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut workers: HashMap<BaseUrl, mpsc::UnboundedSender<Pending>> = HashMap::new();
    while let Some(mut pending) = queue.recv().await {
        loop {
            let worker = workers.entry(pending.url.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(leader_worker(peers.clone(), pending.url.clone(), rx));
                tx
            });
            match worker.send(pending) {
                Ok(()) => break,
                // That worker retired after being idle: start a new one.
                Err(mpsc::error::SendError(back)) => {
                    workers.remove(&back.url);
                    pending = back;
                }
            }
        }
    }
}

/// Batches the requests for one leader: waits for a free slot, takes what
/// queued meanwhile (up to [`MAX_BATCH`] requests and about
/// [`MAX_BATCH_BYTES`]), sends it as one RPC; what did not fit goes first
/// next time. Ends after a minute idle.
async fn leader_worker(peers: PeerClient, url: BaseUrl, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut pending: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        if pending.is_empty() {
            match tokio::time::timeout(Duration::from_secs(60), queue.recv_many(&mut pending, MAX_BATCH)).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) => {
                    // Idle: refuse new requests (the router starts a new
                    // worker for them), but send whatever slipped in first.
                    queue.close();
                    while let Ok(late) = queue.try_recv() {
                        pending.push(late);
                    }
                    if pending.is_empty() {
                        return;
                    }
                }
            }
        } else {
            while pending.len() < MAX_BATCH {
                let Ok(more) = queue.try_recv() else { break };
                pending.push(more);
            }
        }
        // Requests whose caller gave up are not sent at all.
        pending.retain(|p| !p.reply.is_closed());
        let rest = pending.split_off(fitting(&pending));
        let group = std::mem::replace(&mut pending, rest);
        if group.is_empty() {
            continue;
        }
        let (peers, url) = (peers.clone(), url.clone());
        tokio::spawn(async move {
            send_batch(&peers, &url, group).await;
            drop(permit);
        });
    }
}

/// How many of `pending`, from the first, make one RPC of at most
/// [`MAX_BATCH_BYTES`] (at least one, whatever it weighs).
fn fitting(pending: &[Pending]) -> usize {
    let mut bytes = 0;
    let fit = pending.iter().take_while(|p| {
        bytes += weight(&p.request);
        bytes <= MAX_BATCH_BYTES
    });
    fit.count().max(1).min(pending.len())
}

async fn send_batch(peers: &PeerClient, url: &BaseUrl, group: Vec<Pending>) {
    let timeout = group.iter().map(|p| p.deadline).max().map_or(Duration::ZERO, |d| d - Instant::now());
    // The budget is for what waits here: once sent, it is the leader's.
    let (requests, waiters): (Vec<Request>, Vec<_>) = group.into_iter().map(|p| (p.request, p.reply)).unzip();
    let started = Instant::now();
    let answers = call(peers, url, &ForwardRequest { requests, timeout_ms: timeout.as_millis() as u64 }, timeout)
        .await
        .inspect(|_| crate::telemetry::forwarded(started.elapsed()))
        .and_then(|replies: Vec<ForwardReply>| {
            if replies.len() == waiters.len() {
                Ok(replies)
            } else {
                Err(ForwardError::Unknown(format!("leader answered {} of {} requests", replies.len(), waiters.len())))
            }
        });
    match answers {
        Ok(replies) => {
            for (waiter, reply) in waiters.into_iter().zip(replies) {
                let _ = waiter.send(Ok(reply));
            }
        }
        Err(e) => {
            for waiter in waiters {
                let _ = waiter.send(Err(e.clone()));
            }
        }
    }
}

async fn call<T: serde::de::DeserializeOwned>(
    peers: &PeerClient,
    url: &BaseUrl,
    body: &ForwardRequest,
    timeout: Duration,
) -> Result<T, ForwardError> {
    let bytes = codec::encode(body).map_err(|e| ForwardError::NotTaken(e.to_string()))?;
    let http =
        peers.post(Lane::Forward, url, "/raft/forward").timeout(timeout + Duration::from_millis(200)).body(bytes);
    let response = http.send().await.map_err(|e| {
        if e.is_connect() {
            ForwardError::NotTaken(e.to_string())
        } else {
            ForwardError::Unknown(e.to_string())
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        // The leader's router refused the request before handling it.
        return Err(ForwardError::NotTaken(format!("leader answered {status}")));
    }
    let bytes = response.bytes().await.map_err(|e| ForwardError::Unknown(e.to_string()))?;
    codec::decode(&bytes).map_err(|e| ForwardError::Unknown(e.to_string()))
}

impl Forwarder {
    /// Asks the leader at `leader_url` for its read index (`/raft/read-index`).
    pub async fn read_index(&self, leader_url: &BaseUrl, timeout: Duration) -> Result<u64, ForwardError> {
        let http = self.peers.post(Lane::Forward, leader_url, "/raft/read-index").timeout(timeout);
        let response = http.send().await.map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        if !response.status().is_success() {
            return Err(ForwardError::NotTaken(format!("leader answered {}", response.status())));
        }
        let bytes = response.bytes().await.map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        let answer: Result<u64, String> = codec::decode(&bytes).map_err(|e| ForwardError::NotTaken(e.to_string()))?;
        answer.map_err(ForwardError::NotTaken)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::body::Bytes;
    use axum::routing::post;

    use super::*;

    /// A fake leader on a free port that answers every forwarded request
    /// with `NotLeader(7)` (or never, if it `stall`s) and takes bodies of at
    /// most 10 MiB. Returns its URL and how many batches it received.
    async fn leader(stall: bool) -> (BaseUrl, Arc<AtomicUsize>) {
        let batches = Arc::new(AtomicUsize::new(0));
        let seen = batches.clone();
        let app = axum::Router::new().route(
            "/raft/forward",
            post(move |body: Bytes| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    if stall {
                        std::future::pending::<()>().await;
                    }
                    let batch: ForwardRequest = codec::decode(&body).expect("a forward request");
                    let replies: Vec<ForwardReply> =
                        batch.requests.iter().map(|_| ForwardReply::NotLeader { leader: Some(7) }).collect();
                    codec::encode(&replies).expect("encodable")
                }
            }),
        );
        let app = app.layer(axum::extract::DefaultBodyLimit::max(10 << 20));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = BaseUrl::parse(&format!("http://{}", listener.local_addr().expect("address"))).expect("url");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, batches)
    }

    #[tokio::test]
    async fn a_burst_of_large_writes_travels_in_rpcs_the_leader_accepts() {
        let forwarder = Forwarder::new(PeerClient::new(None, None).unwrap(), 64 << 20);
        let (leader, batches) = leader(false).await;
        let megabyte =
            |i: usize| Request::KvSet { key: format!("k{i}"), value: "v".repeat(1 << 20), ttl_ms: None, nx: false };
        // 30 MiB at once: one RPC would be refused by the leader's 10 MiB
        // body limit.
        let requests: Vec<Request> = (0..30).map(megabyte).collect();
        let answers = futures_util::future::join_all(
            requests.iter().map(|request| forwarder.forward(&leader, request, Duration::from_secs(60))),
        )
        .await;
        for answer in answers {
            assert!(matches!(answer, Ok(ForwardReply::NotLeader { leader: Some(7) })), "{answer:?}");
        }
        assert!(batches.load(Ordering::SeqCst) >= 4, "30 MiB in RPCs of at most 8 MiB");
    }

    #[tokio::test]
    async fn a_stalled_leader_holds_only_its_own_slots() {
        let forwarder = Forwarder::new(PeerClient::new(None, None).unwrap(), 64 << 20);
        let (stalled, _) = leader(true).await;
        let (healthy, batches) = leader(false).await;
        // Fill every slot of the stalled leader's worker, and queue more.
        let stuck: Vec<_> = (0..MAX_IN_FLIGHT + 2)
            .map(|_| {
                let (forwarder, url) = (forwarder.clone(), stalled.clone());
                tokio::spawn(async move { forwarder.forward(&url, &Request::Expire, Duration::from_secs(60)).await })
            })
            .collect();
        // The healthy leader's requests still get through, each answered.
        let answers = futures_util::future::join_all(
            (0..10).map(|_| forwarder.forward(&healthy, &Request::Expire, Duration::from_secs(60))),
        );
        let answers = tokio::time::timeout(Duration::from_secs(20), answers)
            .await
            .expect("requests to a healthy leader are not held up by a stalled one");
        for answer in answers {
            assert!(matches!(answer, Ok(ForwardReply::NotLeader { leader: Some(7) })), "{answer:?}");
        }
        let rpcs = batches.load(Ordering::SeqCst);
        assert!((1..=10).contains(&rpcs), "{rpcs} RPCs for 10 requests");
        assert!(stuck.iter().all(|task| !task.is_finished()), "the stalled leader's requests are still waiting");
        for task in stuck {
            task.abort();
        }
    }
}
