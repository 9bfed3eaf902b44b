//! The replicated key-value store. Writes go through Raft like publishes;
//! reads are local (or strong) and hide keys whose expiry cluster time has
//! passed.

use std::sync::Arc;
use std::time::Duration;

use super::{read_point, write, Consistency, ServiceError};
use crate::command::{Reply, Request};
use crate::node::Node;

/// The KV operations of one node. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    node: Arc<Node>,
}

impl Kv {
    /// KV operations through `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Sets `key` to `value`, optionally expiring after `ttl` and only if
    /// absent (`nx`). Answers whether it wrote (false only with `nx` on a
    /// live key).
    pub async fn set(&self, key: &str, value: String, ttl: Option<Duration>, nx: bool) -> Result<bool, ServiceError> {
        let ttl_ms = ttl.map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64);
        let request = Request::KvSet { key: key.to_owned(), value, ttl_ms, nx };
        match write(&self.node, request).await? {
            Reply::KvSet { written } => Ok(written),
            other => Err(ServiceError::unexpected("kv set", other)),
        }
    }

    /// The live value of `key`: live by cluster time, the rule the state
    /// machine decides `nx` by, so that every node at the same log index
    /// answers alike whatever its own clock says.
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<Option<String>, ServiceError> {
        read_point(&self.node, consistency).await?;
        Ok(self.node.store.kv_get(key, self.node.cluster_time())?)
    }

    /// Deletes `key`; answers whether a live key was removed.
    pub async fn delete(&self, key: &str) -> Result<bool, ServiceError> {
        match write(&self.node, Request::KvDelete { key: key.to_owned() }).await? {
            Reply::KvDeleted { existed } => Ok(existed),
            other => Err(ServiceError::unexpected("kv delete", other)),
        }
    }
}
