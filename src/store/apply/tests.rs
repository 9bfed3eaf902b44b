use super::*;
use crate::command::Command;

fn store() -> (tempfile::TempDir, Store) {
    Store::scratch()
}

fn command(timestamp_ms: u64, requests: Vec<Request>) -> Command {
    Command { timestamp_ms, dedup_window_ms: 120_000, requests }
}

fn publish(room: &str, n: usize) -> Request {
    let events = (0..n)
        .map(|i| NewEvent {
            room: room.into(),
            event_type: "e".into(),
            data: i.to_string(),
            metadata: None,
            id: format!("id-{i}"),
            dedup: false,
        })
        .collect();
    Request::Publish { events, create_missing: false }
}

/// Applies `groups` of commands, one apply batch per group.
fn apply(groups: &[Vec<Command>]) -> RoomInfo {
    apply_in(groups, "aged")
}

/// Applies `groups` of commands, one apply batch per group, and describes
/// `room` after.
fn apply_in(groups: &[Vec<Command>], room: &str) -> RoomInfo {
    let (_dir, store) = store();
    let mut applier = Applier::load(store.clone()).unwrap();
    for group in groups {
        let mut batch = applier.begin();
        for command in group {
            applier.apply(&mut batch, command).unwrap();
        }
        applier.commit(batch).unwrap();
    }
    store.room(room).unwrap().unwrap().info
}

#[test]
fn age_retention_does_not_depend_on_how_entries_are_batched() {
    let config = RoomConfig { max_events: None, max_age_secs: Some(1) };
    let create = command(0, vec![Request::CreateRoom { room: "aged".into(), config, if_absent: false }]);
    let early = command(1_000, vec![publish("aged", 2)]);
    let late = command(5_000, vec![publish("aged", 1)]);
    let together = apply(&[vec![create.clone(), early.clone(), late.clone()]]);
    let apart = apply(&[vec![create], vec![early], vec![late]]);
    assert_eq!((together.min_offset, together.next_offset), (2, 3));
    assert_eq!((apart.min_offset, apart.next_offset), (2, 3));
}

#[test]
fn an_expired_dedup_record_stays_expired_for_the_rest_of_the_batch() {
    let publish_once = |at: u64| Command {
        timestamp_ms: at,
        dedup_window_ms: 1_000,
        requests: vec![Request::Publish {
            events: vec![NewEvent {
                room: "r".into(),
                event_type: "e".into(),
                data: "1".into(),
                metadata: None,
                id: "same".into(),
                dedup: true,
            }],
            create_missing: true,
        }],
    };
    let expire = Command { timestamp_ms: 5_000, dedup_window_ms: 1_000, requests: vec![Request::Expire] };
    // A new leader whose clock is behind stamps the retry inside the window
    // again; the record is gone, so it appends. The same log, applied as a
    // follower that lags (Expire and the retry in one apply call) and as one
    // that does not, must end the same.
    let lagging = apply_in(&[vec![publish_once(0)], vec![expire.clone(), publish_once(600)]], "r");
    let prompt = apply_in(&[vec![publish_once(0)], vec![expire], vec![publish_once(600)]], "r");
    assert_eq!(prompt.next_offset, 2, "the expired record is gone: the retry appends");
    assert_eq!(lagging.next_offset, 2, "the dedup record expired in this batch is not found again");
}

#[test]
fn trim_ages_out_a_room_nobody_publishes_to() {
    let config = RoomConfig { max_events: None, max_age_secs: Some(1) };
    let create = command(0, vec![Request::CreateRoom { room: "aged".into(), config, if_absent: false }]);
    let early = command(1_000, vec![publish("aged", 3)]);
    let too_soon = command(1_500, vec![Request::Trim]);
    let later = command(5_000, vec![Request::Trim]);
    let (_dir, store) = store();
    let mut applier = Applier::load(store.clone()).unwrap();
    let mut replies = Vec::new();
    for c in [create, early, too_soon, later] {
        let mut batch = applier.begin();
        replies.push(applier.apply(&mut batch, &c).unwrap());
        applier.commit(batch).unwrap();
    }
    assert_eq!(replies[2], vec![Reply::Trimmed { removed: 0 }]);
    assert_eq!(replies[3], vec![Reply::Trimmed { removed: 3 }]);
    let info = store.room("aged").unwrap().unwrap().info;
    assert_eq!((info.min_offset, info.next_offset), (3, 3));
}

