//! Who a data directory belongs to: a node id, and an incarnation (a new
//! id each time the directory starts empty). The cluster records each
//! member's incarnation, so a node whose directory was wiped, or replaced
//! by another node's, is recognised and kept out: having forgotten its log
//! and its vote, it could lose acknowledged writes or vote twice in a term.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::base_url::BaseUrl;
use crate::codec;
use crate::durable;
use crate::peer::{Lane, PeerClient};
use crate::raft::NodeId;

const FILE: &str = "identity";

/// The identity of this node's data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node id the directory belongs to.
    pub node: NodeId,
    /// Made when the directory was first used; never changes after.
    pub incarnation: String,
}

/// Why a data directory cannot be used as this node's.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// It belongs to another node id.
    #[error("the data directory {dir} belongs to node {owner}, not {wanted}: start it with --id {owner}")]
    OtherNode {
        /// The directory.
        dir: String,
        /// The id in it.
        owner: NodeId,
        /// The id asked for.
        wanted: NodeId,
    },
    /// The file could not be read or written.
    #[error("identity file in {dir}: {reason}")]
    Unreadable {
        /// The directory.
        dir: String,
        /// Why.
        reason: String,
    },
}

impl Identity {
    /// Whether `data_dir` has an identity yet (it was used by a version
    /// that writes one).
    pub fn exists(data_dir: &Path) -> bool {
        data_dir.join(FILE).exists()
    }

    /// The identity in `data_dir`, made (with a new incarnation) if the
    /// directory has none yet. Refuses a directory of another node.
    pub fn load_or_create(data_dir: &Path, node: NodeId) -> Result<Identity, IdentityError> {
        let path = data_dir.join(FILE);
        let unreadable = |reason: String| IdentityError::Unreadable { dir: data_dir.display().to_string(), reason };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let identity: Identity = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
                if identity.node != node {
                    return Err(IdentityError::OtherNode {
                        dir: data_dir.display().to_string(),
                        owner: identity.node,
                        wanted: node,
                    });
                }
                Ok(identity)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity { node, incarnation: uuid::Uuid::new_v4().simple().to_string() };
                let bytes = serde_json::to_vec(&identity).map_err(|e| unreadable(e.to_string()))?;
                durable::replace_file(&path, &bytes).map_err(|e| unreadable(e.to_string()))?;
                Ok(identity)
            }
            Err(e) => Err(unreadable(e.to_string())),
        }
    }
}

/// What a node says of itself and its cluster (`/raft/identity`): how a
/// starting or joining node finds out whether its id is already taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// The answering node.
    pub identity: Identity,
    /// Whether it belongs to an initialised cluster.
    pub initialized: bool,
    /// The cluster's id, if named yet.
    pub cluster: Option<String>,
    /// The members it knows (voters and learners).
    pub members: Vec<NodeId>,
    /// The incarnation recorded for `asking`, the node that asked, if any.
    pub recorded: Option<String>,
}

/// Asks the node at `url` to introduce itself to node `asking`; `None` if
/// it cannot be asked (down, or a version without `/raft/identity`).
pub async fn ask(peers: &PeerClient, url: &BaseUrl, asking: NodeId) -> Option<Introduction> {
    let body = codec::encode(&asking).ok()?;
    let request = peers.post(Lane::Forward, url, "/raft/identity").body(body);
    let response = request.timeout(std::time::Duration::from_secs(2)).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    codec::decode(&response.bytes().await.ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_its_incarnation_and_refuses_other_ids() {
        let dir = tempfile::TempDir::new().unwrap();
        let first = Identity::load_or_create(dir.path(), 3).unwrap();
        assert_eq!(Identity::load_or_create(dir.path(), 3).unwrap(), first, "the same after a restart");
        let error = Identity::load_or_create(dir.path(), 4).unwrap_err();
        assert!(error.to_string().contains("belongs to node 3"), "{error}");
        let wiped = tempfile::TempDir::new().unwrap();
        assert_ne!(Identity::load_or_create(wiped.path(), 3).unwrap().incarnation, first.incarnation);
    }
}
