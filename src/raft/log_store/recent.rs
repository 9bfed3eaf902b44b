//! The newest entries of the log, kept decoded.
//!
//! Every entry is read back soon after it is appended: by the state machine
//! once it commits, and on the leader by each follower's replication. Read
//! from the segment files, each of those reads decodes the whole entry again,
//! every event of it: about a tenth of a leader's time under pipelined
//! publishing (docs/performance.md). Entries share their command (`Arc`), so
//! handing one out of this cache costs a reference count. The cache holds a
//! contiguous run ending at the log's last entry and at most [`LIMIT_BYTES`]
//! of records; older reads (a follower catching up, a restart) go to the
//! files.

use std::collections::VecDeque;

use super::segments::HEADER;
use crate::raft::Entry;

/// Most record bytes (as the segment files count them) kept decoded: as
/// much as the largest entry the proposer makes. Apply and replication
/// read within the last few entries of a loaded cluster; a 16 MiB window
/// was no faster and left ~15 MB more resident per node after a load
/// (docs/performance.md).
pub const LIMIT_BYTES: u64 = 4 * 1024 * 1024;

/// The newest entries, each with the bytes of its record.
#[derive(Default)]
pub struct Recent {
    entries: VecDeque<(Entry, u64)>,
    bytes: u64,
}

impl Recent {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    /// One past the last cached index (meaningless when empty).
    fn end(&self) -> u64 {
        self.entries.back().map_or(0, |(entry, _)| entry.log_id.index + 1)
    }

    /// Adds `entry`, just appended with a payload of `payload_bytes`. An
    /// entry that does not follow the cached run starts a new one.
    pub fn push(&mut self, entry: Entry, payload_bytes: usize) {
        if !self.entries.is_empty() && entry.log_id.index != self.end() {
            self.clear();
        }
        let bytes = (HEADER + payload_bytes) as u64;
        self.entries.push_back((entry, bytes));
        self.bytes += bytes;
        while self.bytes > LIMIT_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Forgets the entries from `index` on (a truncation).
    pub fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(entry, _)| entry.log_id.index >= index) {
            if let Some((_, bytes)) = self.entries.pop_back() {
                self.bytes -= bytes;
            }
        }
    }

    /// Forgets the entries up to and including `index` (a purge).
    pub fn purge(&mut self, index: u64) {
        while self.first().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    /// The entries `start..end`, or the first of them holding at most
    /// `budget` record bytes (always at least one), if all of them are
    /// cached; `None` sends the caller to the files.
    pub fn get(&self, start: u64, end: u64, budget: u64) -> Option<Vec<Entry>> {
        let first = self.first()?;
        if start < first || start >= end || end > self.end() {
            return None;
        }
        let mut used = 0u64;
        let mut out = Vec::new();
        for (entry, bytes) in self.entries.range((start - first) as usize..(end - first) as usize) {
            used += bytes;
            if used > budget && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }

    fn pop_front(&mut self) {
        if let Some((_, bytes)) = self.entries.pop_front() {
            self.bytes -= bytes;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        super::super::tests::entry(1, index)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut recent = Recent::default();
        for index in 5..10 {
            recent.push(entry(index), 100);
        }
        assert_eq!(indexes(recent.get(5, 10, u64::MAX)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(recent.get(7, 9, u64::MAX)), Some(vec![7, 8]));
        assert_eq!(indexes(recent.get(4, 9, u64::MAX)), None, "starts before the cache");
        assert_eq!(indexes(recent.get(8, 11, u64::MAX)), None, "ends past the last entry");
        assert_eq!(indexes(recent.get(8, 8, u64::MAX)), None, "empty range");
        // The budget counts whole records, and at least one is given.
        let record = (HEADER + 100) as u64;
        assert_eq!(indexes(recent.get(5, 10, 2 * record)), Some(vec![5, 6]));
        assert_eq!(indexes(recent.get(5, 10, 1)), Some(vec![5]));
    }

    #[test]
    fn follows_truncation_purge_and_its_limit() {
        let mut recent = Recent::default();
        for index in 1..=6 {
            recent.push(entry(index), 10);
        }
        recent.truncate(5);
        assert_eq!(indexes(recent.get(1, 5, u64::MAX)), Some(vec![1, 2, 3, 4]));
        assert_eq!(indexes(recent.get(1, 6, u64::MAX)), None);
        recent.purge(2);
        assert_eq!(indexes(recent.get(2, 5, u64::MAX)), None);
        assert_eq!(indexes(recent.get(3, 5, u64::MAX)), Some(vec![3, 4]));
        // An entry that does not follow the run replaces it.
        recent.push(entry(9), 10);
        assert_eq!(indexes(recent.get(3, 5, u64::MAX)), None);
        assert_eq!(indexes(recent.get(9, 10, u64::MAX)), Some(vec![9]));
        // Past the limit the oldest go, the newest always stays.
        let big = LIMIT_BYTES as usize / 2;
        recent.push(entry(10), big);
        recent.push(entry(11), big);
        assert_eq!(indexes(recent.get(9, 12, u64::MAX)), None);
        assert_eq!(indexes(recent.get(11, 12, u64::MAX)), Some(vec![11]));
        recent.push(entry(12), 2 * LIMIT_BYTES as usize);
        assert_eq!(indexes(recent.get(12, 13, u64::MAX)), Some(vec![12]));
        assert_eq!(recent.entries.len(), 1);
    }
}
