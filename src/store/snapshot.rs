//! Snapshot files: a header frame (the caller's description of the
//! snapshot), then the whole applied state as length-prefixed key/value
//! records, written and read as a stream, never held in memory.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{PointInTime, Store, StoreError};
use crate::durable;

/// Records per sled batch while loading: bounds memory during install.
const LOAD_BATCH: usize = 4096;

/// Writes `header` and every record of `view` to `path`, and syncs it.
/// Applies go on meanwhile.
pub fn dump(view: &PointInTime, header: &[u8], path: &Path) -> Result<u64, StoreError> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::new(Paced { file, written: 0, started: 0, sent: 0 });
    write_frame(&mut out, header)?;
    let mut records = 0u64;
    for item in view.records() {
        let (key, value) = item?;
        write_frame(&mut out, &key)?;
        write_frame(&mut out, &value)?;
        records += 1;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?.file;
    durable::sync_data(&file)?;
    Ok(records)
}

/// Replaces the whole content of `store` with the records in `path`.
/// Readers wait meanwhile.
///
/// Neither atomic nor durable: the caller marks the install as in progress
/// before calling, checkpoints the store after, and repeats the install
/// after a crash in between.
pub fn load(store: &Store, path: &Path) -> Result<u64, StoreError> {
    let _replacing = store.replacing();
    // The last apply's record must not replay over the loaded state.
    store.forget_redo()?;
    let tree = store.tree();
    tree.clear()?;
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut input = BufReader::new(file);
    read_frame(&mut input, size)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut records = 0u64;
    while let Some(key) = read_frame(&mut input, size)? {
        let value = read_frame(&mut input, size)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "snapshot ends after a key"))?;
        batch.insert(key, value);
        pending += 1;
        records += 1;
        if pending == LOAD_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    tree.apply_batch(batch)?;
    Ok(records)
}

/// The header frame of the snapshot file at `path`.
pub fn read_header(path: &Path) -> Result<Vec<u8>, StoreError> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut input = BufReader::new(file);
    let header = read_frame(&mut input, size)?;
    Ok(header.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "empty snapshot file"))?)
}

/// Bytes written before the file's pages are sent to the disk. Small, so
/// that little of the snapshot is ever queued at the disk ahead of a Raft
/// log sync: with three nodes writing snapshots on one disk, fan-out p99
/// was ~107 ms with 8 MiB windows, ~80 ms with 1 MiB and ~56 ms with
/// 256 KiB, for snapshots written in ~4 s instead of ~3
/// (docs/performance.md, session 8).
const WRITE_BACK_EVERY: u64 = 256 << 10;

/// A file written at the pace of the disk: every [`WRITE_BACK_EVERY`] bytes
/// it starts writing the new pages out and waits for the ones before.
/// Without it, hundreds of megabytes of dirty pages reach the disk at the
/// final sync, all at once, and every Raft log sync of the node waits
/// behind them.
struct Paced {
    file: std::fs::File,
    written: u64,
    /// Where the pages not yet sent to the disk start.
    started: u64,
    /// Where the pages sent to the disk but not waited for start.
    sent: u64,
}

impl Paced {
    fn write_back(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let (sent, from, to) = (self.sent, self.started, self.written);
        // SAFETY: sync_file_range takes no pointers; `fd` is open for the
        // call's duration. Its failure only loses the pacing, not data: the
        // final fdatasync still makes the file durable.
        unsafe {
            // The previous window: wait until it is on the disk.
            if from > sent {
                let flags =
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                libc::sync_file_range(fd, sent as i64, (from - sent) as i64, flags);
            }
            // This one: start writing it.
            libc::sync_file_range(fd, from as i64, (to - from) as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
        (self.sent, self.started) = (from, to);
    }
}

impl Write for Paced {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(bytes)?;
        self.written += n as u64;
        if self.written - self.started >= WRITE_BACK_EVERY {
            self.write_back();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("record over 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads one frame of at most `max` bytes: a snapshot file comes from
/// another node, and its lengths must not make this one allocate more than
/// the file holds.
fn read_frame(input: &mut impl Read, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if u64::from(len) > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot frame of {len} bytes in a file of {max}"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn frames_read_back_as_written_and_end_cleanly() {
        let mut out = Vec::new();
        for frame in [b"header".as_slice(), b"", b"key", &[7u8; 300]] {
            write_frame(&mut out, frame).unwrap();
        }
        let size = out.len() as u64;
        let mut input = Cursor::new(out);
        assert_eq!(read_frame(&mut input, size).unwrap().as_deref(), Some(b"header".as_slice()));
        assert_eq!(read_frame(&mut input, size).unwrap().as_deref(), Some(b"".as_slice()));
        assert_eq!(read_frame(&mut input, size).unwrap().as_deref(), Some(b"key".as_slice()));
        assert_eq!(read_frame(&mut input, size).unwrap().map(|f| f.len()), Some(300));
        assert_eq!(read_frame(&mut input, size).unwrap(), None, "end of file between frames");
    }

    #[test]
    fn a_frame_cut_short_is_an_error() {
        let mut out = Vec::new();
        write_frame(&mut out, b"0123456789").unwrap();
        out.truncate(8);
        assert!(read_frame(&mut Cursor::new(out), 8).is_err());
    }

    #[test]
    fn a_crafted_length_is_refused_before_anything_is_allocated() {
        // 4 GiB announced in a 9-byte file.
        let crafted = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5];
        let error = read_frame(&mut Cursor::new(crafted), crafted.len() as u64).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_dumped_state_loads_back_record_for_record() {
        let (_dir, store) = Store::scratch();
        let mut batch = sled::Batch::default();
        for i in 0..1000u32 {
            batch.insert(&i.to_be_bytes(), format!("value {i}").into_bytes());
        }
        store.tree().apply_batch(batch).unwrap();
        let (dir, copy) = Store::scratch();
        let path = dir.path().join("state.snap");
        assert_eq!(dump(&PointInTime::open(&store), b"meta", &path).unwrap(), 1000);
        copy.tree().insert("stale", "gone after the load").unwrap();
        assert_eq!(read_header(&path).unwrap(), b"meta");
        assert_eq!(load(&copy, &path).unwrap(), 1000);
        let original: Vec<_> = store.tree().iter().map(Result::unwrap).collect();
        let loaded: Vec<_> = copy.tree().iter().map(Result::unwrap).collect();
        assert_eq!(original, loaded);
    }
}
