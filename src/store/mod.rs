//! The applied data model: rooms and their events, as every node holds them
//! after applying the Raft log.
//!
//! [`Store`] is the read side, shared by the API handlers; [`Applier`] is the
//! write side, owned by the Raft state machine, the only writer. Both work on
//! one sled tree (layout in `keys`).

mod apply;
pub mod backup;
pub mod consumer;
pub mod database;
pub(crate) mod keys;
pub mod point_in_time;
mod redo;
pub mod snapshot;

pub use apply::{Applier, ApplyBatch, RoomUpdate};
pub use consumer::{ConsumerRecord, Pending};
pub use database::Database;
pub use point_in_time::{PointInTime, Writes};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};
use sled::IVec;

use crate::codec::{self, CodecError};
use crate::command::RoomInfo;

/// Most events a read returns, whatever the caller asks for.
pub const MAX_PAGE: usize = 10_000;

/// Most bytes of events a read returns (it always returns at least one
/// event if there is one): large events fill a page sooner, and
/// `next_offset` says where the next page starts.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A failure of the local storage. It is never the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A file operation (snapshots) failed.
    #[error("storage i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A room as stored: its public description plus its internal id, which is
/// unique per incarnation so a deleted room's events can never reappear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMeta {
    /// Internal id, never reused.
    pub id: u64,
    /// What `stats` shows.
    pub info: RoomInfo,
}

/// An event as stored under its (room id, offset) key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Event type, e.g. `user.registered`.
    pub event_type: String,
    /// JSON text of the payload.
    pub data: String,
    /// JSON text of the metadata object, if any.
    pub metadata: Option<String>,
    /// Cluster time in Unix milliseconds.
    pub timestamp: u64,
    /// Client-supplied or generated event id.
    pub id: String,
}

/// The events stored under an `e` key: one event alone (the format before
/// packing) or a chunk.
pub(crate) fn decode_events(key: &[u8], value: &[u8]) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(if key.len() == keys::event(0, 0).len() { vec![codec::decode(value)?] } else { codec::decode(value)? })
}

impl StoredEvent {
    /// What retention by bytes counts: `data` and `metadata`.
    pub fn payload_bytes(&self) -> u64 {
        (self.data.len() + self.metadata.as_ref().map_or(0, String::len)) as u64
    }

    /// Roughly what the event weighs in memory and on the wire.
    pub fn weight(&self) -> usize {
        64 + self.event_type.len() + self.payload_bytes() as usize + self.id.len()
    }
}

/// A room's retention by bytes: its limit, and the payload bytes (`data`
/// and `metadata`, as `bytes_total` counts them) of the events it retains,
/// kept up to date only while it has a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteLimit {
    /// Most payload bytes kept.
    pub max_bytes: u64,
    /// Payload bytes of the retained events.
    pub retained: u64,
}

/// A KV value as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value, as the client gave it.
    pub value: String,
    /// Unix milliseconds (cluster time) after which the key is gone.
    pub expires_at: Option<u64>,
}

impl KvEntry {
    /// Whether the key still exists at `now` (Unix ms).
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Where a publish with a client id landed, remembered for deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// Offset of the original event.
    pub offset: u64,
    /// Its timestamp (cluster time).
    pub timestamp: u64,
}

/// One event read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Offset within its room.
    pub offset: u64,
    /// The stored fields.
    pub event: StoredEvent,
}

/// A page of a room's events.
#[derive(Debug, Clone)]
pub struct Page {
    /// The matching events, in offset order.
    pub events: Vec<EventRecord>,
    /// Where the next page starts.
    pub next_offset: u64,
}

/// Read access to the applied state. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    tree: sled::Tree,
    /// The redo record of the last apply written as plain inserts (see
    /// `redo`), and whether it is there.
    redo: sled::Tree,
    redo_held: Arc<AtomicBool>,
    /// Readers share it for a whole read; a snapshot install (which empties
    /// and refills the tree) and a checkpoint (during which nothing may
    /// touch sled) hold it exclusively.
    gate: Arc<RwLock<()>>,
    /// Held exclusively while an apply's writes are made one by one, and
    /// shared by every single step of a reader (a get, an iterator step): a
    /// step sees an apply whole or not at all, as with a sled batch, and
    /// an apply never waits for more than one step of a long read.
    applying: Arc<RwLock<()>>,
    /// The open point-in-time view, which every write reports to.
    view: Arc<Mutex<Option<Arc<point_in_time::Recorded>>>>,
}

