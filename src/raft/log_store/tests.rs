use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, Vote};

use super::*;
use crate::command::Command;

pub(super) fn entry(term: u64, index: u64) -> Entry {
    let command = Command { timestamp_ms: index, dedup_window_ms: 0, requests: Vec::new() };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Arc::new(command)),
    }
}

/// Writes a log the way versions before segment files did: entries in the
/// `raft_log` tree under big-endian indexes, vote and purge point in
/// `raft_meta`.
fn old_format_db(path: &Path, entries: &[Entry], vote: Vote<NodeId>, purged: LogId) -> sled::Db {
    let db = sled::Config::new().path(path).open().unwrap();
    let log = db.open_tree("raft_log").unwrap();
    for e in entries {
        log.insert(e.log_id.index.to_be_bytes(), codec::encode(e).unwrap()).unwrap();
    }
    let meta = db.open_tree("raft_meta").unwrap();
    meta.insert("vote", codec::encode(&vote).unwrap()).unwrap();
    meta.insert("last_purged", codec::encode(&purged).unwrap()).unwrap();
    meta.insert("committed", codec::encode(&Some(entries.last().unwrap().log_id)).unwrap()).unwrap();
    db
}

#[tokio::test]
async fn a_log_kept_in_sled_by_an_earlier_version_is_moved_into_segments() {
    let dir = tempfile::TempDir::new().unwrap();
    // Entries 3..=5 are a purge's leftovers: only 6.. counts.
    let entries: Vec<Entry> = (3..40).map(|i| entry(1 + i / 10, i)).collect();
    let vote = Vote::new_committed(4, 2);
    let purged = entries[2].log_id;
    let db = old_format_db(&dir.path().join("db"), &entries, vote, purged);

    let mut log = LogStore::open_in(dir.path(), &db).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(purged));
    assert_eq!(state.last_log_id, Some(entries.last().unwrap().log_id));
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries[3..].to_vec());
    let names = db.tree_names();
    assert!(!names.iter().any(|n| n.as_ref() == b"raft_log" || n.as_ref() == b"raft_meta"), "old trees dropped");
    drop(log);

    // Opening again finds the segment log and leaves it alone.
    let mut log = LogStore::open_in(dir.path(), &db).unwrap();
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries[3..].to_vec());
}

#[tokio::test]
async fn an_interrupted_migration_starts_over() {
    let dir = tempfile::TempDir::new().unwrap();
    let entries: Vec<Entry> = (0..10).map(|i| entry(1, i)).collect();
    let db = old_format_db(&dir.path().join("db"), &entries, Vote::new(1, 1), entries[0].log_id);
    // A staging directory with half a copy in it, as a crash leaves it.
    let staging = dir.path().join("raft-log.migrating");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("00000000000000000001.log"), b"half").unwrap();

    let mut log = LogStore::open_in(dir.path(), &db).unwrap();
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), entries[1..].to_vec());
    assert!(!staging.exists());
}

#[tokio::test]
async fn truncate_and_purge_keep_the_log_state_right_across_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("raft-log");
    {
        let log = LogStore::open_with(&path, 512).unwrap();
        let mut state = log.state();
        let records: Vec<(u64, Vec<u8>)> =
            (0..30).map(|i| entry(1 + i / 20, i)).map(|e| (e.log_id.index, codec::encode(&e).unwrap())).collect();
        state.log.append(&records).unwrap();
        state.last_log_id = Some(entry(2, 29).log_id);
    }
    let mut log = LogStore::open_with(&path, 512).unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(entry(2, 29).log_id));
    log.truncate(entry(1, 25).log_id).await.unwrap();
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(entry(2, 24).log_id));
    log.purge(entry(1, 10).log_id).await.unwrap();
    drop(log);

    let mut log = LogStore::open_with(&path, 512).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(entry(1, 10).log_id));
    assert_eq!(state.last_log_id, Some(entry(2, 24).log_id));
    let read = log.try_get_log_entries(..).await.unwrap();
    assert_eq!(read.first().map(|e| e.log_id.index), Some(11));
    assert_eq!(read.len(), 14);
}
