//! The power-cut disk itself, and each restart rule a power cut could
//! break, checked on it: the Raft log comes back as a synced prefix, the
//! vote survives, the applied state comes back consistent, and a node never
//! loses a publish it acknowledged.
//!
//! These tests mount FUSE file systems: they need `/dev/fuse` and root
//! (CI has both).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::Vote;
use synap::raft::log_store::segments::SegmentLog;
use synap::raft::log_store::LogStore;
use synap::store::{database, Database, Store};
use synap_chaos::powercut::PowerDisk;
use synap_chaos::process::{free_port, Process};
use tempfile::TempDir;

/// A mounted power-cut disk in a temporary directory.
fn disk() -> (TempDir, PowerDisk) {
    let dir = TempDir::new().expect("temp dir");
    let disk = PowerDisk::mount(dir.path()).expect("mount the power-cut disk (needs /dev/fuse and root)");
    (dir, disk)
}

#[test]
fn the_disk_keeps_what_was_synced_through_the_kernel() {
    let (_dir, disk) = disk();
    let root = disk.path();
    let synced = root.join("synced");
    let mut file = std::fs::File::create(&synced).unwrap();
    file.write_all(b"kept").unwrap();
    file.sync_data().unwrap();
    file.write_all(b" and lost").unwrap();
    std::fs::File::create(root.join("never-synced-dir-entry")).unwrap().sync_all().unwrap();
    std::fs::File::open(root).unwrap().sync_all().unwrap();
    std::fs::File::create(root.join("created-after-the-dir-sync")).unwrap().sync_all().unwrap();
    std::fs::rename(&synced, root.join("renamed")).unwrap();
    drop(file);

    disk.cut(&[]);

    assert_eq!(std::fs::read(&synced).unwrap(), b"kept", "rename undone, unsynced append gone");
    assert!(root.join("never-synced-dir-entry").exists(), "its directory was synced after it");
    assert!(!root.join("created-after-the-dir-sync").exists());
    assert!(!root.join("renamed").exists());
}

fn records(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, format!("entry {i}").into_bytes())).collect()
}

#[test]
fn the_log_comes_back_as_a_prefix_holding_everything_synced() {
    let (_dir, disk) = disk();
    let path = disk.path().join("raft-log");
    synap::durable::create_dir_all(&path).unwrap();
    {
        let (mut log, _) = SegmentLog::open(&path, 300, None).unwrap();
        // Several segments: each is synced before the next one starts.
        let file = log.append(&records(0..40)).unwrap();
        synap::durable::sync_data(&file).unwrap();
        // Not synced, but the segments it fills are synced as it rolls to
        // the next: only the last one's tail is at risk.
        log.append(&records(40..60)).unwrap();
    }
    disk.cut(&[]);
    let (log, recovery) = SegmentLog::open(&path, 300, None).unwrap();
    let kept = log.next_index();
    assert!((40..60).contains(&kept), "everything synced, not the unsynced tail: kept {kept}");
    let read = synap::raft::log_store::segments::read_chunks(log.locate(0..100)).unwrap();
    assert_eq!(read, records(0..kept), "a dense prefix");
    assert_eq!(recovery.torn_bytes, 0, "the lost tail was never synced, so nothing torn remains");
}

#[tokio::test]
async fn a_saved_vote_survives_a_cut() {
    let (_dir, disk) = disk();
    let path = disk.path().join("raft-log");
    let vote = Vote::new(7, 3);
    {
        let mut log = LogStore::open(&path).unwrap();
        log.save_vote(&Vote::new(6, 1)).await.unwrap();
        log.save_vote(&vote).await.unwrap();
    }
    disk.cut(&[]);
    let mut log = LogStore::open(&path).unwrap();
    // Without it this node could vote for someone else in term 7.
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
}

