//! Power cuts for local nodes: each node's data directory is a FUSE file
//! system ([`disk`], served by [`mount`]) that keeps unsynced writes in
//! memory, so that a cut can drop exactly what a real power loss would.
//!
//! [`PowerDisk::cut`] is the fault: the caller kills the node's process
//! first (`kill -9`), the disk refuses whatever that process still had
//! queued, forgets everything not synced, and the node is restarted on what
//! survived.

pub mod disk;
pub mod mount;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mount::{PowerFs, Shared};

/// A mounted power-cut disk.
pub struct PowerDisk {
    shared: Arc<Shared>,
    path: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl PowerDisk {
    /// Mounts an empty disk at `path` (an existing, empty directory).
    /// Needs `/dev/fuse` and the right to mount (root here).
    pub fn mount(path: &Path) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut config = fuser::Config::default();
        config.mount_options =
            vec![fuser::MountOption::FSName("synap-powercut".into()), fuser::MountOption::DefaultPermissions];
        let session = fuser::spawn_mount(PowerFs::new(shared.clone()), path, &config)?;
        Ok(Self { shared, path: path.to_owned(), session: Some(session) })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The power cut. `dead` are the processes that were using the disk and
    /// have been killed: anything they still had queued is refused.
    pub fn cut(&self, dead: &[u32]) {
        self.shared.fenced.lock().unwrap_or_else(|p| p.into_inner()).extend(dead.iter().copied());
        self.shared.disk().cut();
    }

    /// Bytes of file content on the disk now.
    pub fn bytes(&self) -> u64 {
        self.shared.disk().bytes()
    }
}

impl Drop for PowerDisk {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                eprintln!("unmounting {}: {e}", self.path.display());
            }
        }
    }
}
