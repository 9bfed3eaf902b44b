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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::StoreError;
use crate::durable;

/// How often sled's buffers are written to the page cache (not synced).
/// Bounds what a process crash makes the node re-apply from the log.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);

/// sled's database directory inside a node's data directory.
pub const DIR: &str = "db";

/// The applied state's sled database.
pub struct Database {
    db: sled::Db,
    dir: PathBuf,
    /// sled's main file: what `checkpoint` fdatasyncs.
    main_file: File,
    /// The highest blob file name already synced (blob names are
    /// increasing log sequence numbers).
    synced_blobs: Mutex<Option<u64>>,
}

impl Database {
    /// Opens (or creates) the database in `dir`, with a page cache of
    /// `cache_bytes`, and makes the files sled created durable.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        durable::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).flush_every_ms(None).open()?;
        let main_file = File::open(dir.join("db"))?;
        let database = Self { db, dir: dir.to_owned(), main_file, synced_blobs: Mutex::new(None) };
        database.sync_files()?;
        Ok(database)
    }

    /// The sled handle.
    pub fn sled(&self) -> &sled::Db {
        &self.db
    }

    /// Writes sled's buffers to the page cache without syncing: what a
    /// process crash would otherwise lose, cheaply.
    pub fn write_out(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Makes everything written so far durable. Nothing may write to the
    /// database meanwhile (the caller makes sure): a value written after the
    /// blobs were synced could point to a blob that was not.
    pub(super) fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.sync_files()
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