impl Store {
    /// Opens the applied-state tree of `db`, first finishing the last apply
    /// if a crash cut it short (see `redo`).
    pub fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let tree = db.sled().open_tree("state")?;
        let redo = db.sled().open_tree(redo::TREE)?;
        let mut held = false;
        if let Some(bytes) = redo.get(redo::KEY)? {
            let record = redo::decode(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if record.belongs_over(keys::LAST_APPLIED, tree.get(keys::LAST_APPLIED)?.as_deref()) {
                tree.apply_batch(record.batch())?;
                held = true;
            } else {
                tracing::warn!("the state moved on since the last apply's redo record was written (an earlier version ran here?): the record is dropped, not replayed");
                redo.remove(redo::KEY)?;
            }
        }
        let redo_held = Arc::new(AtomicBool::new(held));
        Ok(Self { db, tree, redo, redo_held, gate: Arc::default(), applying: Arc::default(), view: Arc::default() })
    }

    /// Makes `writes`, in order, all or nothing across a crash: the one way
    /// the applied state changes (a snapshot install aside, which replaces
    /// it whole). Readers never see part of them (see `applying`). A crash
    /// can keep inserts past a room's head without the rest
    /// (`Writes::insert_past_head`); `Applier::load` removes those before
    /// anything reads the state, and the repeated apply writes them again.
    pub(crate) fn write(&self, writes: Writes) -> Result<(), StoreError> {
        let (ahead, writes) = writes.into_parts();
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(view) = view {
            view.before_write(&self.tree, &ahead)?;
            view.before_write(&self.tree, &writes)?;
        }
        let _writing = self.applying.write().unwrap_or_else(|p| p.into_inner());
        // Keys past a room's head go first and stay out of the record (see
        // `Writes::insert_past_head`): the bulk of a large publish then
        // leaves the record small enough for plain inserts, not a batch.
        // sled recovers a prefix of its log, so whenever the record
        // survives a crash, these did too.
        self.write_one_by_one(ahead)?;
        let marker = self.tree.get(keys::LAST_APPLIED)?;
        match redo::encode(marker.as_deref(), &writes) {
            Some(record) => {
                self.redo.insert(redo::KEY, record)?;
                self.redo_held.store(true, Ordering::Relaxed);
                self.write_one_by_one(writes)?;
            }
            None => {
                self.forget_redo()?;
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                self.tree.apply_batch(batch)?;
            }
        }
        Ok(())
    }

