//! The Raft log: openraft's `RaftLogStorage` over append-only segment files
//! of our own (`raft-log/` in the data directory).
//!
//! Durability is the whole point of this module:
//! - `append` writes the entries and hands their completion to the
//!   `flusher`, which `fdatasync`s the segment and only then tells
//!   openraft the entries are on disk, so an entry never counts towards a
//!   quorum before it is durable. Appends waiting at once share one sync.
//! - `save_vote` and `purge` replace the `meta` file atomically and sync
//!   it (and its directory) before they return.
//! - `truncate` is synced before it returns, so entries a new leader
//!   overwrote never come back after a crash.
//! - The committed index is deliberately not stored: if it were ahead of
//!   what survived a crash, a restart would look for entries that are gone.
//!   openraft learns it again from the leader.
//!
//! [`segments`] holds the file format and the rules for what a restart may
//! find. The state machine's data stays in sled; the log never enters it.

mod flusher;
mod meta;
mod migrate;
mod recent;
pub mod segments;

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, Vote};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::{codec, durable};
use flusher::Flusher;
pub use meta::Meta;
use recent::Recent;
use segments::{LogError, SegmentLog};

/// Segment size: a new file is started once the current one reaches it.
/// Purging drops whole files, so this is also the granularity at which
/// disk space is given back.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The directory of the log inside a node's data directory.
pub const DIR: &str = "raft-log";

/// Most bytes of entries one append RPC carries (at least one entry,
/// whatever it weighs): openraft gives an append one heartbeat interval to
/// be sent, written and synced by the follower.
pub const MAX_APPEND_BYTES: u64 = 2 * 1024 * 1024;

/// The Raft log of one node. Cloning shares it.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    flusher: Flusher,
}

struct State {
    log: SegmentLog,
    meta: Meta,
    last_log_id: Option<LogId>,
    /// The newest entries, decoded: what apply and replication read.
    recent: Recent,
}

fn log_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO { source: openraft::StorageIOError::new(subject, verb, AnyError::new(&e)) }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, repairing what a crash left.
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// Like [`LogStore::open`], with segments of `segment_bytes`.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> Result<Self, LogError> {
        durable::create_dir_all(dir).map_err(|source| LogError::Io { path: dir.to_owned(), source })?;
        let meta = Meta::read(dir)?;
        let (log, recovery) = SegmentLog::open(dir, segment_bytes, meta.last_purged.map(|id| id.index))?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(bytes = recovery.torn_bytes, "raft log: cut an unsynced tail left by a crash");
        }
        let last_log_id = match log.next_index() > log.first_index() {
            true => Some(read_log_id(&log, log.next_index() - 1)?),
            false => meta.last_purged,
        };
        let flusher = Flusher::start().map_err(|source| LogError::Io { path: dir.to_owned(), source })?;
        let state = State { log, meta, last_log_id, recent: Recent::default() };
        Ok(Self { shared: Arc::new(Shared { dir: dir.to_owned(), state: Mutex::new(state), flusher }) })
    }

    /// Opens the log of the data directory `data_dir`, first moving a log
    /// kept in sled by earlier versions into segment files.
    pub fn open_in(data_dir: &Path, db: &sled::Db) -> Result<Self, LogError> {
        let dir = data_dir.join(DIR);
        migrate::from_sled(db, &dir)?;
        Self::open(&dir)
    }

    /// Bytes of the entries the log holds (what a snapshot would let it
    /// drop).
    pub fn live_bytes(&self) -> u64 {
        self.state().log.live_bytes()
    }

    /// A poisoned lock means a panic while the log was being changed; the
    /// files are still the truth, so carry on with what is there.
    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read_entries(log: &SegmentLog, start: u64, end: u64) -> Result<Vec<Entry>, LogError> {
    let records = segments::read_chunks(log.locate(start..end))?;
    decode_all(records)
}

fn decode_all(records: Vec<(u64, Vec<u8>)>) -> Result<Vec<Entry>, LogError> {
    records
        .into_iter()
        .map(|(index, bytes)| {
            codec::decode::<Entry>(&bytes).map_err(|e| LogError::Corrupt(format!("entry {index}: {e}")))
        })
        .collect()
}

fn read_log_id(log: &SegmentLog, index: u64) -> Result<LogId, LogError> {
    let entry = read_entries(log, index, index + 1)?
        .pop()
        .ok_or_else(|| LogError::Corrupt(format!("entry {index} is missing")))?;
    Ok(entry.log_id)
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogStore {
    /// The entries `start..end` (clamped to what the log holds), or the
    /// first of them within `budget` record bytes (at least one): from the
    /// cache of recent entries when it holds them all, else from the files.
    fn read(&self, start: u64, end: u64, budget: u64) -> Result<Vec<Entry>, StorageError> {
        let read_err = |e| log_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        // Locate under the lock, read the files without it: replication and
        // apply read while the raft core appends.
        let chunks = {
            let state = self.state();
            if let Some(entries) = state.recent.get(start, end.min(state.log.next_index()), budget) {
                return Ok(entries);
            }
            state.log.locate_within(start..end, budget)
        };
        decode_all(segments::read_chunks(chunks).map_err(read_err)?).map_err(read_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read(start, end, u64::MAX)
    }

    /// What replication sends in one append: a prefix of `start..end` of at
    /// most [`MAX_APPEND_BYTES`] (at least one entry), so that a large
    /// backlog travels in appends that each fit a heartbeat interval.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.read(start, end, MAX_APPEND_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.state();
        Ok(LogState { last_purged_log_id: state.meta.last_purged, last_log_id: state.last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut state = self.state();
        let meta = Meta { vote: Some(*vote), ..state.meta.clone() };
        meta.write(&self.shared.dir).map_err(|e| log_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        state.meta = meta;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.state().meta.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write_err = |e: LogError| log_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| write_err(LogError::Corrupt(e.to_string())))?;
            records.push((entry.log_id.index, bytes));
            decoded.push(entry);
        }
        crate::telemetry::appended(records.len());
        let file = {
            let mut state = self.state();
            let file = state.log.append(&records).map_err(write_err)?;
            if let Some(last) = decoded.last() {
                state.last_log_id = Some(last.log_id);
            }
            for (entry, (_, bytes)) in decoded.into_iter().zip(&records) {
                state.recent.push(entry, bytes.len());
            }
            file
        };
        let done = Box::new(move |result| callback.log_io_completed(result));
        self.shared.flusher.submit(file, done).map_err(|e| log_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let delete_err = |e| log_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let mut state = self.state();
        state.log.truncate(log_id.index).map_err(delete_err)?;
        state.recent.truncate(log_id.index);
        state.last_log_id = if state.log.next_index() > state.log.first_index() {
            Some(read_log_id(&state.log, state.log.next_index() - 1).map_err(delete_err)?)
        } else {
            state.meta.last_purged
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let delete_err = |e| log_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let mut state = self.state();
        if state.meta.last_purged >= Some(log_id) {
            return Ok(());
        }
        // The purge point is durable before any file goes: a crash in
        // between leaves extra entries behind it, never a hole in front.
        let meta = Meta { last_purged: Some(log_id), ..state.meta.clone() };
        meta.write(&self.shared.dir).map_err(delete_err)?;
        state.meta = meta;
        let done = state.log.purge(log_id.index).map_err(delete_err)?;
        state.recent.purge(log_id.index);
        if state.last_log_id < Some(log_id) {
            state.last_log_id = Some(log_id);
        }
        drop(state);
        for file in done {
            std::fs::remove_file(&file).map_err(|e| delete_err(LogError::Io { path: file, source: e }))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
