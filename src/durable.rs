//! The one place where Synap asks the kernel to make data durable.
//!
//! Every `fsync`/`fdatasync` the server relies on goes through these
//! functions, so the list of durability points in `docs/architecture.md` can
//! be checked against the callers of this module. Writing a file or renaming
//! it only changes the page cache; only these calls survive a power cut:
//!
//! - [`sync_data`] (`fdatasync`) for a file whose content or length changed;
//! - [`sync_all`] (`fsync`) when its other metadata matters too;
//! - [`sync_dir`] (`fsync` of a directory) for created, renamed or removed
//!   entries in it;
//! - [`replace_file`] to swap a small file atomically (write a temporary
//!   file, sync it, rename it over the old one, sync the directory).
//!
//! `--unsafe-no-fsync` ([`set_unsafe_no_fsync`]) turns them all into no-ops.
//! It exists so that the power-cut test can prove that it catches a missing
//! sync; a node running with it loses acknowledged writes when power fails.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

static SKIP_SYNC: AtomicBool = AtomicBool::new(false);

/// Makes every sync of this module a no-op (`true`) or real again.
/// Unsafe in the data-loss sense: only tests of the durability checks use it.
pub fn set_unsafe_no_fsync(skip: bool) {
    SKIP_SYNC.store(skip, Ordering::SeqCst);
}

/// Whether syncs are being skipped (`--unsafe-no-fsync`).
pub fn unsafe_no_fsync() -> bool {
    SKIP_SYNC.load(Ordering::Relaxed)
}

/// `fdatasync`: the file's data and whatever metadata is needed to read it
/// back (its length) reach stable storage.
pub fn sync_data(file: &File) -> io::Result<()> {
    if unsafe_no_fsync() {
        return Ok(());
    }
    file.sync_data()
}

/// `fsync`: the file's data and all of its metadata reach stable storage.
pub fn sync_all(file: &File) -> io::Result<()> {
    if unsafe_no_fsync() {
        return Ok(());
    }
    file.sync_all()
}

/// `fsync` of a directory: entries created, renamed or removed in it become
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if unsafe_no_fsync() {
        return Ok(());
    }
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, and makes each new entry durable
/// in its parent.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Replaces the file at `path` with `bytes` atomically and durably: after a
/// crash at any point the file holds either the old or the new content.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        sync_data(&file)?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_content_and_leaves_no_temporary() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("meta");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("meta")]);
    }

    #[test]
    fn create_dir_all_makes_nested_directories() {
        let dir = tempfile::TempDir::new().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all(&nested).unwrap();
    }
}