#[test]
fn expiry_is_due_exactly_when_an_expire_would_remove_something() {
    let (_dir, store) = store();
    let mut applier = Applier::load(store.clone()).unwrap();
    let mut run = |c: Command| {
        let mut batch = applier.begin();
        let replies = applier.apply(&mut batch, &c).unwrap();
        applier.commit(batch).unwrap();
        replies
    };
    assert!(!store.expiry_due(u64::MAX, 0).unwrap(), "an empty store has nothing to expire");

    let set = Request::KvSet { key: "k".into(), value: "v".into(), ttl_ms: Some(1_000), nx: false };
    run(command(10_000, vec![set]));
    assert!(!store.expiry_due(10_999, 120_000).unwrap());
    assert!(store.expiry_due(11_000, 120_000).unwrap());
    let replies = run(command(11_000, vec![Request::Expire]));
    assert_eq!(replies, vec![Reply::Expired { removed: 1 }]);
    assert!(!store.expiry_due(11_000, 120_000).unwrap(), "nothing left once expired");

    let mut deduplicated = publish("r", 1);
    if let Request::Publish { events, create_missing } = &mut deduplicated {
        events[0].dedup = true;
        *create_missing = true;
    }
    run(Command { timestamp_ms: 20_000, dedup_window_ms: 500, requests: vec![deduplicated] });
    assert!(!store.expiry_due(20_499, 500).unwrap());
    assert!(store.expiry_due(20_500, 500).unwrap());
    let replies = run(Command { timestamp_ms: 20_500, dedup_window_ms: 500, requests: vec![Request::Expire] });
    assert_eq!(replies, vec![Reply::Expired { removed: 1 }]);
    assert!(!store.expiry_due(u64::MAX / 2, 500).unwrap());
}

/// `n` events of about 1 KiB each for `room`, numbered from `from`.
fn publish_big(room: &str, from: usize, n: usize) -> Request {
    let events = (from..from + n)
        .map(|i| NewEvent {
            room: room.into(),
            event_type: "e".into(),
            data: format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(1000)),
            metadata: None,
            id: format!("id-{i}"),
            dedup: false,
        })
        .collect();
    Request::Publish { events, create_missing: false }
}

/// The `e` records of a room: (first offset, count) each.
fn records(store: &Store, room_id: u64) -> Vec<(u64, u64)> {
    let keys = store.tree().scan_prefix(keys::room_events(room_id)).keys();
    keys.map(|k| keys::events_span(&k.unwrap()).unwrap()).collect()
}

#[test]
fn packed_events_read_back_like_single_ones_and_retention_drops_whole_chunks() {
    let (_dir, store) = store();
    let mut applier = Applier::load(store.clone()).unwrap();
    let mut run = |c: Command| {
        let mut batch = applier.begin();
        let replies = applier.apply(&mut batch, &c).unwrap();
        applier.commit(batch).unwrap();
        replies
    };
    let open = RoomConfig::default();
    let capped = RoomConfig { max_events: Some(10), max_age_secs: None };
    run(command(1, vec![Request::CreateRoom { room: "open".into(), config: open, if_absent: false }]));
    run(command(1, vec![Request::CreateRoom { room: "capped".into(), config: capped, if_absent: false }]));
    for room in ["open", "capped"] {
        run(command(2, vec![publish_big(room, 0, 5)]));
    }
    assert!(!store.packed().unwrap());
    assert_eq!(run(command(3, vec![Request::PackEvents])), vec![Reply::Packed]);
    assert!(store.packed().unwrap());
    for room in ["open", "capped"] {
        run(command(4, vec![publish_big(room, 5, 30), publish_big(room, 35, 3)]));
    }

    let open = store.room("open").unwrap().unwrap();
    let spans = records(&store, open.id);
    // Five single records, then chunks of the 30 and of the 3: contiguous.
    assert_eq!(&spans[..5], &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]);
    assert!(spans.len() < 5 + 33 / 2, "the 33 packed events take a few records: {spans:?}");
    assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0), "{spans:?}");
    assert_eq!(spans.last().map(|(first, n)| first + n), Some(38));
    let everything = store.read_range(open.id, 0, 38, 1_000, |_| true).unwrap();
    let numbers: Vec<u64> = everything.events.iter().map(|e| e.offset).collect();
    assert_eq!(numbers, (0..38).collect::<Vec<_>>());
    for record in &everything.events {
        assert!(record.event.data.starts_with(&format!("{{\"i\":{},", record.offset)), "offset {}", record.offset);
    }
    // A page that starts inside a chunk and ends inside another.
    let middle = store.read_range(open.id, 7, 38, 4, |_| true).unwrap();
    assert_eq!(middle.events.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
    assert_eq!(middle.next_offset, 11);

    // Retention keeps the last 10 of 38: records wholly below 28 are gone,
    // one straddling it stays, and reads start at 28.
    let capped = store.room("capped").unwrap().unwrap();
    assert_eq!((capped.info.min_offset, capped.info.next_offset), (28, 38));
    let kept = records(&store, capped.id);
    assert!(kept.iter().all(|(first, n)| first + n > 28), "{kept:?}");
    assert!(kept.first().is_some_and(|(first, _)| *first <= 28), "{kept:?}");
    let page = store.read(&capped, 0, 38, 1_000, |_| true).unwrap();
    assert_eq!(page.events.iter().map(|e| e.offset).collect::<Vec<_>>(), (28..38).collect::<Vec<_>>());
}
