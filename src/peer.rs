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

/// Node-to-node HTTP. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    raft: reqwest::Client,
    snapshot: reqwest::Client,
    forward: reqwest::Client,
    public: reqwest::Client,
    secret: Option<String>,
    /// This node's id and incarnation, sent with internal requests.
    sender: Option<(u64, String)>,
    /// The cluster's id, sent once known.
    cluster: Arc<RwLock<Option<String>>>,
}

fn build() -> reqwest::Client {
    // Building fails only if the TLS backend or resolver cannot start;
    // there is no TLS backend and the default resolver always starts.
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl PeerClient {
    /// A client that sends `secret` on the internal lanes, if set.
    pub fn new(secret: Option<String>) -> Self {
        let cluster = Arc::default();
        Self { raft: build(), snapshot: build(), forward: build(), public: build(), secret, sender: None, cluster }
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
        let client = match lane {
            Lane::Raft => &self.raft,
            Lane::Snapshot => &self.snapshot,
            Lane::Forward => &self.forward,
            Lane::Public => &self.public,
        };
        let mut request = client.request(method, peer.join(path));
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
