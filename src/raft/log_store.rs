//! The Raft log in sled: entries keyed by big-endian index, plus the vote,
//! the committed log id and the last purged log id.
//!
//! Durability is the whole point of this file. `append` hands its entries to
//! a flusher task that fsyncs (sled `flush_async`) and only then reports the
//! I/O complete to openraft, so an entry is never counted towards a quorum
//! before it is on disk. Several appends waiting at once share one fsync
//! (group fsync) and are acknowledged in the order they were written.
//! `save_vote` fsyncs before it returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, Vote};
use tokio::sync::mpsc;

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::codec;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The sled-backed Raft log. Cloning shares the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens (or creates) the log trees in `db`. Must be called inside a
    /// tokio runtime: it starts the flusher task.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let (flusher, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(db.clone(), rx));
        Ok(Self { db: db.clone(), log, meta, flusher })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let subject = ErrorSubject::Store;
        let bytes = self.meta.get(key).map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?;
        bytes.map(|b| codec::decode(&b).map_err(|e| io_err(subject, ErrorVerb::Read, &e))).transpose()
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, &e))?;
        self.meta.insert(key, bytes).map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(KEY_LAST_PURGED)
    }
}

/// Fsyncs the database and acknowledges every append written before the
/// fsync started. One fsync covers all appends queued behind it.
async fn run_flusher(db: sled::Db, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, 1024).await > 0 {
        let result = db.flush_async().await.map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        for callback in waiting.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

fn io_err<E: std::error::Error + 'static>(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: &E) -> StorageError {
    StorageError::IO { source: openraft::StorageIOError::new(subject, verb, AnyError::new(e)) }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut entries = Vec::new();
        for item in self.log.range(range) {
            let (_, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            entries.push(codec::decode(&value).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.log.last().map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let last_log_id = match last {
            Some((_, value)) => {
                let entry: Entry =
                    codec::decode(&value).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.db.flush_async().await.map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced on purpose: a lost `committed` is recomputed by the
        // leader; it only lets a restarted node apply sooner.
        self.write_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        self.flusher.send(callback).map_err(|_| {
            let e = std::io::Error::other("log flusher stopped");
            io_err(ErrorSubject::Logs, ErrorVerb::Write, &e)
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(index_key(log_id.index)..)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two steps leaves
        // extra entries behind it, never a hole in front of it.
        self.write_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
        self.remove_range(..=index_key(log_id.index))
    }
}

impl LogStore {
    fn remove_range<R: RangeBounds<[u8; 8]>>(&self, range: R) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(range).keys() {
            batch.remove(key.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?);
        }
        self.log.apply_batch(batch).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
