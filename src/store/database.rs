//! The sled database that holds the applied state, opened with Synap's
//! settings, and the one way to make it durable: `checkpoint` (through `Store::checkpoint`).
//!
//! sled's own `flush` writes its buffers and calls `sync_file_range`, which
//! survives a process crash but not a power cut (no file metadata, no
//! device cache). Its background flusher, which adds a real `fsync` every
//! 500 ms, is turned off here: it syncs the main file without the blob
//! files that file points to (values too large for a page), so after a
//! power cut sled could find pointers to blobs that never reached the disk.
//!
//! The applied state does not need to be durable for acknowledged writes to
//! be: the Raft log is, and a restart re-applies it from the state's
//! `last_applied`. The state must be durable only at the points where the log
//! behind it is about to be dropped (building or installing a snapshot),
//! which is where the state machine checkpoints.
//!
//! Nothing calls sled's `flush` between checkpoints. Applies are plain
//! inserts (see `redo`), which sled hands to its writer threads once its
//! write buffer (up to a segment, 512 KiB) is full, so a crash loses the
//! applies since the last full buffer, however long ago an idle node made
//! them; the restart re-applies them from the log, as after any crash. A
//! periodic `flush` would add nothing but a wait: it holds sled's global
//! read lock until its writes reach the disk, and a large apply (one
//! `apply_batch`) needs that lock exclusively, so while snapshots kept the
//! disk busy it stopped applies for up to two seconds.
//!
//! sled is consistent after a crash, not after a failed write: once a write
//! fails (a full disk), what it recovers may miss part of a batch while
//! keeping later ones. So the database is trusted only while a marker file
//! next to it exists; the first failed write removes it (removing a file
//! works on a full disk), and a database found without its marker is
//! dropped at the next start and rebuilt from the snapshot and the log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::StoreError;
use crate::durable;

/// sled's database directory inside a node's data directory.
pub const DIR: &str = "db";

/// The file whose presence says the database in `dir` can be trusted.
fn trust_marker(dir: &Path) -> PathBuf {
    dir.with_extension("trusted")
}

/// How long an open waits for this process's previous handle of the same
/// database to let go of its file lock.
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Opens `config`, waiting up to [`LOCK_RELEASE_WAIT`] while the file lock
/// is held. sled releases the lock of a dropped database from its I/O
/// threads, a moment after the drop: reopening at once (a restore finished
/// at start-up, a test reopening a state) can find it still held. Another
/// process holding it fails after the wait, as it should.
fn open_when_released(config: sled::Config) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The applied state's sled database.
pub struct Database {
    db: sled::Db,
    /// A write failed ([`Database::distrust`]).
    distrusted: AtomicBool,
    dir: PathBuf,
    /// sled's main file: what `checkpoint` fdatasyncs.
    main_file: File,
    /// The highest blob file name already synced (blob names are
    /// increasing log sequence numbers).
    synced_blobs: Mutex<Option<u64>>,
}

impl Database {
    /// Opens (or creates) the database in `dir`, with a page cache of
    /// `cache_bytes`, and makes the files sled created durable. A database
    /// without its trust marker is dropped first (it is rebuilt from the
    /// snapshot and the log), unless `trust_unmarked`: a data directory of a
    /// version before markers.
    pub fn open(dir: &Path, cache_bytes: u64, trust_unmarked: bool) -> Result<Self, StoreError> {
        let marker = trust_marker(dir);
        if dir.exists() && !marker.exists() && !trust_unmarked {
            tracing::warn!(
                "the applied state in {} was left behind by a failed write; rebuilding it from the snapshot and the log",
                dir.display()
            );
            std::fs::remove_dir_all(dir)?;
        }
        durable::create_dir_all(dir)?;
        let db = open_when_released(sled::Config::new().path(dir).cache_capacity(cache_bytes).flush_every_ms(None))?;
        let main_file = File::open(dir.join("db"))?;
        let database = Self {
            db,
            distrusted: AtomicBool::new(false),
            dir: dir.to_owned(),
            main_file,
            synced_blobs: Mutex::new(None),
        };
        database.sync_files()?;
        if !marker.exists() {
            durable::replace_file(&marker, b"")?;
        }
        Ok(database)
    }