    /// Makes `writes` in order as plain sled inserts and removes.
    fn write_one_by_one(&self, writes: Vec<redo::Write>) -> Result<(), sled::Error> {
        for (key, value) in writes {
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        Ok(())
    }

    /// Removes the redo record, so that nothing replays it over what is
    /// written next. The caller is the one writer: an apply (holding
    /// `applying`) or a snapshot load (holding the gate).
    pub(super) fn forget_redo(&self) -> Result<(), StoreError> {
        if self.redo_held.load(Ordering::Relaxed) {
            self.redo.remove(redo::KEY)?;
            self.redo_held.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn set_view(&self, view: Option<Arc<point_in_time::Recorded>>) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Holds off readers (see `gate`). A poisoned lock guards no data of
    /// its own, so it is still usable.
    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn replacing(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// `key`'s value, read in one step (see `applying`).
    fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<IVec>, sled::Error> {
        let _step = self.applying.read().unwrap_or_else(|p| p.into_inner());
        self.tree.get(key)
    }

    /// `iter`, read one step at a time (see `applying`).
    fn steps(&self, iter: sled::Iter) -> Steps<'_> {
        Steps { applying: &self.applying, iter }
    }

    /// Marks the state as not to be trusted after a restart (a write to it
    /// failed): the next start rebuilds it from the snapshot and the log.
    pub fn distrust(&self) {
        self.db.distrust();
    }

    /// Makes the applied state durable as it is now. Readers wait
    /// meanwhile (even a sled read can write: it may consolidate a page);
    /// the caller is the state machine between two applies, or a node whose
    /// Raft has stopped, so nothing else writes.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let _quiet = self.replacing();
        self.db.checkpoint()
    }

    /// The room called `name`, if it exists.
    pub fn room(&self, name: &str) -> Result<Option<RoomMeta>, StoreError> {
        let _reading = self.reading();
        match self.get(keys::room(name))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every room, ordered by name.
    pub fn rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let _reading = self.reading();
        self.steps(self.tree.scan_prefix(keys::ROOM_PREFIX))
            .map(|item| Ok(codec::decode::<RoomMeta>(&item?.1)?.info))
            .collect()
    }

    /// Reads up to `limit` events of `room` at offsets in `[from, end)` whose
    /// type `matches`. `end` is the room's high-water mark as the caller saw
    /// it, so a page never shows an event whose room metadata it did not see.
    pub fn read(
        &self,
        room: &RoomMeta,
        from: u64,
        end: u64,
        limit: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Page, StoreError> {
        self.read_range(room.id, from.max(room.info.min_offset), end, limit, matches)
    }

    /// Like [`Store::read`], by internal room id, from `from` exactly.
    /// A page holds at most `limit` events (and [`MAX_PAGE`]) and stops
    /// once it holds [`MAX_PAGE_BYTES`]; `next_offset` is one past the last
    /// offset examined (the whole range when the page did not fill).
    pub fn read_range(
        &self,
        room_id: u64,
        from: u64,
        end: u64,
        limit: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Result<Page, StoreError> {
        let _reading = self.reading();
        let limit = limit.min(MAX_PAGE);
        let mut events = Vec::new();
        let mut next_offset = from;
        let mut bytes = 0usize;
        let mut full = false;
        if from < end && limit > 0 {
            // Start at the key that holds `from`: a chunk may begin below it.
            let holding = keys::room_events(room_id).to_vec()..=keys::chunk(room_id, from, u32::MAX).to_vec();
            let start = match self.steps(self.tree.range(holding)).next_back().transpose()? {
                Some((key, _)) if keys::events_span(&key).is_some_and(|(first, n)| first + n > from) => key.to_vec(),
                _ => keys::event(room_id, from).to_vec(),
            };
            'keys: for item in self.steps(self.tree.range(start..keys::event(room_id, end).to_vec())) {
                let (key, value) = item?;
                let Some((first, _)) = keys::events_span(&key) else { continue };
                for (offset, event) in (first..).zip(decode_events(&key, &value)?) {
                    if offset < from {
                        continue;
                    }
                    if offset >= end {
                        break 'keys;
                    }
                    next_offset = offset + 1;
                    if matches(&event.event_type) {
                        bytes += event.weight();
                        events.push(EventRecord { offset, event });
                        if events.len() >= limit || bytes >= MAX_PAGE_BYTES {
                            full = true;
                            break 'keys;
                        }
                    }
                }
            }
            if !full {
                next_offset = end;
            }
        }
        Ok(Page { events, next_offset })
    }

    /// The retention by bytes of the room with internal id `room_id`.
    pub fn byte_limit(&self, room_id: u64) -> Result<Option<ByteLimit>, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::byte_limit(room_id))?.map(|b| codec::decode(&b)).transpose()?)
    }

