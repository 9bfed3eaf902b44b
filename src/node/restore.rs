//! Restoring a backup into a new data directory.
//!
//! `synap restore` ([`prepare`]) checks the backup, loads its state into the
//! directory's applied state and marks the directory as restored. The first
//! `synap serve` on it ([`finish`]), which knows the node's id and address,
//! makes it a one-node cluster holding that state: the membership is this
//! node alone, the Raft log is empty and marked purged up to the backup's
//! last entry, and a snapshot of the state sits at that point. A node that
//! then joins with `--join` gets the state as that snapshot, since the log
//! before it does not exist.
//!
//! The state keeps rooms, offsets, events, KV keys with their TTLs, dedup
//! ids, consumers and the cluster clock. It forgets the cluster it came
//! from: the cluster's id and its members' incarnations go, so the restored
//! cluster is a new one, named by its leader, that members of the old one
//! cannot join by mistake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{Membership, SnapshotMeta, StoredMembership, Vote};
use serde::Serialize;

use crate::base_url::BaseUrl;
use crate::codec::{self, CodecError};
use crate::durable;
use crate::raft::log_store::{self, segments::LogError};
use crate::raft::{state_machine, LogId, Node as RaftNode, NodeId};
use crate::store::backup::{self, BackupError};
use crate::store::{database, keys, snapshot, Database, PointInTime, Store, StoreError, Writes};

/// Present in a data directory prepared by `synap restore` until the first
/// start finished it; holds the backup's last log id.
const MARKER: &str = "restored";

/// Page cache while restoring.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup is damaged or unreadable.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The target directory holds something already.
    #[error("{0} is not empty: restore into a new directory")]
    NotEmpty(String),
    /// The backup holds no applied state.
    #[error("the backup holds no applied state")]
    Empty,
    /// A restored directory must start alone.
    #[error(
        "this data directory was restored from a backup: start it as a one-node cluster (without --peers or \
         --join), then add nodes to it with --join"
    )]
    NotAlone,
    /// Writing the state failed.
    #[error("restoring the state: {0}")]
    Store(#[from] StoreError),
    /// Writing the Raft log failed.
    #[error("restoring the raft log: {0}")]
    Log(#[from] LogError),
    /// Encoding failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A file operation failed.
    #[error("restoring: {0}")]
    Io(#[from] std::io::Error),
}

/// What `synap restore` prepared.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The last log index the backup's state had applied.
    pub last_index: u64,
    /// Records of state restored.
    pub records: u64,
    /// Bytes of the backup's snapshot.
    pub snapshot_bytes: u64,
    /// Its CRC-32, checked.
    pub crc32: String,
}

/// Prepares `data_dir` (new or empty) from the backup file `from`.
pub fn prepare(from: &Path, data_dir: &Path) -> Result<Prepared, RestoreError> {
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(RestoreError::NotEmpty(data_dir.display().to_string()));
    }
    // Checked before anything is written: a damaged backup leaves nothing.
    backup::check(from)?;
    durable::create_dir_all(data_dir)?;
    let unpacked = data_dir.join("restoring.snap");
    let checked = backup::unpack(from, &unpacked)?;
    let meta: SnapshotMeta<NodeId, RaftNode> = codec::decode(&snapshot::read_header(&unpacked)?)?;
    let last = meta.last_log_id.ok_or(RestoreError::Empty)?;
    let records = {
        let store = open_store(data_dir)?;
        let records = snapshot::load(&store, &unpacked)?;
        forget_cluster(&store)?;
        store.checkpoint()?;
        records
    };
    std::fs::remove_file(&unpacked)?;
    durable::replace_file(&data_dir.join(MARKER), &codec::encode(&last)?)?;
    Ok(Prepared {
        data_dir: data_dir.to_owned(),
        last_index: last.index,
        records,
        snapshot_bytes: checked.snapshot_bytes,
        crc32: format!("{:08x}", checked.crc32),
    })
}

/// Finishes a restore of `data_dir` for node `id` at `advertise`, if
/// `synap restore` prepared it; `alone`: started without `--peers` or
/// `--join`. Answers whether there was a restore to finish. Running it again
/// after a crash redoes the same steps.
pub fn finish(data_dir: &Path, id: NodeId, advertise: &BaseUrl, alone: bool) -> Result<bool, RestoreError> {
    let marker = data_dir.join(MARKER);
    let last: LogId = match std::fs::read(&marker) {
        Ok(bytes) => codec::decode(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if !alone {
        return Err(RestoreError::NotAlone);
    }
    let nodes = BTreeMap::from([(id, RaftNode { addr: advertise.as_str().to_owned() })]);
    let membership = StoredMembership::new(Some(last), Membership::new(vec![BTreeSet::from([id])], nodes));
    {
        let store = open_store(data_dir)?;
        let mut writes = Writes::default();
        writes.insert(keys::LAST_APPLIED, codec::encode(&Some(last))?);
        writes.insert(keys::MEMBERSHIP, codec::encode(&membership)?);
        store.write(writes)?;
        store.checkpoint()?;
        let snapshot_id = format!("restored-{}", uuid::Uuid::new_v4().simple());
        let meta = SnapshotMeta { last_log_id: Some(last), last_membership: membership, snapshot_id };
        let dir = data_dir.join(state_machine::DIR);
        durable::create_dir_all(&dir)?;
        state_machine::write_snapshot(&PointInTime::open(&store), &meta, &dir)?;
    }
    // Purged up to the snapshot, and a vote in its term: the first election
    // goes past it, so new entries follow the restored ones.
    let log_dir = data_dir.join(log_store::DIR);
    durable::create_dir_all(&log_dir)?;
    log_store::Meta { vote: Some(Vote::new(last.leader_id.term, id)), last_purged: Some(last) }.write(&log_dir)?;
    std::fs::remove_file(&marker)?;
    durable::sync_dir(data_dir)?;
    tracing::info!(index = last.index, "restored from a backup: a one-node cluster holding its state");
    Ok(true)
}

fn open_store(data_dir: &Path) -> Result<Store, StoreError> {
    let db = Database::open(&data_dir.join(database::DIR), CACHE_BYTES, false)?;
    Store::open(Arc::new(db))
}

/// Drops the cluster's id and its members' incarnations.
fn forget_cluster(store: &Store) -> Result<(), StoreError> {
    let mut writes = Writes::default();
    writes.remove(keys::CLUSTER);
    for key in store.tree().scan_prefix(keys::INCARNATION_PREFIX).keys() {
        writes.remove(key?);
    }
    store.write(writes)
}
