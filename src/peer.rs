//! The one HTTP client a node uses to talk to other nodes: Raft RPCs,
//! snapshot chunks, forwarded writes and read indexes, joins, health checks
//! and relayed admin requests.
//!
//! Requests travel on separate lanes (connection pools), so that a
//! heartbeat never queues behind a snapshot chunk or a batch of forwarded
//! writes on the same HTTP/1.1 connection. The cluster secret is attached
//! here, on the lanes that reach `/raft/*`, and nowhere else.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};

use crate::base_url::BaseUrl;

/// Header that carries the cluster secret on internal requests.
pub const SECRET_HEADER: &str = "x-synap-cluster-secret";

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
        Self { raft: build(), snapshot: build(), forward: build(), public: build(), secret }
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
        let request = client.request(method, peer.join(path));
        match (&self.secret, lane) {
            (_, Lane::Public) | (None, _) => request,
            (Some(secret), _) => request.header(SECRET_HEADER, secret),
        }
    }

    /// A POST to `path` on `peer`.
    pub fn post(&self, lane: Lane, peer: &BaseUrl, path: &str) -> RequestBuilder {
        self.request(lane, Method::POST, peer, path)
    }
}
