//! openraft's `RaftStateMachine` over the applied state in `store`.
//!
//! One `apply` call becomes one all-or-nothing write of the applied state
//! (`Store::write`) holding the applied commands, `last_applied` and the
//! membership, so a crash can never leave an entry half-applied, and
//! re-applying after restart starts exactly after the last apply that
//! survived. Applies are not synced: the Raft log is the
//! durable record, and the state is checkpointed (`Store::checkpoint`) only
//! where the log behind it may be dropped — when a snapshot is built or
//! installed.
//!
//! Snapshots are files (`snapshot/current.snap`, format in
//! `store::snapshot`): the state as of a point between two applies, written
//! from a point-in-time view (`store::point_in_time`) while applies go on,
//! streamed to followers in chunks by openraft, and installed by replacing the
//! whole applied state. An install in progress is marked on disk and redone
//! at start-up if a crash interrupted it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

use tokio::sync::watch;

use super::{Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use crate::command::Reply;
use crate::hub::Hub;
use crate::store::{keys, snapshot, Applier, ApplyBatch, PointInTime, Store, StoreError};
use crate::{codec, durable};

type Membership = StoredMembership<NodeId, Node>;
type Meta = SnapshotMeta<NodeId, Node>;

/// The directory of snapshot files inside a node's data directory.
pub const DIR: &str = "snapshot";
/// The snapshot file: the latest built or installed.
const CURRENT: &str = "current.snap";
/// Present while an install replaces the state (see `install_snapshot`).
const INSTALLING: &str = "installing";
/// A snapshot being received from the leader.
const RECEIVING: &str = "receiving.snap";
/// A snapshot being written by this node.
const BUILDING: &str = "building.snap";

/// The latest snapshot file of the node whose data directory is `data_dir`
/// (it may not exist).
pub fn current_snapshot(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR).join(CURRENT)
}

/// Writes a snapshot of `view`, described by `meta`, in the snapshot
/// directory `dir` and makes it the current one; answers how many records
/// it holds. Blocking.
pub fn write_snapshot(view: &PointInTime, meta: &Meta, dir: &Path) -> Result<u64, StoreError> {
    let header = codec::encode(meta)?;
    let building = dir.join(BUILDING);
    let records = snapshot::dump(view, &header, &building)?;
    std::fs::rename(&building, dir.join(CURRENT))?;
    durable::sync_dir(dir)?;
    Ok(records)
}

/// Every node of `membership`, voters and learners.
fn member_ids(membership: &Membership) -> std::collections::BTreeSet<u64> {
    membership.membership().nodes().map(|(id, _)| *id).collect()
}

/// Whether `file` is the file at `path`.
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// `last_applied` and the membership as the applied state records them.
fn read_applied(store: &Store) -> Result<(Option<LogId>, Membership), StoreError> {
    let tree = store.tree();
    let last_applied = match tree.get(keys::LAST_APPLIED)? {
        Some(bytes) => codec::decode(&bytes)?,
        None => None,
    };
    let membership = match tree.get(keys::MEMBERSHIP)? {
        Some(bytes) => codec::decode(&bytes)?,
        None => Membership::default(),
    };
    Ok((last_applied, membership))
}

/// The Raft state machine of one node.
pub struct StateMachine {
    store: Store,
    applier: Applier,
    last_applied: Option<LogId>,
    membership: Membership,
    snapshot_dir: PathBuf,
    applied: watch::Sender<u64>,
    /// The latest command timestamp applied, for the proposer's clock.
    clock: watch::Sender<u64>,
    hub: Arc<Hub>,
    /// Held by the snapshot being built, and by an install (which must not
    /// replace the state under a build's view).
    building: Arc<tokio::sync::Mutex<()>>,
}

fn sm_err(verb: ErrorVerb, e: StoreError) -> StorageError {
    StorageError::IO { source: StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::new(&e)) }
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO { source: StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::new(&e)) }
}

