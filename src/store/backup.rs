//! Backup files: a snapshot file (`store::snapshot`: the whole applied state
//! at one point, as a node writes it) followed by a trailer that makes a
//! damaged or cut-off copy detectable:
//!
//! | bytes | |
//! |---|---|
//! | 8 | `SYNAPBK1` |
//! | 8 | length of the snapshot before the trailer (LE u64) |
//! | 4 | CRC-32 of those bytes (LE u32) |
//!
//! A node streams one from `GET /admin/backup`; `synap backup` saves and
//! checks it; `synap restore` checks it again and unpacks the snapshot into
//! a new data directory (`node::restore`).

use std::io::{Read, Write};
use std::path::Path;

use crate::durable;

const MAGIC: &[u8; 8] = b"SYNAPBK1";

/// Bytes of the trailer at the end of a backup file.
pub const TRAILER_LEN: u64 = 20;

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a whole, intact backup.
    #[error("{path} is not an intact backup: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.display().to_string(), source }
}

/// The trailer of a snapshot of `len` bytes whose CRC-32 is `crc`.
pub fn trailer(len: u64, crc: u32) -> [u8; TRAILER_LEN as usize] {
    let mut out = [0u8; TRAILER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&len.to_le_bytes());
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// What a checked backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Bytes of the snapshot (the file without its trailer).
    pub snapshot_bytes: u64,
    /// Its CRC-32.
    pub crc32: u32,
}

/// Checks the backup at `path`: its trailer, its length and its checksum.
pub fn check(path: &Path) -> Result<Checked, BackupError> {
    copy_snapshot(path, None)
}

/// Checks the backup at `backup` and writes its snapshot, without the
/// trailer, to `snapshot` (synced).
pub fn unpack(backup: &Path, snapshot: &Path) -> Result<Checked, BackupError> {
    copy_snapshot(backup, Some(snapshot))
}

fn copy_snapshot(backup: &Path, to: Option<&Path>) -> Result<Checked, BackupError> {
    let damaged = |why: String| BackupError::Damaged { path: backup.display().to_string(), why };
    let mut file = std::fs::File::open(backup).map_err(io_at(backup))?;
    let size = file.metadata().map_err(io_at(backup))?.len();
    if size < TRAILER_LEN {
        return Err(damaged(format!("{size} bytes, shorter than its trailer")));
    }
    let snapshot_bytes = size - TRAILER_LEN;
    let mut out = match to {
        Some(path) => Some((std::fs::File::create(path).map_err(io_at(path))?, path)),
        None => None,
    };
    let mut hasher = crc32fast::Hasher::new();
    let mut left = snapshot_bytes;
    let mut buffer = vec![0u8; 1 << 20];
    while left > 0 {
        let want = left.min(buffer.len() as u64) as usize;
        file.read_exact(&mut buffer[..want]).map_err(io_at(backup))?;
        hasher.update(&buffer[..want]);
        if let Some((out, path)) = &mut out {
            out.write_all(&buffer[..want]).map_err(io_at(path))?;
        }
        left -= want as u64;
    }
    let mut tail = [0u8; TRAILER_LEN as usize];
    file.read_exact(&mut tail).map_err(io_at(backup))?;
    let crc32 = hasher.finalize();
    if &tail[..8] != MAGIC {
        return Err(damaged("no backup trailer at its end (cut off, or not a backup)".into()));
    }
    let said_len = u64::from_le_bytes(tail[8..16].try_into().unwrap_or_default());
    let said_crc = u32::from_le_bytes(tail[16..].try_into().unwrap_or_default());
    if said_len != snapshot_bytes {
        return Err(damaged(format!("the trailer says {said_len} bytes, the file holds {snapshot_bytes}")));
    }
    if said_crc != crc32 {
        return Err(damaged(format!("checksum {crc32:08x}, the trailer says {said_crc:08x}")));
    }
    if let Some((out, path)) = out {
        durable::sync_data(&out).map_err(io_at(path))?;
    }
    Ok(Checked { snapshot_bytes, crc32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_of(snapshot: &[u8]) -> Vec<u8> {
        let mut bytes = snapshot.to_vec();
        bytes.extend_from_slice(&trailer(snapshot.len() as u64, crc32fast::hash(snapshot)));
        bytes
    }

    #[test]
    fn an_intact_backup_unpacks_to_its_snapshot() {
        let dir = tempfile::TempDir::new().unwrap();
        let (path, out) = (dir.path().join("b"), dir.path().join("s"));
        let snapshot = vec![42u8; 3 << 20];
        std::fs::write(&path, backup_of(&snapshot)).unwrap();
        let checked = unpack(&path, &out).unwrap();
        assert_eq!(checked, Checked { snapshot_bytes: snapshot.len() as u64, crc32: crc32fast::hash(&snapshot) });
        assert_eq!(std::fs::read(&out).unwrap(), snapshot);
    }

    #[test]
    fn a_flipped_byte_a_cut_and_a_stranger_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("b");
        let good = backup_of(b"some snapshot bytes");
        let mut flipped = good.clone();
        flipped[3] ^= 1;
        let cut = good[..good.len() - 5].to_vec();
        let short_of_its_data = backup_of(b"some snapshot bytes")[4..].to_vec();
        for (bytes, expected) in [
            (flipped, "checksum"),
            (cut, "no backup trailer"),
            (short_of_its_data, "the trailer says"),
            (b"tiny".to_vec(), "shorter than its trailer"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let error = check(&path).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
