//! The Raft log as a directory of append-only segment files.
//!
//! Each segment is named after the index of its first record
//! (`00000000000000000042.log`) and holds records back to back:
//!
//! ```text
//! len: u32 LE | crc: u32 LE | index: u64 LE | payload (len bytes)
//! ```
//!
//! `crc` is the CRC-32 of the index bytes and the payload. Indexes are dense:
//! record `k` of a segment has index `first + k`, and each segment starts
//! where the previous one ends.
//!
//! Crash rules (what a restart may find, and what it does):
//! - Only the last segment may end in an incomplete or unsynced record (a
//!   torn tail): the record whose header or CRC does not check out and
//!   everything after it are cut off. Appends made durable before the
//!   crash all lie before the cut, because a segment is synced before the
//!   next one is created and every acknowledged append was synced.
//! - A bad record in any other segment, or a gap between segments, is
//!   corruption: opening fails rather than silently drop entries.
//! - Segments wholly at or below the purge point are leftovers of a purge
//!   whose removals did not reach the disk: they are removed.
//! - A truncation (a new leader overwriting uncommitted entries) is made
//!   durable before it returns, so removed entries never come back.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::durable;

/// Bytes of a record's header.
pub const HEADER: usize = 16;
const SUFFIX: &str = ".log";

/// A failure of the log files.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The files hold something a crash cannot explain.
    #[error("raft log corrupt: {0}")]
    Corrupt(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// One segment file and where its records start.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Byte offset of each record; record `k` has index `first + k`.
    offsets: Vec<u64>,
    /// Bytes in the file (the end of the last record).
    len: u64,
}

impl Segment {
    /// One past the last index it holds.
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }

    /// Byte range of the records `[from, to)` (indexes inside the segment).
    fn byte_range(&self, from: u64, to: u64) -> Range<u64> {
        let start = self.offsets[(from - self.first) as usize];
        let end = if to >= self.end() { self.len } else { self.offsets[(to - self.first) as usize] };
        start..end
    }
}

/// A run of consecutive records in one file, to be read without the lock.
pub struct Chunk {
    file: Arc<File>,
    path: PathBuf,
    bytes: Range<u64>,
    first: u64,
    count: u64,
}

/// What opening found, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut off the end of the last segment (a torn or unsynced tail).
    pub torn_bytes: u64,
    /// Segment files removed because a purge had already covered them.
    pub purged_files: usize,
}

/// The open log: its segments, oldest first; the last one takes appends.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Vec<Segment>,
    /// Lowest index that can be read (one past the purge point).
    first_index: u64,
    /// Index the next appended record must have.
    next_index: u64,
    /// Whether anything was ever purged (else the first append sets the
    /// start of the log).
    purged: bool,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<(), LogError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| LogError::Corrupt(format!("entry {index} is {} bytes, over 4 GiB", payload.len())))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&index.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A record header as read back.
struct Header {
    len: u32,
    crc: u32,
    index: u64,
}

fn parse_header(bytes: &[u8; HEADER]) -> Header {
    let word = |range: Range<usize>| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[range]);
        u32::from_le_bytes(b)
    };
    let mut index = [0u8; 8];
    index.copy_from_slice(&bytes[8..16]);
    Header { len: word(0..4), crc: word(4..8), index: u64::from_le_bytes(index) }
}

fn crc_ok(header: &Header, payload: &[u8]) -> bool {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header.index.to_le_bytes());
    crc.update(payload);
    crc.finalize() == header.crc
}

/// Reads the valid records of a segment file from its start. Returns their
/// offsets and the end of the last valid one.
fn scan(file: &File, first: u64) -> io::Result<(Vec<u64>, u64)> {
    let size = file.metadata()?.len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut offsets = Vec::new();
    let mut at = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut raw = [0u8; HEADER];
        if at + HEADER as u64 > size || input.read_exact(&mut raw).is_err() {
            break;
        }
        let header = parse_header(&raw);
        let end = at + HEADER as u64 + u64::from(header.len);
        // An empty payload is never written: a zeroed tail reads as one.
        if header.len == 0 || end > size || header.index != first + offsets.len() as u64 {
            break;
        }
        payload.resize(header.len as usize, 0);
        if input.read_exact(&mut payload).is_err() || !crc_ok(&header, &payload) {
            break;
        }
        offsets.push(at);
        at = end;
    }
    Ok((offsets, at))
}