impl StateMachine {
    /// Opens the state machine over `store`, keeping snapshot files in
    /// `snapshot_dir` and telling `hub` what each apply changed. Finishes a
    /// snapshot install that a crash interrupted.
    pub fn open(store: Store, snapshot_dir: &Path, hub: Arc<Hub>) -> Result<Self, StoreError> {
        durable::create_dir_all(snapshot_dir)?;
        let current = snapshot_dir.join(CURRENT);
        let marker = snapshot_dir.join(INSTALLING);
        if marker.exists() {
            // Without a snapshot file the install stopped before it touched
            // anything: there is nothing to redo.
            if current.exists() {
                tracing::warn!("a snapshot install was interrupted; installing it again");
                snapshot::load(&store, &current)?;
                store.checkpoint()?;
            }
            std::fs::remove_file(&marker)?;
            durable::sync_dir(snapshot_dir)?;
        }
        let (mut last_applied, mut membership) = read_applied(&store)?;
        // The state is durable only at checkpoints, the snapshot always: a
        // power cut can leave the state behind the snapshot, and the log
        // behind the snapshot may be purged. Start from the snapshot then.
        if current.exists() {
            let meta: Meta = codec::decode(&snapshot::read_header(&current)?)?;
            if meta.last_log_id > last_applied {
                tracing::warn!(
                    applied = ?last_applied,
                    snapshot = ?meta.last_log_id,
                    "the applied state is behind the last snapshot; loading the snapshot"
                );
                snapshot::load(&store, &current)?;
                store.checkpoint()?;
                (last_applied, membership) = read_applied(&store)?;
            }
        }
        let mut applier = Applier::load(store.clone())?;
        applier.set_members(member_ids(&membership));
        let index = last_applied.as_ref().map_or(0, |id: &LogId| id.index);
        let (applied, _) = watch::channel(index);
        let (clock, _) = watch::channel(applier.clock());
        let snapshot_dir = snapshot_dir.to_owned();
        let building = Arc::default();
        Ok(Self { store, applier, last_applied, membership, snapshot_dir, applied, clock, hub, building })
    }

    /// Follows the last applied log index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Follows the latest command timestamp applied: a new leader whose
    /// wall clock is behind must not stamp earlier than its predecessor.
    pub fn subscribe_clock(&self) -> watch::Receiver<u64> {
        self.clock.subscribe()
    }