    /// Marks the database as not to be trusted after a restart: a write to
    /// it failed. Best effort (a failure is logged): the caller is failing
    /// already.
    pub fn distrust(&self) {
        self.distrusted.store(true, Ordering::SeqCst);
        let marker = trust_marker(&self.dir);
        match std::fs::remove_file(&marker) {
            Ok(()) => {
                tracing::error!("a write to the applied state failed: it will be rebuilt at the next start");
                if let Some(parent) = marker.parent() {
                    if let Err(e) = durable::sync_dir(parent) {
                        tracing::warn!("syncing {}: {e}", parent.display());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!("cannot remove {}: {e}; remove it by hand before restarting", marker.display()),
        }
    }

    /// The sled handle.
    pub fn sled(&self) -> &sled::Db {
        &self.db
    }

    fn failed(&self, e: StoreError) -> StoreError {
        self.distrust();
        e
    }

    /// Makes everything written so far durable. Nothing may write to the
    /// database meanwhile (the caller makes sure): a value written after the
    /// blobs were synced could point to a blob that was not.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.failed(e.into()))?;
        self.sync_files().map_err(|e| self.failed(e))
    }

    /// Syncs blob files not synced yet, the blob directory, the main file
    /// and the database directory (sled's own snapshot files and config),
    /// in that order: nothing durable may point at something that is not.
    fn sync_files(&self) -> Result<(), StoreError> {
        let blobs = self.dir.join("blobs");
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = *synced;
        if blobs.is_dir() {
            for item in std::fs::read_dir(&blobs)? {
                let item = item?;
                let Some(lsn) = item.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
                if synced.is_some_and(|s| lsn <= s) {
                    continue;
                }
                match File::open(item.path()) {
                    Ok(file) => durable::sync_data(&file)?,
                    // sled removed it meanwhile: nothing points at it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                newest = newest.max(Some(lsn));
            }
            durable::sync_dir(&blobs)?;
        }
        durable::sync_data(&self.main_file)?;
        durable::sync_dir(&self.dir)?;
        *synced = newest;
        Ok(())
    }
}

impl Drop for Database {
    /// sled flushes its buffers when the last handle goes. After a write
    /// failed (a full disk), that flush can wait forever for a buffer whose
    /// write never completes, and a node exiting on the error would hang
    /// instead. Such a database is not trusted at the next start anyway
    /// (it is rebuilt), so it is left to the process's exit.
    fn drop(&mut self) {
        if *self.distrusted.get_mut() {
            // A handle never dropped keeps sled from flushing.
            std::mem::forget(self.db.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(db: &Database, key: &[u8]) -> bool {
        db.sled().get(key).expect("read").is_some()
    }

    #[test]
    fn a_database_distrusted_after_a_failed_write_is_dropped_at_the_next_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(DIR);
        let db = Database::open(&path, 1 << 20, false).unwrap();
        db.sled().insert(b"k", b"v".as_slice()).unwrap();
        db.checkpoint().unwrap();
        drop(db);
        let db = Database::open(&path, 1 << 20, false).unwrap();
        assert!(holds(&db, b"k"), "a trusted database is kept");
        db.distrust();
        drop(db);
        let db = Database::open(&path, 1 << 20, false).unwrap();
        assert!(!holds(&db, b"k"), "a distrusted database starts empty");
    }

    #[test]
    fn a_database_from_before_markers_is_trusted_once_and_marked() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join(DIR);
        let db = Database::open(&path, 1 << 20, false).unwrap();
        db.sled().insert(b"k", b"v".as_slice()).unwrap();
        db.checkpoint().unwrap();
        drop(db);
        std::fs::remove_file(trust_marker(&path)).unwrap();
        let db = Database::open(&path, 1 << 20, true).unwrap();
        assert!(holds(&db, b"k"), "kept when the directory predates markers");
        drop(db);
        assert!(trust_marker(&path).exists(), "and marked from then on");
    }
}
