//! Group `fdatasync` of appended log entries.
//!
//! `append` writes entries into the page cache and hands the flusher the
//! file and a completion. The flusher thread takes every completion queued
//! so far, syncs each file they name once, and only then completes them, in
//! the order they were queued. Appends that arrive while a sync runs wait
//! for the next one and share it, so the number of syncs follows the disk,
//! not the load.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;

use crate::durable;

/// What the flusher calls once an append is durable (or failed to be).
pub type Completion = Box<dyn FnOnce(io::Result<()>) + Send>;

struct Pending {
    file: Arc<File>,
    done: Completion,
}

/// Handle to the flusher thread; the thread ends when every handle is gone.
#[derive(Clone)]
pub struct Flusher {
    queue: mpsc::Sender<Pending>,
}

/// The flusher thread is gone (it only ends with its handles, or if it
/// could not be started).
#[derive(Debug, thiserror::Error)]
#[error("the log flusher stopped")]
pub struct FlusherStopped;

impl Flusher {
    /// Starts the flusher thread.
    pub fn start() -> io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        std::thread::Builder::new().name("synap-log-sync".into()).spawn(move || run(rx))?;
        Ok(Self { queue })
    }

    /// Calls `done` once everything written to `file` before this call is
    /// durable.
    pub fn submit(&self, file: Arc<File>, done: Completion) -> Result<(), FlusherStopped> {
        self.queue.send(Pending { file, done }).map_err(|_| FlusherStopped)
    }
}

fn run(rx: mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let mut synced: Vec<&Arc<File>> = Vec::new();
        let mut result = Ok(());
        for pending in &batch {
            if result.is_ok() && !synced.iter().any(|f| Arc::ptr_eq(f, &pending.file)) {
                result = durable::sync_data(&pending.file);
                synced.push(&pending.file);
            }
        }
        drop(synced);
        crate::telemetry::log_synced(started.elapsed());
        for pending in batch {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            (pending.done)(outcome);
        }
    }
}