    /// Applies `entries` in one batch (split where a command needs the
    /// state committed before it).
    fn apply_entries<I>(&mut self, entries: I) -> Result<Vec<Vec<Reply>>, StorageError>
    where
        I: IntoIterator<Item = Entry>,
    {
        let started = Instant::now();
        let mut batch = self.applier.begin();
        let mut batched = 0;
        let mut replies = Vec::new();
        for entry in entries {
            let committed_first =
                matches!(&entry.payload, EntryPayload::Normal(c) if Applier::needs_committed_state(c));
            if committed_first && batched > 0 {
                self.commit(std::mem::replace(&mut batch, self.applier.begin()))?;
                batched = 0;
            }
            batched += 1;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => replies.push(Vec::new()),
                EntryPayload::Normal(command) => {
                    replies.push(self.applier.apply(&mut batch, &command).map_err(|e| sm_err(ErrorVerb::Write, e))?)
                }
                EntryPayload::Membership(membership) => {
                    self.membership = Membership::new(Some(entry.log_id), membership);
                    self.applier.members_changed(&mut batch, member_ids(&self.membership));
                    replies.push(Vec::new());
                }
            }
        }
        self.commit(batch)?;
        crate::telemetry::applied(started.elapsed(), replies.len());
        Ok(replies)
    }

    /// Installs the snapshot received in `data`.
    async fn install(&mut self, meta: &Meta, mut data: Box<tokio::fs::File>) -> Result<(), StorageError> {
        let _no_build = self.building.clone().lock_owned().await;
        let receiving = self.snapshot_dir.join(RECEIVING);
        data.flush().await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let mut data = data.into_std().await;
        // openraft hands back the file `begin_receiving_snapshot` made; a
        // snapshot handed over some other way is copied into it.
        if !same_file(&data, &receiving) {
            use std::io::Seek;
            data.seek(std::io::SeekFrom::Start(0)).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let mut out = std::fs::File::create(&receiving).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            std::io::copy(&mut data, &mut out).map_err(|e| snap_err(ErrorVerb::Write, e))?;
            data = out;
        }
        durable::sync_data(&data).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        drop(data);
        let header = snapshot::read_header(&receiving).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let sent: Meta = codec::decode(&header).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        if sent.snapshot_id != meta.snapshot_id {
            let e = std::io::Error::other(format!(
                "snapshot data is {} but meta says {}",
                sent.snapshot_id, meta.snapshot_id
            ));
            return Err(snap_err(ErrorVerb::Read, e));
        }
        // The order makes every crash point recoverable: the marker says
        // "install in progress" before anything changes, the new file is
        // durable under its final name before the state is touched, and the
        // marker goes only once the loaded state is checkpointed. A restart
        // that finds the marker loads `current.snap` again (the old one if
        // the rename did not survive: harmless, the log behind it is still
        // there), and one that finds the state behind `current.snap` does too.
        let dir = self.snapshot_dir.clone();
        let marker = dir.join(INSTALLING);
        std::fs::File::create(&marker)
            .and_then(|f| durable::sync_all(&f))
            .and_then(|()| durable::sync_dir(&dir))
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        std::fs::rename(&receiving, self.current_path()).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        durable::sync_dir(&dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (store, current) = (self.store.clone(), self.current_path());
        // Loading is long, blocking I/O: keep it off the async workers that
        // also carry heartbeats.
        tokio::task::block_in_place(|| snapshot::load(&store, &current).and_then(|_| store.checkpoint()))
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.applier.reload().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applier.set_members(member_ids(&self.membership));
        std::fs::remove_file(&marker)
            .and_then(|()| durable::sync_dir(&dir))
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(index = meta.last_log_id.map(|id| id.index), "snapshot installed");
        self.hub.resync().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.applied.send_replace(self.last_applied.as_ref().map_or(0, |id| id.index));
        self.clock.send_replace(self.applier.clock());
        Ok(())
    }

    /// Writes `batch` with the Raft bookkeeping of the last entry applied
    /// into it, then tells the hub and the applied-index watchers.
    fn commit(&mut self, mut batch: ApplyBatch) -> Result<(), StorageError> {
        let encode = |e| sm_err(ErrorVerb::Write, StoreError::from(e));
        batch.put(keys::LAST_APPLIED, codec::encode(&self.last_applied).map_err(encode)?);
        batch.put(keys::MEMBERSHIP, codec::encode(&self.membership).map_err(encode)?);
        let updates = self.applier.commit(batch).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.hub.applied(updates);
        self.applied.send_replace(self.last_applied.as_ref().map_or(0, |id| id.index));
        self.clock.send_replace(self.applier.clock());
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        self.snapshot_dir.join(CURRENT)
    }

    /// Opens the view a snapshot is written from: called between two
    /// applies, the only consistent point. Applies wait only for the
    /// checkpoint; the snapshot is written while they go on.
    async fn begin_snapshot(&mut self) -> SnapshotBuilder {
        // One build at a time, and no install while one runs.
        let building = self.building.clone().lock_owned().await;
        let paused = Instant::now();
        // openraft purges the log behind the snapshot once it is built: the
        // state that log would be re-applied onto after a power cut must be
        // durable by then, and it is cheapest to make it so here, where
        // nothing writes.
        let store = self.store.clone();
        if let Err(e) = tokio::task::block_in_place(|| store.checkpoint()) {
            self.store.distrust();
            return SnapshotBuilder { job: Err(Some(sm_err(ErrorVerb::Write, e))) };
        }
        let last = self.last_applied;
        let snapshot_id = match &last {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, uuid::Uuid::new_v4().simple()),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta = Meta { last_log_id: last, last_membership: self.membership.clone(), snapshot_id };
        let view = PointInTime::open(&self.store);
        let applies_paused = paused.elapsed();
        let job = SnapshotJob { view, meta, dir: self.snapshot_dir.clone(), applies_paused, _building: building };
        SnapshotBuilder { job: Ok(Some(job)) }
    }
}

/// A snapshot to write from a point-in-time view, off the state machine.
struct SnapshotJob {
    view: PointInTime,
    meta: Meta,
    dir: PathBuf,
    /// How long applies waited for the view to open.
    applies_paused: Duration,
    _building: tokio::sync::OwnedMutexGuard<()>,
}