impl SegmentLog {
    /// Opens the log in `dir` (which must exist), repairing what a crash
    /// can leave behind (see the module's crash rules). `purged` is the
    /// index of the last purged entry, kept by the caller.
    pub fn open(dir: &Path, segment_bytes: u64, purged: Option<u64>) -> Result<(Self, Recovery), LogError> {
        let mut files = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let name = item.map_err(io_at(dir))?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(first) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) else { continue };
            files.push((first, dir.join(name)));
        }
        files.sort();
        let mut recovery = Recovery::default();
        let floor = purged.map(|p| p + 1);
        let mut found = Vec::with_capacity(files.len());
        for (first, path) in files {
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_at(&path))?;
            let (offsets, len) = scan(&file, first).map_err(io_at(&path))?;
            let size = file.metadata().map_err(io_at(&path))?.len();
            let segment = Segment { first, path, file: Arc::new(file), offsets, len };
            // Leftovers of a purge whose removals did not reach the disk
            // (their tails may be torn: they were not necessarily synced).
            if floor.is_some_and(|f| segment.end() <= f) {
                std::fs::remove_file(&segment.path).map_err(io_at(&segment.path))?;
                recovery.purged_files += 1;
                continue;
            }
            found.push((segment, size));
        }
        // An empty file before the last one holds nothing to lose.
        let count = found.len();
        let mut kept: Vec<Segment> = Vec::with_capacity(count);
        for (k, (segment, size)) in found.into_iter().enumerate() {
            let last = k + 1 == count;
            if size == 0 && !last {
                std::fs::remove_file(&segment.path).map_err(io_at(&segment.path))?;
                continue;
            }
            if segment.len < size {
                if !last {
                    return Err(LogError::Corrupt(format!(
                        "{} has an invalid record at byte {} of {size}, and later segments follow",
                        segment.path.display(),
                        segment.len
                    )));
                }
                segment.file.set_len(segment.len).map_err(io_at(&segment.path))?;
                durable::sync_data(&segment.file).map_err(io_at(&segment.path))?;
                recovery.torn_bytes = size - segment.len;
            }
            kept.push(segment);
        }
        for pair in kept.windows(2) {
            if pair[1].first != pair[0].end() {
                return Err(LogError::Corrupt(format!(
                    "gap between {} (ends before index {}) and {}",
                    pair[0].path.display(),
                    pair[0].end(),
                    pair[1].path.display()
                )));
            }
        }
        if let (Some(floor), Some(head)) = (floor, kept.first()) {
            if head.first > floor {
                return Err(LogError::Corrupt(format!(
                    "entries {floor}..{} are missing: the log was purged up to {} only",
                    head.first,
                    floor - 1
                )));
            }
        }
        let first_index = floor.or(kept.first().map(|s| s.first)).unwrap_or(0);
        let next_index = kept.last().map_or(first_index, Segment::end).max(first_index);
        let log = SegmentLog {
            dir: dir.to_owned(),
            segment_bytes,
            segments: kept,
            first_index,
            next_index,
            purged: purged.is_some(),
        };
        Ok((log, recovery))
    }

    /// Lowest readable index.
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// One past the last index in the log.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Writes `records` (index, payload) after the last one. Returns the
    /// file that must be synced before they count as durable: an earlier
    /// segment filled by this call was synced already, before the next one
    /// was created.
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<Arc<File>, LogError> {
        if let Some((index, _)) = records.first() {
            let fresh = self.segments.is_empty() && !self.purged && self.next_index == self.first_index;
            if fresh && *index != self.next_index {
                self.first_index = *index;
                self.next_index = *index;
            }
        }
        // Check every index first: a refused append must change nothing.
        for (k, (index, _)) in records.iter().enumerate() {
            let expected = self.next_index + k as u64;
            if *index != expected {
                return Err(LogError::Corrupt(format!("append of entry {index} where {expected} was expected")));
            }
        }
        let mut buffer = Vec::new();
        let mut buffered = 0usize;
        for (index, payload) in records {
            let rolling = match self.segments.last() {
                None => true,
                Some(active) => {
                    let holds_records = !active.offsets.is_empty() || buffered > 0;
                    holds_records && active.len + buffer.len() as u64 >= self.segment_bytes
                }
            };
            if rolling {
                self.write_buffered(&mut buffer, &mut buffered)?;
                self.roll(*index)?;
            }
            encode_record(&mut buffer, *index, payload)?;
            buffered += 1;
            self.next_index += 1;
        }
        self.write_buffered(&mut buffer, &mut buffered)?;
        match self.segments.last() {
            Some(active) => Ok(active.file.clone()),
            None => Err(LogError::Corrupt("append to a log without segments".into())),
        }
    }

    /// Writes the last `count` records, encoded in `buffer`, to the active
    /// segment.
    fn write_buffered(&mut self, buffer: &mut Vec<u8>, count: &mut usize) -> Result<(), LogError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let Some(active) = self.segments.last_mut() else {
            return Err(LogError::Corrupt("append to a log without segments".into()));
        };
        active.file.write_all_at(buffer, active.len).map_err(io_at(&active.path))?;
        // Record offsets, walking the headers just written.
        let mut at = 0usize;
        for _ in 0..*count {
            active.offsets.push(active.len + at as u64);
            let mut len = [0u8; 4];
            len.copy_from_slice(&buffer[at..at + 4]);
            at += HEADER + u32::from_le_bytes(len) as usize;
        }
        active.len += buffer.len() as u64;
        buffer.clear();
        *count = 0;
        Ok(())
    }

    /// Starts a new segment at `first`, after syncing the current one: the
    /// crash rules allow a torn tail only in the last segment.
    fn roll(&mut self, first: u64) -> Result<(), LogError> {
        if let Some(active) = self.segments.last() {
            durable::sync_data(&active.file).map_err(io_at(&active.path))?;
        }
        let path = segment_path(&self.dir, first);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io_at(&path))?;
        durable::sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        self.segments.push(Segment { first, path, file: Arc::new(file), offsets: Vec::new(), len: 0 });
        Ok(())
    }

    /// Removes every record at `since` and after, durably.
    pub fn truncate(&mut self, since: u64) -> Result<(), LogError> {
        let since = since.max(self.first_index);
        if since >= self.next_index {
            return Ok(());
        }
        let mut removed_files = false;
        while self.segments.last().is_some_and(|s| s.first > since || (s.first == since && self.segments.len() > 1)) {
            if let Some(segment) = self.segments.pop() {
                std::fs::remove_file(&segment.path).map_err(io_at(&segment.path))?;
                removed_files = true;
            }
        }
        if let Some(active) = self.segments.last_mut() {
            let keep = (since.saturating_sub(active.first) as usize).min(active.offsets.len());
            let cut = active.offsets.get(keep).copied().unwrap_or(active.len);
            active.offsets.truncate(keep);
            active.len = cut;
            active.file.set_len(cut).map_err(io_at(&active.path))?;
            durable::sync_data(&active.file).map_err(io_at(&active.path))?;
        }
        if removed_files {
            durable::sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        }
        self.next_index = since;
        Ok(())
    }

    /// Forgets every record up to and including `upto`. The caller has made
    /// the purge point durable first, so files removed here need no sync:
    /// a restart removes any that come back.
    ///
    /// Whole segments before the one holding the new first record are
    /// returned, not removed: the caller removes them once it no longer
    /// holds the log (removing hundreds of megabytes takes a while, and
    /// appends wait meanwhile). No later segment can take their names: new
    /// segments start past the records they held.
    #[must_use = "the returned segment files are still to be removed"]
    pub fn purge(&mut self, upto: u64) -> Result<Vec<PathBuf>, LogError> {
        let floor = upto + 1;
        self.purged = true;
        if floor <= self.first_index {
            return Ok(Vec::new());
        }
        self.first_index = floor;
        if floor >= self.next_index {
            // Everything goes, including the active segment: the next
            // append starts a new one at `floor`.
            self.next_index = floor;
            // Removed here: the next segment may start where the last
            // one did, under the same name.
            for segment in self.segments.drain(..) {
                std::fs::remove_file(&segment.path).map_err(io_at(&segment.path))?;
            }
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        while self.segments.len() > 1 && self.segments[0].end() <= floor {
            done.push(self.segments.remove(0).path);
        }
        Ok(done)
    }

    /// Bytes of the records that can be read (from the first readable
    /// index to the end).
    pub fn live_bytes(&self) -> u64 {
        let Some(head) = self.segments.first() else { return 0 };
        let skipped = if self.first_index > head.first && self.first_index < head.end() {
            head.byte_range(self.first_index, head.end()).start
        } else {
            0
        };
        self.segments.iter().map(|s| s.len).sum::<u64>() - skipped
    }

    /// Where the records `range` (clamped to what the log holds) lie, to be
    /// read with [`read_chunks`] without holding the log.
    pub fn locate(&self, range: Range<u64>) -> Vec<Chunk> {
        self.locate_within(range, u64::MAX)
    }

    /// Like [`SegmentLog::locate`], but only the first records of `range`
    /// that together hold at most `budget` bytes (always at least one).
    pub fn locate_within(&self, range: Range<u64>, budget: u64) -> Vec<Chunk> {
        let start = range.start.max(self.first_index);
        let mut end = range.end.min(self.next_index);
        if budget < u64::MAX && start < end {
            end = self.end_within(start, end, budget);
        }
        let mut chunks = Vec::new();
        if start >= end {
            return chunks;
        }
        let mut k = self.segments.partition_point(|s| s.first <= start).saturating_sub(1);
        let mut from = start;
        while from < end && k < self.segments.len() {
            let segment = &self.segments[k];
            let to = end.min(segment.end());
            if from < to {
                chunks.push(Chunk {
                    file: segment.file.clone(),
                    path: segment.path.clone(),
                    bytes: segment.byte_range(from, to),
                    first: from,
                    count: to - from,
                });
            }
            from = to;
            k += 1;
        }
        chunks
    }
}

