//! The client half of Raft's transport: openraft's RPCs as bincode over HTTP
//! to the peers' `/raft/*` routes (served by `api::internal`).
//!
//! Votes and appends travel on the peer client's Raft lane, snapshot chunks
//! on their own lane, so a heartbeat never queues behind a large chunk on
//! the same connection. A peer that cannot be reached is reported as
//! `Unreachable`, which makes openraft back off instead of retrying in a
//! tight loop.

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
use crate::base_url::BaseUrl;
use crate::codec;
use crate::peer::{Lane, PeerClient};

/// Creates a [`PeerNetwork`] per peer over the node's peer client.
#[derive(Clone)]
pub struct NetworkFactory {
    id: NodeId,
    peers: PeerClient,
}

impl NetworkFactory {
    /// A factory for node `id`.
    pub fn new(id: NodeId, peers: PeerClient) -> Self {
        Self { id, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        // Member addresses were checked when they joined.
        PeerNetwork { id: self.id, target, base: BaseUrl::lenient(&node.addr), peers: self.peers.clone() }
    }
}

/// The connection to one peer.
pub struct PeerNetwork {
    id: NodeId,
    target: NodeId,
    base: BaseUrl,
    peers: PeerClient,
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
        lane: Lane,
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
        let request = self.peers.post(lane, &self.base, path).timeout(ttl).body(bytes);
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
        // openraft drops an append that takes longer than the heartbeat
        // interval and sends the same range again. Giving up a little
        // earlier lets a batch too large for the link (or the follower's
        // disk) come back as a hint to send fewer entries, instead of timing
        // out forever.
        let ttl = option.hard_ttl().mul_f64(0.9);
        let entries = rpc.entries.len() as u64;
        let fewer = || RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2).max(1)));
        match self.call(Lane::Raft, "/raft/append", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            // Tell openraft to send fewer entries at a time instead of
            // resending the same oversized batch forever.
            Err(WireError::TooLarge) => Err(fewer()),
            Err(WireError::Timeout) if entries > 1 => Err(fewer()),
            Err(e) => Err(self.rpc_error(RPCTypes::AppendEntries, ttl, e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let ttl = option.hard_ttl();
        match self.call(Lane::Snapshot, "/raft/snapshot", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.rpc_error(RPCTypes::InstallSnapshot, ttl, e)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let ttl = option.hard_ttl();
        match self.call(Lane::Raft, "/raft/vote", &rpc, ttl).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.remote(e)),
            Err(e) => Err(self.rpc_error(RPCTypes::Vote, ttl, e)),
        }
    }
}