#[test]
fn the_applied_state_comes_back_whole_at_its_last_checkpoint() {
    let (_dir, disk) = disk();
    let path = disk.path().join(database::DIR);
    {
        let db = Arc::new(Database::open(&path, 8 << 20, false).unwrap());
        let store = Store::open(db.clone()).unwrap();
        let tree = db.sled().open_tree("state").unwrap();
        // Each batch writes a counter and that many keys, atomically.
        let write = |n: u64| {
            let mut batch = sled::Batch::default();
            batch.insert("counter", &n.to_be_bytes());
            for k in 0..n {
                batch.insert(format!("key-{n}-{k}").as_bytes(), vec![1u8; 100]);
            }
            tree.apply_batch(batch).unwrap();
        };
        for n in 1..=50 {
            write(n);
        }
        store.checkpoint().unwrap();
        for n in 51..=80 {
            write(n);
        }
        // Into the page cache, not synced: what the cut must drop or keep whole.
        db.sled().flush().unwrap();
    }
    disk.cut(&[]);
    let db = Database::open(&path, 8 << 20, false).unwrap();
    let tree = db.sled().open_tree("state").unwrap();
    let counter = u64::from_be_bytes(tree.get("counter").unwrap().unwrap().as_ref().try_into().unwrap());
    assert!(counter >= 50, "the checkpoint at 50 is durable, found {counter}");
    for n in 1..=counter {
        assert!(tree.get(format!("key-{n}-0")).unwrap().is_some(), "batch {n} is whole");
    }
    assert!(tree.get(format!("key-{}-0", counter + 1)).unwrap().is_none(), "nothing past the counter");
}

/// The synap binary of this build (`cargo test --workspace` builds it).
fn synap_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let binary = dir.join("synap");
    assert!(binary.exists(), "{} is missing: run `cargo build` (or `cargo test --workspace`) first", binary.display());
    binary
}

/// One node on a power-cut disk.
struct Node {
    process: Process,
    url: String,
}

impl Node {
    fn new(disk: &PowerDisk, logs: &Path, extra: &[&str]) -> Self {
        let port = free_port().expect("free port");
        let mut args: Vec<String> =
            ["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"].into_iter().map(String::from).collect();
        args.push(disk.path().join("node").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = Process::new(&synap_binary(), args, logs.join("node.log"));
        Self { process, url: format!("http://127.0.0.1:{port}") }
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{}/ready", self.url)).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "node not ready within 30 s; log:\n{}", self.process.log_tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes `n` events one by one, each acknowledged before the next;
/// returns their offsets.
async fn publish(url: &str, n: usize) -> Vec<u64> {
    let client = synap::client::Client::new(url);
    let mut offsets = Vec::new();
    for i in 0..n {
        let data = serde_json::json!({ "i": i });
        let at = client.publish("cut", "e", &data, None, None).await.expect("acknowledged publish");
        offsets.push(at.offset);
    }
    offsets
}

/// Publishes, cuts the power right after the last acknowledgement, and
/// counts how many acknowledged events the restarted node still has.
async fn acknowledged_after_cut(extra: &[&str]) -> (usize, usize) {
    let (_dir, disk) = disk();
    let logs = TempDir::new().unwrap();
    let mut node = Node::new(&disk, logs.path(), extra);
    node.process.start().unwrap();
    node.wait_ready().await;
    let offsets = publish(&node.url, 200).await;
    let pid = node.process.kill().expect("the node was running");
    disk.cut(&[pid]);
    node.process.start().unwrap();
    node.wait_ready().await;
    let events = synap::client::Client::new(&node.url).history_all("cut").await.unwrap_or_default();
    let kept = offsets
        .iter()
        .enumerate()
        .filter(|(i, offset)| events.iter().any(|e| e.offset == **offset && e.data["i"] == *i))
        .count();
    (kept, offsets.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_publish_survives_a_power_cut() {
    let (kept, acknowledged) = acknowledged_after_cut(&[]).await;
    assert_eq!(kept, acknowledged, "every acknowledged event at its offset after the cut");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_fsync_a_power_cut_loses_acknowledged_publishes() {
    // The same run with the syncs skipped: proves the test above can fail.
    let (kept, acknowledged) = acknowledged_after_cut(&["--unsafe-no-fsync"]).await;
    assert!(kept < acknowledged, "skipping fsync must lose acknowledged events ({kept} of {acknowledged} kept)");
}
