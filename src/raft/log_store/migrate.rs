//! Moving a Raft log kept in sled (versions before segment files) into
//! segment files, once, at start-up, so a rolling upgrade keeps every node's
//! log, vote and purge point.
//!
//! The new log is built in `raft-log.migrating`, synced, and renamed to
//! `raft-log` in one step; the sled trees are dropped only after that. A
//! crash before the rename starts over; after it, only the drop is redone.

use std::path::Path;

use super::meta::Meta;
use super::segments::{LogError, SegmentLog};
use super::{LogId, NodeId, SEGMENT_BYTES};
use crate::{codec, durable};

const LOG_TREE: &[u8] = b"raft_log";
const META_TREE: &[u8] = b"raft_meta";
/// Entries copied per append.
const CHUNK: usize = 1024;

fn sled_err(e: sled::Error) -> LogError {
    LogError::Corrupt(format!("reading the old raft log from sled: {e}"))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// Moves the old log of `db` into `dir` if there is one to move.
pub fn from_sled(db: &sled::Db, dir: &Path) -> Result<(), LogError> {
    let names = db.tree_names();
    if !names.iter().any(|n| n.as_ref() == LOG_TREE || n.as_ref() == META_TREE) {
        return Ok(());
    }
    if !dir.exists() {
        copy(db, dir)?;
    }
    for tree in [LOG_TREE, META_TREE] {
        db.drop_tree(tree).map_err(sled_err)?;
    }
    Ok(())
}

fn copy(db: &sled::Db, dir: &Path) -> Result<(), LogError> {
    let staging = dir.with_extension("migrating");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    durable::create_dir_all(&staging).map_err(io_at(&staging))?;
    let meta_tree = db.open_tree(META_TREE).map_err(sled_err)?;
    let read = |key: &[u8]| -> Result<Option<sled::IVec>, LogError> { meta_tree.get(key).map_err(sled_err) };
    let decode_err = |e: codec::CodecError| LogError::Corrupt(format!("old raft log metadata: {e}"));
    let vote = read(b"vote")?.map(|b| codec::decode::<openraft::Vote<NodeId>>(&b)).transpose().map_err(decode_err)?;
    let last_purged = read(b"last_purged")?.map(|b| codec::decode::<LogId>(&b)).transpose().map_err(decode_err)?;
    Meta { vote, last_purged }.write(&staging)?;

    let (mut log, _) = SegmentLog::open(&staging, SEGMENT_BYTES, last_purged.map(|id| id.index))?;
    let floor = last_purged.map_or(0, |id| id.index + 1);
    let mut records = Vec::with_capacity(CHUNK);
    let mut copied = 0u64;
    let mut last_file = None;
    for item in db.open_tree(LOG_TREE).map_err(sled_err)?.range(floor.to_be_bytes()..) {
        let (key, value) = item.map_err(sled_err)?;
        let index: [u8; 8] = key.as_ref().try_into().map_err(|_| LogError::Corrupt("old raft log key".into()))?;
        records.push((u64::from_be_bytes(index), value.to_vec()));
        if records.len() == CHUNK {
            last_file = Some(log.append(&records)?);
            copied += records.len() as u64;
            records.clear();
        }
    }
    if !records.is_empty() {
        last_file = Some(log.append(&records)?);
        copied += records.len() as u64;
    }
    if let Some(file) = last_file {
        durable::sync_data(&file).map_err(io_at(&staging))?;
    }
    drop(log);
    std::fs::rename(&staging, dir).map_err(io_at(dir))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    durable::sync_dir(parent).map_err(io_at(parent))?;
    tracing::info!(entries = copied, "moved the raft log from sled into segment files");
    Ok(())
}
