//! The one HTTP client a node uses to talk to other nodes: Raft RPCs,
//! snapshot chunks, forwarded writes and read indexes, joins, health checks
//! and relayed admin requests.
//!
//! Requests travel on separate lanes (connection pools), so that a
//! heartbeat never queues behind a snapshot chunk or a batch of forwarded
//! writes on the same HTTP/1.1 connection. The cluster secret is attached
//! here, on the lanes that reach `/raft/*`, and nowhere else, with who
//! sends it (node id, incarnation, cluster id) so that a peer can refuse a
//! stale incarnation or another cluster.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, RequestBuilder};

use crate::base_url::BaseUrl;
use crate::tls::TlsError;

/// Header that carries the cluster secret on internal requests.
pub const SECRET_HEADER: &str = "x-synap-cluster-secret";
/// Header that names the sending node on internal requests.
pub const NODE_HEADER: &str = "x-synap-node";
/// Header that carries the sending node's incarnation.
pub const INCARNATION_HEADER: &str = "x-synap-incarnation";
/// Header that carries the sender's cluster id, once it knows one.
pub const CLUSTER_HEADER: &str = "x-synap-cluster";

/// Which connection pool a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Votes and appends (`/raft/vote`, `/raft/append`).
    Raft,
    /// Snapshot chunks (`/raft/snapshot`).
    Snapshot,
    /// Forwarded writes and read indexes (`/raft/forward`, `/raft/read-index`).
    Forward,
    /// The public API of another node: joins, health checks, relayed admin
    /// requests. No cluster secret.
    Public,
}

/// Node-to-node HTTP. Cheap to clone; clones share the lanes, so a TLS
/// reload reaches every holder.
#[derive(Clone)]
pub struct PeerClient {
    lanes: Arc<RwLock<Lanes>>,
    secret: Option<String>,
    /// This node's id and incarnation, sent with internal requests.
    sender: Option<(u64, String)>,
    /// The cluster's id, sent once known.
    cluster: Arc<RwLock<Option<String>>>,
}

/// One connection pool per [`Lane`].
struct Lanes {
    raft: reqwest::Client,
    snapshot: reqwest::Client,
    forward: reqwest::Client,
    public: reqwest::Client,
}

impl Lanes {
    fn build(tls: Option<&rustls::ClientConfig>) -> Result<Self, TlsError> {
        let lane = || {
            crate::tls::http_client(tls, |builder| {
                builder
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .pool_idle_timeout(Duration::from_secs(60))
            })
        };
        Ok(Self { raft: lane()?, snapshot: lane()?, forward: lane()?, public: lane()? })
    }
}

impl PeerClient {
    /// A client that sends `secret` on the internal lanes, if set, and
    /// talks TLS as `tls` says (peers' certificates checked against the
    /// system's roots without it).
    pub fn new(secret: Option<String>, tls: Option<&rustls::ClientConfig>) -> Result<Self, TlsError> {
        let lanes = Arc::new(RwLock::new(Lanes::build(tls)?));
        Ok(Self { lanes, secret, sender: None, cluster: Arc::default() })
    }

    /// Replaces the lanes with new ones over `tls` (after the files were
    /// read again); requests under way finish on the old ones.
    pub fn set_tls(&self, tls: &rustls::ClientConfig) -> Result<(), TlsError> {
        let lanes = Lanes::build(Some(tls))?;
        *self.lanes.write().unwrap_or_else(|p| p.into_inner()) = lanes;
        Ok(())
    }

    /// Also tells the receivers of internal requests who sends them: node
    /// `id`, incarnation `incarnation` (peers refuse a stale incarnation).
    pub fn with_sender(mut self, id: u64, incarnation: String) -> Self {
        self.sender = Some((id, incarnation));
        self
    }

    /// From now on, tells receivers the cluster this node belongs to (they
    /// refuse another cluster's requests).
    pub fn set_cluster(&self, cluster: &str) {
        let mut known = self.cluster.write().unwrap_or_else(|p| p.into_inner());
        if known.as_deref() != Some(cluster) {
            *known = Some(cluster.to_owned());
        }
    }

    /// A request to `path` on `peer`. Set a timeout on it: the lanes have
    /// none of their own (a join waits minutes, a vote milliseconds).
    pub fn request(&self, lane: Lane, method: Method, peer: &BaseUrl, path: &str) -> RequestBuilder {
        let lanes = self.lanes.read().unwrap_or_else(|p| p.into_inner());
        let client = match lane {
            Lane::Raft => &lanes.raft,
            Lane::Snapshot => &lanes.snapshot,
            Lane::Forward => &lanes.forward,
            Lane::Public => &lanes.public,
        };
        let mut request = client.request(method, peer.join(path));
        drop(lanes);
        if lane == Lane::Public {
            return request;
        }
        if let Some(secret) = &self.secret {
            request = request.header(SECRET_HEADER, secret);
        }
        if let Some((id, incarnation)) = &self.sender {
            request = request.header(NODE_HEADER, id.to_string()).header(INCARNATION_HEADER, incarnation);
        }
        if let Some(cluster) = self.cluster.read().unwrap_or_else(|p| p.into_inner()).as_deref() {
            request = request.header(CLUSTER_HEADER, cluster);
        }
        request
    }

    /// A POST to `path` on `peer`.
    pub fn post(&self, lane: Lane, peer: &BaseUrl, path: &str) -> RequestBuilder {
        self.request(lane, Method::POST, peer, path)
    }
}