    /// The consumer `name` of the room with internal id `room_id`.
    pub fn consumer(&self, room_id: u64, name: &str) -> Result<Option<ConsumerRecord>, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::consumer(room_id, name))?.map(|b| codec::decode(&b)).transpose()?)
    }

    /// The consumers of the room with internal id `room_id`, by name.
    pub fn consumers(&self, room_id: u64) -> Result<Vec<ConsumerRecord>, StoreError> {
        let _reading = self.reading();
        self.steps(self.tree.scan_prefix(keys::room_consumers(room_id)))
            .map(|item| Ok(codec::decode(&item?.1)?))
            .collect()
    }

    /// The consumers (room, name) holding a message whose last allowed
    /// delivery's lease ended by `now`: a lease would dead-letter it.
    pub fn dead_letters_due(&self, now: u64) -> Result<Vec<(String, String)>, StoreError> {
        let mut due = Vec::new();
        for room in self.rooms()? {
            let Some(meta) = self.room(&room.name)? else { continue };
            for consumer in self.consumers(meta.id)? {
                let max = consumer.config.max_deliver;
                if max > 0 && consumer.pending.values().any(|p| p.deliveries >= max && p.lease_until <= now) {
                    due.push((room.name.clone(), consumer.name));
                }
            }
        }
        Ok(due)
    }

    /// How many events of the room at offsets `[from, end)` `matches` lets
    /// through.
    pub fn count_matching(
        &self,
        room_id: u64,
        from: u64,
        end: u64,
        matches: impl Fn(&str) -> bool,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        let mut at = from;
        while at < end {
            let page = self.read_range(room_id, at, end, MAX_PAGE, &matches)?;
            count += page.events.len() as u64;
            at = page.next_offset.max(at + 1);
        }
        Ok(count)
    }

    /// The value of `key` if it exists and has not expired at `now` (Unix
    /// ms, cluster time: expired keys are hidden before the leader's
    /// `Expire` removes them).
    pub fn kv_get(&self, key: &str, now: u64) -> Result<Option<String>, StoreError> {
        let _reading = self.reading();
        let Some(bytes) = self.get(keys::kv(key))? else { return Ok(None) };
        let entry: KvEntry = codec::decode(&bytes)?;
        Ok(entry.is_live(now).then_some(entry.value))
    }

    /// What the applied state takes on disk (sled's estimate).
    pub fn size_on_disk(&self) -> u64 {
        self.db.sled().size_on_disk().unwrap_or(0)
    }

    /// Whether events are stored in chunks yet (protocol 4).
    pub fn packed(&self) -> Result<bool, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::PACKED)?.is_some())
    }

    /// The protocol the state records every member speaks (0 before any
    /// `RaiseProtocol`).
    pub fn protocol(&self) -> Result<u32, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::PROTOCOL)?.map(|b| codec::decode(&b)).transpose()?.unwrap_or(0))
    }

    /// The cluster's id, once the cluster named itself.
    pub fn cluster_id(&self) -> Result<Option<String>, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::CLUSTER)?.map(|b| codec::decode(&b)).transpose()?)
    }

    /// The incarnation the cluster knows `node` by, if recorded.
    pub fn incarnation(&self, node: u64) -> Result<Option<String>, StoreError> {
        let _reading = self.reading();
        Ok(self.get(keys::incarnation(node))?.map(|b| codec::decode(&b)).transpose()?)
    }

    /// Whether an `Expire` stamped `now` would remove anything: a KV key
    /// past its TTL, or a dedup entry older than `dedup_window_ms`. Lets an
    /// idle leader propose nothing.
    pub fn expiry_due(&self, now: u64, dedup_window_ms: u64) -> Result<bool, StoreError> {
        let _reading = self.reading();
        let first = |prefix: &[u8]| -> Result<Option<u64>, StoreError> {
            let Some(item) = self.steps(self.tree.scan_prefix(prefix)).next() else { return Ok(None) };
            let (key, _) = item?;
            Ok(keys::split_expiry(&key).map(|(at, _)| at))
        };
        let kv_due = first(keys::KV_EXPIRY_PREFIX)?.is_some_and(|at| at <= now);
        let dedup_due = first(keys::DEDUP_EXPIRY_PREFIX)?.is_some_and(|at| at.saturating_add(dedup_window_ms) <= now);
        Ok(kv_due || dedup_due)
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// An empty store in a temporary directory, for unit tests.
    #[cfg(test)]
    pub(crate) fn scratch() -> (tempfile::TempDir, Store) {
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let db = Database::open(&dir.path().join(database::DIR), 16 << 20, false).expect("open sled");
        let store = Store::open(Arc::new(db)).expect("open store");
        (dir, store)
    }
}

/// An iterator over the tree that takes the store's `applying` lock for
/// each step.
struct Steps<'a> {
    applying: &'a RwLock<()>,
    iter: sled::Iter,
}

impl Iterator for Steps<'_> {
    type Item = Result<(IVec, IVec), sled::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let _step = self.applying.read().unwrap_or_else(|p| p.into_inner());
        self.iter.next()
    }
}

