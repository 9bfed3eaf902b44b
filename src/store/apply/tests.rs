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