impl SnapshotJob {
    /// Writes the snapshot file and makes it the current one. Blocking.
    fn write(self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = Instant::now();
        let records = write_snapshot(&self.view, &self.meta, &self.dir).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let current = self.dir.join(CURRENT);
        tracing::info!(
            index = self.meta.last_log_id.map(|id| id.index),
            records,
            took_ms = started.elapsed().as_millis() as u64,
            applies_paused_ms = self.applies_paused.as_millis() as u64,
            "snapshot built"
        );
        let file = std::fs::File::open(&current).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        crate::telemetry::snapshot_built(started.elapsed(), file.metadata().map_or(0, |m| m.len()));
        Ok(Snapshot { meta: self.meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

/// Lowers the calling thread's CPU priority (Linux nice values are per
/// thread). Best effort: a failure only means the snapshot competes equally.
fn lower_priority() {
    const NICENESS: libc::c_int = 19;
    // SAFETY: gettid and setpriority take no pointers and only affect
    // the calling thread.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICENESS) != 0
    };
    if failed {
        tracing::debug!("cannot lower the snapshot thread's priority: {}", std::io::Error::last_os_error());
    }
}

/// Writes a snapshot from the view opened when openraft asked for the
/// builder, on a blocking thread, while applies go on.
pub struct SnapshotBuilder {
    /// The job, or why it could not start; taken by the one build.
    job: Result<Option<SnapshotJob>, Option<StorageError>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let used_twice = || snap_err(ErrorVerb::Read, std::io::Error::other("snapshot builder used twice"));
        let job = match &mut self.job {
            Ok(job) => job.take().ok_or_else(used_twice)?,
            Err(e) => return Err(e.take().unwrap_or_else(used_twice)),
        };
        // A thread of its own at a lower priority: writing a large state is
        // long and CPU-bound, and must not slow the applies and deliveries
        // that go on meanwhile on the same cores.
        let (built, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                lower_priority();
                let _ = built.send(job.write());
            })
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        done.await.map_err(|_| snap_err(ErrorVerb::Write, std::io::Error::other("snapshot thread panicked")))?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Reply>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries).inspect_err(|_| self.store.distrust())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.begin_snapshot().await
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // Received in place under its own name, renamed into place once
        // whole: no copy of a file that may hold the whole state. A new
        // transfer starts the file over; one left by a crash is replaced.
        let receiving = self.snapshot_dir.join(RECEIVING);
        let file = tokio::fs::File::create(&receiving).await.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &Meta, data: Box<tokio::fs::File>) -> Result<(), StorageError> {
        self.install(meta, data).await.inspect_err(|_| self.store.distrust())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.current_path();
        if !path.exists() {
            return Ok(None);
        }
        let header = snapshot::read_header(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let meta: Meta = codec::decode(&header).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot { meta, snapshot: Box::new(file) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, RaftSnapshotBuilder};

    use super::*;
    use crate::command::{Command, NewEvent, Request};
    use crate::store::{database, Database};

    fn publish(index: u64) -> Entry {
        let event = NewEvent {
            room: "orders".into(),
            event_type: "order.created".into(),
            data: index.to_string(),
            metadata: None,
            id: format!("e-{index}"),
            dedup: false,
        };
        let command = Command {
            timestamp_ms: 1_000 + index,
            dedup_window_ms: 0,
            requests: vec![Request::Publish { events: vec![event], create_missing: true }],
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Arc::new(command)),
        }
    }

    fn open(dir: &Path, db: &str) -> StateMachine {
        let db = Database::open(&dir.join(db).join(database::DIR), 8 << 20, false).unwrap();
        let store = Store::open(Arc::new(db)).unwrap();
        let hub = Hub::new(store.clone(), 8);
        StateMachine::open(store, &dir.join("snapshot"), hub).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_state_found_behind_the_snapshot_is_loaded_from_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = open(dir.path(), "before");
        sm.apply((1..=5).map(publish)).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        drop(sm);

        // What a power cut can leave: the snapshot on disk, the state from
        // before it (here: none at all). The log behind the snapshot may be
        // purged, so re-applying cannot fill the gap; the snapshot must.
        let mut sm = open(dir.path(), "after");
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, snapshot.meta.last_log_id);
        let room = sm.store.room("orders").unwrap().expect("the room comes back from the snapshot");
        assert_eq!(room.info.next_offset, 5);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_snapshot_holds_the_state_of_its_point_while_applies_go_on() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = open(dir.path(), "before");
        sm.apply((1..=5).map(publish)).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        // Applied after the point, before the file is written: not in it.
        sm.apply((6..=10).map(publish)).await.unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(5));
        assert_eq!(sm.store.room("orders").unwrap().unwrap().info.next_offset, 10, "applies went on");
        drop(sm);

        let sm = open(dir.path(), "after");
        let room = sm.store.room("orders").unwrap().expect("the room is in the snapshot");
        assert_eq!(room.info.next_offset, 5);
        let page = sm.store.read(&room, 0, 10, 100, |_| true).unwrap();
        let data: Vec<_> = page.events.iter().map(|e| e.event.data.as_str()).collect();
        assert_eq!(data, ["1", "2", "3", "4", "5"]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_install_interrupted_before_its_first_snapshot_file_leaves_the_state_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut sm = open(dir.path(), "db");
        sm.apply((1..=3).map(publish)).await.unwrap();
        drop(sm);
        // The marker is written first; a crash right after it leaves no
        // snapshot file to load.
        std::fs::write(dir.path().join("snapshot").join(INSTALLING), b"").unwrap();
        let mut sm = open(dir.path(), "db");
        assert_eq!(sm.applied_state().await.unwrap().0.map(|id| id.index), Some(3));
        assert!(!dir.path().join("snapshot").join(INSTALLING).exists(), "the marker is cleared");
    }
}