impl DoubleEndedIterator for Steps<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let _step = self.applying.read().unwrap_or_else(|p| p.into_inner());
        self.iter.next_back()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sled::IVec;

    use super::*;

    fn open(dir: &Path) -> Store {
        let db = Database::open(&dir.join(database::DIR), 16 << 20, false).expect("open sled");
        Store::open(Arc::new(db)).expect("open store")
    }

    fn contents(store: &Store) -> Vec<(IVec, IVec)> {
        store.tree().iter().collect::<Result<_, _>>().expect("iterate")
    }

    fn writes(list: &[(&[u8], Option<&str>)]) -> Writes {
        let mut writes = Writes::default();
        for &(key, value) in list {
            match value {
                Some(value) => writes.insert(key, value.as_bytes()),
                None => writes.remove(key),
            }
        }
        writes
    }

    /// Two applies, with `last_applied` (the redo record's marker) among
    /// their writes as the state machine writes it.
    const FIRST: &[(&[u8], Option<&str>)] =
        &[(b"a", Some("1")), (b"b", Some("1")), (keys::LAST_APPLIED, Some("1")), (b"c", Some("1"))];
    const SECOND: &[(&[u8], Option<&str>)] =
        &[(b"b", None), (b"a", Some("2")), (keys::LAST_APPLIED, Some("2")), (b"d", Some("2")), (b"a", Some("3"))];

    /// What a crash can leave of an apply written as plain inserts: its
    /// record and any prefix of its writes. Opening the store again must
    /// show the whole apply, wherever the crash cut it.
    #[test]
    fn an_apply_cut_short_by_a_crash_is_finished_at_the_next_open() {
        let whole = {
            let (_dir, store) = Store::scratch();
            store.write(writes(FIRST)).unwrap();
            store.write(writes(SECOND)).unwrap();
            contents(&store)
        };
        for cut in 0..=SECOND.len() {
            let dir = tempfile::TempDir::new().unwrap();
            {
                let store = open(dir.path());
                store.write(writes(FIRST)).unwrap();
                let (_, second) = writes(SECOND).into_parts();
                let marker = store.tree.get(keys::LAST_APPLIED).unwrap();
                store.redo.insert(redo::KEY, redo::encode(marker.as_deref(), &second).unwrap()).unwrap();
                for (key, value) in second.into_iter().take(cut) {
                    match value {
                        Some(value) => store.tree.insert(key, value).unwrap(),
                        None => store.tree.remove(key).unwrap(),
                    };
                }
            }
            assert_eq!(contents(&open(dir.path())), whole, "crash after {cut} writes of the second apply");
        }
    }

    /// Readers see an apply whole or not at all, as they did when each
    /// apply was one sled batch: a reader that sees the first key of an
    /// apply must not then find the second key older.
    #[test]
    fn readers_never_see_part_of_an_apply() {
        let (_dir, store) = Store::scratch();
        let entry = |i: u64| codec::encode(&KvEntry { value: i.to_string(), expires_at: None }).unwrap();
        let read = |key: &str| store.kv_get(key, 0).unwrap().map_or(0, |v| v.parse::<u64>().unwrap());
        const APPLIES: u64 = 20_000;
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                for i in 1..=APPLIES {
                    let mut writes = Writes::default();
                    writes.insert(keys::kv("first"), entry(i));
                    writes.insert(keys::kv("second"), entry(i));
                    store.write(writes).unwrap();
                }
            });
            // The writer makes `first` before `second`: a reader that got
            // between them would find `second` behind `first`.
            loop {
                let first = read("first");
                let second = read("second");
                assert!(second >= first, "read the first key of apply {first}, then the second key of apply {second}");
                // A writer that panicked fails the test when the scope ends.
                if first == APPLIES || writer.is_finished() {
                    break;
                }
            }
        });
    }

    /// A record the state moved past without it (a build from before
    /// records applied more on this data directory) is dropped, not
    /// replayed over the newer state.
    #[test]
    fn a_record_the_state_moved_past_is_not_replayed() {
        let dir = tempfile::TempDir::new().unwrap();
        let expected = {
            let store = open(dir.path());
            store.write(writes(FIRST)).unwrap();
            store.tree.insert(keys::LAST_APPLIED, "5").unwrap();
            store.tree.insert(b"a", "5").unwrap();
            contents(&store)
        };
        let store = open(dir.path());
        assert_eq!(contents(&store), expected);
        assert_eq!(store.redo.get(redo::KEY).unwrap(), None, "the stale record is gone");
    }

    /// An apply too large for a record goes as one batch; the previous
    /// record must not replay over it.
    #[test]
    fn a_large_apply_is_not_undone_by_the_record_before_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let expected = {
            let store = open(dir.path());
            store.write(writes(FIRST)).unwrap();
            let mut large = writes(&[(b"a", Some("large"))]);
            large.insert(b"big".as_slice(), vec![0u8; redo::MAX_BYTES]);
            store.write(large).unwrap();
            contents(&store)
        };
        assert_eq!(contents(&open(dir.path())), expected);
    }

    /// A snapshot replaces the state whole; the record of an apply made
    /// before it must not replay over it.
    #[test]
    fn a_loaded_snapshot_is_not_undone_by_an_earlier_record() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.snap");
        let expected = {
            let store = open(dir.path());
            store.write(writes(FIRST)).unwrap();
            snapshot::dump(&PointInTime::open(&store), b"meta", &path).unwrap();
            let snapshot = contents(&store);
            store.write(writes(SECOND)).unwrap();
            snapshot::load(&store, &path).unwrap();
            assert_eq!(contents(&store), snapshot);
            snapshot
        };
        assert_eq!(contents(&open(dir.path())), expected);
    }
}
