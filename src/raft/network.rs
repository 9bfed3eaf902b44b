//! The client half of Raft's transport: openraft's RPCs as bincode over HTTP
//! to the peers' `/raft/*` routes (served by `api::internal`).
//!
//! Each peer gets one reused HTTP client for votes and appends, and a
//! separate one for snapshot chunks, so a heartbeat never queues behind a
//! large chunk on the same connection. A peer that cannot be reached is
//! reported as `Unreachable`, which makes openraft back off instead of
//! retrying in a tight loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Node, NodeId, TypeConfig};
use crate::codec;

/// Header that carries the cluster secret on internal requests.
pub const SECRET_HEADER: &str = "x-synap-cluster-secret";

/// The HTTP clients of one peer.
#[derive(Clone)]
struct PeerClients {
    rpc: reqwest::Client,
    snapshot: reqwest::Client,
}

/// Creates a [`PeerNetwork`] per peer, reusing each peer's HTTP clients
/// across leadership terms.
#[derive(Clone)]
pub struct NetworkFactory {
    id: NodeId,
    secret: Option<String>,
    peers: Arc<Mutex<HashMap<NodeId, PeerClients>>>,
}

impl NetworkFactory {
    /// A factory for node `id`, sending `secret` on every request if set.
    pub fn new(id: NodeId, secret: Option<String>) -> Self {
        Self { id, secret, peers: Arc::default() }
    }

    fn clients(&self, target: NodeId) -> PeerClients {
        // A poisoned lock only means another thread panicked while inserting
        // a client; the map itself is still usable.
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.entry(target).or_insert_with(|| PeerClients { rpc: build_client(), snapshot: build_client() }).clone()
    }
}

fn build_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        PeerNetwork {
            id: self.id,
            target,
            base: node.addr.trim_end_matches('/').to_owned(),
            secret: self.secret.clone(),
            clients: self.clients(target),
        }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    id: NodeId,
    target: NodeId,
    base: String,
    secret: Option<String>,
    clients: PeerClients,
}

/// What went wrong on the wire, before openraft's error types.
enum WireError {
    Unreachable(String),
    Timeout,
    /// The peer refused the body as too large (413).
    TooLarge,
    Other(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Unreachable(e) => write!(f, "unreachable: {e}"),
            WireError::Timeout => write!(f, "timed out"),
            WireError::TooLarge => write!(f, "payload too large"),
            WireError::Other(e) => write!(f, "{e}"),
        }
    }
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &Req,
        ttl: Duration,
    ) -> Result<Result<Resp, E>, WireError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let bytes = codec::encode(body).map_err(|e| WireError::Other(e.to_string()))?;
        let mut request = client.post(format!("{}{path}", self.base)).timeout(ttl).body(bytes);
        if let Some(secret) = &self.secret {
            request = request.header(SECRET_HEADER, secret);
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(WireError::TooLarge);
        }
        if !status.is_success() {
            // 401 (wrong secret) or a peer that is not serving Raft yet: both
            // are states to back off from, not to hammer.
            return Err(WireError::Unreachable(format!("{} answered {status}", self.base)));
        }
        let body = response.bytes().await.map_err(classify)?;
        codec::decode(&body).map_err(|e| WireError::Other(e.to_string()))
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        ttl: Duration,
        e: WireError,
    ) -> RPCError<NodeId, Node, E> {
        match e {
            WireError::Unreachable(msg) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg))),
            WireError::Timeout => RPCError::Timeout(Timeout { action, id: self.id, target: self.target, timeout: ttl }),
            WireError::TooLarge => RPCError::Network(NetworkError::new(&std::io::Error::other("payload too large"))),
            WireError::Other(msg) => RPCError::Network(NetworkError::new(&std::io::Error::other(msg))),
        }
    }

    fn remote<E: std::error::Error>(&self, e: E) -> RPCError<NodeId, Node, E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

fn classify(e: reqwest::Error) -> WireError {
    if e.is_timeout() {
        WireError::Timeout
    } else if e.is_connect() {
        WireError::Unreachable(e.to_string())
    } else {
        WireError::Other(e.to_string())
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let ttl = option.hard_ttl();
        let client = self.clients.rpc.clone();
        let entries = rpc.entries.len() as u64;
        match self.call(&client, "/raft/append", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            // Tell openraft to send fewer entries at a time instead of
            // resending the same oversized batch forever.
            Err(WireError::TooLarge) => {
                Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1))))
            }
            Err(e) => Err(self.rpc_error(RPCTypes::AppendEntries, ttl, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        let client = self.clients.snapshot.clone();
        match self.call(&client, "/raft/snapshot", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.rpc_error(RPCTypes::InstallSnapshot, ttl, e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let ttl = option.hard_ttl();
        let client = self.clients.rpc.clone();
        match self.call(&client, "/raft/vote", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.rpc_error(RPCTypes::Vote, ttl, e)),
        }
    }
}