impl SegmentLog {
    /// The end of the longest run of records from `start` (before `end`)
    /// whose bytes fit in `budget`, at least one record long.
    fn end_within(&self, start: u64, end: u64, budget: u64) -> u64 {
        let mut k = self.segments.partition_point(|s| s.first <= start).saturating_sub(1);
        let mut index = start;
        let mut used = 0u64;
        while index < end && k < self.segments.len() {
            let segment = &self.segments[k];
            while index < end && index < segment.end() {
                let bytes = segment.byte_range(index, index + 1);
                used += bytes.end - bytes.start;
                if used > budget && index > start {
                    return index;
                }
                index += 1;
            }
            k += 1;
        }
        index
    }
}

/// Reads the records of `chunks`: (index, payload) in index order. Every
/// record's CRC and index are checked again.
pub fn read_chunks(chunks: Vec<Chunk>) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    let mut records = Vec::new();
    for chunk in chunks {
        let mut bytes = vec![0u8; (chunk.bytes.end - chunk.bytes.start) as usize];
        chunk.file.read_exact_at(&mut bytes, chunk.bytes.start).map_err(io_at(&chunk.path))?;
        let mut at = 0usize;
        for k in 0..chunk.count {
            let index = chunk.first + k;
            let bad = || LogError::Corrupt(format!("{}: record {index} does not check out", chunk.path.display()));
            let raw: &[u8; HEADER] = bytes.get(at..at + HEADER).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
            let header = parse_header(raw);
            let payload = bytes.get(at + HEADER..at + HEADER + header.len as usize).ok_or_else(bad)?;
            if header.index != index || !crc_ok(&header, payload) {
                return Err(bad());
            }
            records.push((index, payload.to_vec()));
            at += HEADER + header.len as usize;
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(range: Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("entry {i}").repeat(1 + (i % 5) as usize).into_bytes())).collect()
    }

    fn read_all(log: &SegmentLog) -> Vec<(u64, Vec<u8>)> {
        read_chunks(log.locate(0..u64::MAX)).unwrap()
    }

    fn open(dir: &Path, purged: Option<u64>) -> (SegmentLog, Recovery) {
        SegmentLog::open(dir, 256, purged).unwrap()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    }

    #[test]
    fn appended_records_read_back_across_segments_and_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..10)).unwrap();
        log.append(&records(10..40)).unwrap();
        assert!(segment_files(dir.path()).len() > 3, "256-byte segments roll");
        assert_eq!(read_all(&log), records(0..40));
        assert_eq!(read_chunks(log.locate(17..23)).unwrap(), records(17..23));
        drop(log);
        let (log, recovery) = open(dir.path(), None);
        assert_eq!(recovery, Recovery::default());
        assert_eq!((log.first_index(), log.next_index()), (0, 40));
        assert_eq!(read_all(&log), records(0..40));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..12)).unwrap();
        drop(log);
        let last = segment_files(dir.path()).pop().unwrap();
        let whole = std::fs::metadata(&last).unwrap().len();
        // Half a record of garbage, then a zeroed region (a length that was
        // extended but whose data never made it).
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(&last, &bytes).unwrap();
        let (mut log, recovery) = open(dir.path(), None);
        assert_eq!(recovery.torn_bytes, 70);
        assert_eq!(std::fs::metadata(&last).unwrap().len(), whole);
        assert_eq!(read_all(&log), records(0..12));
        log.append(&records(12..14)).unwrap();
        assert_eq!(read_all(&log), records(0..14));
    }

    #[test]
    fn a_record_with_a_bad_crc_ends_the_last_segment_there() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..3)).unwrap();
        drop(log);
        let last = segment_files(dir.path()).pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&last, &bytes).unwrap();
        let (log, _) = open(dir.path(), None);
        assert_eq!(read_all(&log), records(0..2));
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error_not_a_silent_cut() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        drop(log);
        let first = segment_files(dir.path()).remove(0);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&first, &bytes).unwrap();
        let error = SegmentLog::open(dir.path(), 256, None).err().expect("corruption is refused");
        assert!(error.to_string().contains("invalid record"), "{error}");
    }

    #[test]
    fn a_missing_middle_segment_is_an_error() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        drop(log);
        std::fs::remove_file(&segment_files(dir.path())[1]).unwrap();
        let error = SegmentLog::open(dir.path(), 256, None).err().expect("a gap is refused");
        assert!(error.to_string().contains("gap"), "{error}");
    }

    #[test]
    fn truncation_removes_records_for_good_and_appends_continue() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        log.truncate(15).unwrap();
        assert_eq!(log.next_index(), 15);
        assert_eq!(read_all(&log), records(0..15));
        let replacement: Vec<(u64, Vec<u8>)> = (15..20).map(|i| (i, format!("new {i}").into_bytes())).collect();
        log.append(&replacement).unwrap();
        drop(log);
        let (log, _) = open(dir.path(), None);
        let mut expected = records(0..15);
        expected.extend(replacement);
        assert_eq!(read_all(&log), expected);
    }

    #[test]
    fn truncating_at_a_segment_start_and_everything() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        let second = segment_files(dir.path())[1].clone();
        let start: u64 = second.file_name().unwrap().to_str().unwrap()[..20].parse().unwrap();
        log.truncate(start).unwrap();
        assert_eq!(read_all(&log), records(0..start));
        log.truncate(0).unwrap();
        assert!(read_all(&log).is_empty());
        log.append(&records(0..3)).unwrap();
        drop(log);
        let (log, _) = open(dir.path(), None);
        assert_eq!(read_all(&log), records(0..3));
    }

    /// Removes what a purge hands back, as `LogStore::purge` does.
    fn remove(files: Vec<PathBuf>) {
        for file in files {
            std::fs::remove_file(file).unwrap();
        }
    }

    #[test]
    fn purge_drops_whole_segments_and_hides_the_rest() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        let before = segment_files(dir.path()).len();
        remove(log.purge(20).unwrap());
        assert!(segment_files(dir.path()).len() < before);
        assert_eq!(read_all(&log), records(21..40));
        drop(log);
        let (log, _) = open(dir.path(), Some(20));
        assert_eq!((log.first_index(), log.next_index()), (21, 40));
        assert_eq!(read_all(&log), records(21..40));
    }

    #[test]
    fn purge_past_the_end_restarts_the_log_there() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..5)).unwrap();
        remove(log.purge(99).unwrap());
        assert_eq!((log.first_index(), log.next_index()), (100, 100));
        log.append(&records(100..103)).unwrap();
        drop(log);
        let (log, _) = open(dir.path(), Some(99));
        assert_eq!(read_all(&log), records(100..103));
    }

    #[test]
    fn segments_a_purge_left_behind_are_removed_at_open() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..40)).unwrap();
        drop(log);
        // The purge point was recorded but no file was removed yet.
        let (log, recovery) = open(dir.path(), Some(30));
        assert!(recovery.purged_files > 0);
        assert_eq!(read_all(&log), records(31..40));
    }

    #[test]
    fn a_limited_read_stops_at_its_byte_budget_but_returns_at_least_one_record() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        let big: Vec<(u64, Vec<u8>)> = (0..10).map(|i| (i, vec![i as u8; 100])).collect();
        log.append(&big).unwrap();
        // Each record is 116 bytes with its header.
        let three = read_chunks(log.locate_within(2..10, 350)).unwrap();
        assert_eq!(three.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![2, 3, 4]);
        let one = read_chunks(log.locate_within(5..10, 1)).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(read_chunks(log.locate_within(0..10, u64::MAX - 1)).unwrap().len(), 10);
    }

    #[test]
    fn live_bytes_count_what_can_still_be_read() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        let records: Vec<(u64, Vec<u8>)> = (0..10).map(|i| (i, vec![0; 84])).collect();
        log.append(&records).unwrap();
        assert_eq!(log.live_bytes(), 10 * 100);
        remove(log.purge(3).unwrap());
        assert_eq!(log.live_bytes(), 6 * 100);
        log.truncate(8).unwrap();
        assert_eq!(log.live_bytes(), 4 * 100);
    }

    #[test]
    fn an_append_that_would_leave_a_hole_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _) = open(dir.path(), None);
        log.append(&records(0..3)).unwrap();
        assert!(log.append(&records(4..5)).is_err());
        assert_eq!(read_all(&log), records(0..3));
    }
}
