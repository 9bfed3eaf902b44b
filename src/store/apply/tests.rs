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

mod consumers {
    use super::*;
    use crate::command::{ConsumerConfig, ConsumerStart, Gap, Lease};
    use crate::store::ConsumerRecord;

    fn config() -> ConsumerConfig {
        ConsumerConfig {
            start: ConsumerStart::Earliest,
            types: None,
            ack_wait_ms: 1_000,
            max_deliver: 2,
            dead_letter: Some("dead".into()),
            max_ack_pending: 100,
        }
    }

    fn put(room: &str, config: ConsumerConfig) -> Request {
        Request::PutConsumer { room: room.into(), name: "w".into(), config, create_missing: true }
    }

    /// Publishes `n` events, creating the room if needed.
    fn publish_new(room: &str, n: usize) -> Request {
        match publish(room, n) {
            Request::Publish { events, .. } => Request::Publish { events, create_missing: true },
            other => other,
        }
    }

    fn lease(max: u32) -> Request {
        Request::Lease { room: "orders".into(), name: "w".into(), max }
    }

    /// An applier over a scratch store; each `step` is one command in its
    /// own apply batch, and answers its replies.
    struct Machine {
        _dir: tempfile::TempDir,
        store: Store,
        applier: Applier,
    }

    impl Machine {
        fn new() -> Self {
            let (dir, store) = store();
            let applier = Applier::load(store.clone()).unwrap();
            Self { _dir: dir, store, applier }
        }

        fn step(&mut self, at: u64, requests: Vec<Request>) -> Vec<Reply> {
            let mut batch = self.applier.begin();
            let replies = self.applier.apply(&mut batch, &command(at, requests)).unwrap();
            self.applier.commit(batch).unwrap();
            replies
        }

        fn one(&mut self, at: u64, request: Request) -> Reply {
            self.step(at, vec![request]).remove(0)
        }

        fn leased(&mut self, at: u64, max: u32) -> Vec<Lease> {
            match self.one(at, lease(max)) {
                Reply::Leased { messages, .. } => messages,
                other => panic!("expected leases, got {other:?}"),
            }
        }

        fn record(&self) -> ConsumerRecord {
            let room = self.store.room("orders").unwrap().unwrap();
            self.store.consumer(room.id, "w").unwrap().unwrap()
        }
    }

    fn offsets(leases: &[Lease]) -> Vec<(u64, u32)> {
        leases.iter().map(|l| (l.offset, l.delivery)).collect()
    }

    #[test]
    fn leases_are_exclusive_until_they_end_then_redelivered_then_dead_lettered() {
        let mut m = Machine::new();
        m.one(0, put("orders", config()));
        m.one(0, publish_new("orders", 3));
        assert_eq!(offsets(&m.leased(10, 2)), vec![(0, 1), (1, 1)]);
        // Another fetch while those leases run gets the rest only.
        assert_eq!(offsets(&m.leased(20, 5)), vec![(2, 1)]);
        assert_eq!(m.leased(500, 5), vec![]);
        assert_eq!(
            m.one(600, Request::Ack { room: "orders".into(), name: "w".into(), offsets: vec![1, 7] }),
            Reply::Settled { count: 1 }
        );
        // Offset 0's lease ended at 1,010, offset 2's at 1,020.
        assert_eq!(offsets(&m.leased(1_015, 5)), vec![(0, 2)]);
        assert_eq!(offsets(&m.leased(1_030, 5)), vec![(2, 2)]);
        // Out of deliveries (max 2): both go to the dead-letter room.
        assert_eq!(m.leased(3_000, 5), vec![]);
        let record = m.record();
        assert_eq!((record.acked, record.redelivered, record.dead_lettered, record.pending.len()), (1, 2, 2, 0));
        assert_eq!((record.cursor, record.ack_floor()), (3, 3));
        let dead = m.store.room("dead").unwrap().unwrap();
        let page = m.store.read(&dead, 0, dead.info.next_offset, 10, |_| true).unwrap();
        let moved: Vec<(&str, Option<&str>)> =
            page.events.iter().map(|e| (e.event.data.as_str(), e.event.metadata.as_deref())).collect();
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[0].0, "0");
        let metadata: serde_json::Value = serde_json::from_str(moved[0].1.unwrap()).unwrap();
        assert_eq!(metadata["dead_letter_room"], "orders");
        assert_eq!(metadata["dead_letter_offset"], "0");
        assert_eq!(metadata["dead_letter_deliveries"], "2");
    }

    #[test]
    fn a_nak_makes_a_message_deliverable_after_its_delay() {
        let mut m = Machine::new();
        m.one(0, put("orders", ConsumerConfig { max_deliver: 0, ..config() }));
        m.one(0, publish_new("orders", 2));
        assert_eq!(offsets(&m.leased(10, 1)), vec![(0, 1)]);
        let nak = |delay_ms| Request::Nak { room: "orders".into(), name: "w".into(), offsets: vec![0], delay_ms };
        assert_eq!(m.one(20, nak(0)), Reply::Settled { count: 1 });
        // Redeliveries come before new messages.
        assert_eq!(offsets(&m.leased(20, 1)), vec![(0, 2)]);
        m.one(30, Request::Nak { room: "orders".into(), name: "w".into(), offsets: vec![0], delay_ms: 500 });
        // Not before its delay: the new message comes instead.
        assert_eq!(offsets(&m.leased(40, 5)), vec![(1, 1)]);
        assert_eq!(offsets(&m.leased(530, 5)), vec![(0, 3)]);
    }

    #[test]
    fn no_more_than_max_ack_pending_messages_are_out() {
        let mut m = Machine::new();
        m.one(0, put("orders", ConsumerConfig { max_ack_pending: 3, ..config() }));
        m.one(0, publish_new("orders", 10));
        assert_eq!(m.leased(10, 10).len(), 3);
        assert_eq!(m.leased(20, 10).len(), 0);
        m.one(30, Request::Ack { room: "orders".into(), name: "w".into(), offsets: vec![0, 2] });
        assert_eq!(offsets(&m.leased(40, 10)), vec![(3, 1), (4, 1)]);
        assert_eq!(m.record().pending.len(), 3);
    }

    #[test]
    fn a_filter_skips_other_types_and_the_cursor_moves_past_them() {
        let mut m = Machine::new();
        m.one(0, put("orders", ConsumerConfig { types: Some("order.*".into()), ..config() }));
        let events = ["order.created", "user.registered", "order.paid", "user.left", "user.left"]
            .iter()
            .enumerate()
            .map(|(i, t)| NewEvent {
                room: "orders".into(),
                event_type: (*t).into(),
                data: i.to_string(),
                metadata: None,
                id: format!("id-{i}"),
                dedup: false,
            })
            .collect();
        // Published and leased in one apply batch: the lease reads the
        // events the batch has not committed yet.
        let replies = m.step(0, vec![Request::Publish { events, create_missing: true }, lease(1)]);
        match &replies[1] {
            Reply::Leased { messages, .. } => assert_eq!(offsets(messages), vec![(0, 1)]),
            other => panic!("expected a lease, got {other:?}"),
        }
        assert_eq!(m.record().cursor, 1, "stops right after the last message it leased");
        assert_eq!(offsets(&m.leased(10, 5)), vec![(2, 1)]);
        assert_eq!(m.record().cursor, 5, "looked at every event");
    }

    #[test]
    fn events_trimmed_before_delivery_are_reported_as_a_gap() {
        let mut m = Machine::new();
        let config_3 = RoomConfig { max_events: Some(3), max_age_secs: None };
        m.one(0, Request::CreateRoom { room: "orders".into(), config: config_3, if_absent: false });
        m.one(0, put("orders", config()));
        m.one(0, publish_new("orders", 2));
        assert_eq!(offsets(&m.leased(10, 1)), vec![(0, 1)]);
        m.one(20, publish("orders", 4));
        // Offsets 0..3 are gone: 0 was leased, 1 and 2 never delivered.
        match m.one(30, lease(10)) {
            Reply::Leased { messages, missed } => {
                assert_eq!(offsets(&messages), vec![(3, 1), (4, 1), (5, 1)]);
                assert_eq!(missed, vec![Gap { from: 0, to: 3 }]);
            }
            other => panic!("expected leases, got {other:?}"),
        }
        assert_eq!(m.record().missed, 3);
    }

    #[test]
    fn a_second_put_keeps_the_position_and_a_deleted_room_takes_its_consumers() {
        let mut m = Machine::new();
        m.one(0, publish_new("orders", 4));
        let latest = ConsumerConfig { start: ConsumerStart::Latest, ..config() };
        assert_eq!(m.one(0, put("orders", latest)), Reply::Consumer { created: true });
        assert_eq!(m.record().cursor, 4);
        let changed = ConsumerConfig { start: ConsumerStart::Earliest, max_deliver: 9, ..config() };
        assert_eq!(m.one(10, put("orders", changed)), Reply::Consumer { created: false });
        let record = m.record();
        assert_eq!((record.cursor, record.config.max_deliver, record.config.start), (4, 9, ConsumerStart::Latest));
        // Reloaded from disk alike.
        m.applier.reload().unwrap();
        m.one(20, publish("orders", 1));
        assert_eq!(offsets(&m.leased(30, 5)), vec![(4, 1)]);
        m.one(40, Request::DeleteRoom { room: "orders".into() });
        m.one(50, publish_new("orders", 1));
        assert_eq!(m.one(60, lease(1)), Reply::Rejected(Rejection::ConsumerNotFound("orders".into(), "w".into())));
        let room = m.store.room("orders").unwrap().unwrap();
        assert!(m.store.consumers(room.id).unwrap().is_empty());
    }
}

/// A fresh store holding room `r` with 20 events (payloads "0" to "19"),
/// and a way to apply more requests to it, one command per batch.
fn twenty_events() -> (tempfile::TempDir, Store, impl FnMut(Vec<Request>) -> Vec<Reply>) {
    let (dir, store) = store();
    let mut applier = Applier::load(store.clone()).unwrap();
    let mut run = move |requests: Vec<Request>| {
        let mut batch = applier.begin();
        let replies = applier.apply(&mut batch, &command(1_000, requests)).unwrap();
        applier.commit(batch).unwrap();
        replies
    };
    let config = RoomConfig::default();
    run(vec![Request::CreateRoom { room: "r".into(), config, if_absent: false }, publish("r", 20)]);
    (dir, store, run)
}

#[test]
fn changed_settings_apply_to_the_events_already_there() {
    let (_dir, store, mut run) = twenty_events();
    let tighten = RoomChange { max_events: Some(Some(5)), ..RoomChange::default() };
    let replies = run(vec![Request::UpdateRoom { room: "r".into(), change: tighten }]);
    let Reply::Room { info, .. } = &replies[0] else { panic!("{replies:?}") };
    assert_eq!((info.min_offset, info.next_offset, info.config.max_events), (15, 20, Some(5)));
    let meta = store.room("r").unwrap().unwrap();
    let page = store.read(&meta, 0, 20, 100, |_| true).unwrap();
    assert_eq!(page.events.iter().map(|e| e.offset).collect::<Vec<_>>(), (15..20).collect::<Vec<_>>());

    // No limit any more: new events are all kept; what went stays gone.
    let lift = RoomChange { max_events: Some(None), ..RoomChange::default() };
    run(vec![Request::UpdateRoom { room: "r".into(), change: lift }, publish("r", 10)]);
    let info = store.room("r").unwrap().unwrap().info;
    assert_eq!((info.min_offset, info.next_offset, info.config.max_events), (15, 30, None));

    let missing = run(vec![Request::UpdateRoom { room: "nope".into(), change: RoomChange::default() }]);
    assert_eq!(missing, vec![Reply::Rejected(Rejection::RoomNotFound("nope".into()))]);
}

#[test]
fn retention_by_bytes_keeps_the_newest_events_that_fit() {
    // Payloads "0".."9": 1 byte each, then "10".."19": 2 bytes each.
    let (_dir, store, mut run) = twenty_events();
    let limit = RoomChange { max_bytes: Some(Some(7)), ..RoomChange::default() };
    run(vec![Request::UpdateRoom { room: "r".into(), change: limit }]);
    let room = store.room("r").unwrap().unwrap();
    assert_eq!(room.info.min_offset, 17, "three 2-byte events fit in 7 bytes");
    let limit = store.byte_limit(room.id).unwrap().unwrap();
    assert_eq!((limit.max_bytes, limit.retained), (7, 6));

    // New events push the oldest out, in the same apply as a count limit.
    let both = RoomChange { max_events: Some(Some(2)), ..RoomChange::default() };
    run(vec![publish("r", 3), Request::UpdateRoom { room: "r".into(), change: both }]);
    let info = store.room("r").unwrap().unwrap().info;
    assert_eq!((info.min_offset, info.next_offset), (21, 23), "the count limit is the tighter one now");
    assert_eq!(store.byte_limit(room.id).unwrap().unwrap().retained, 2, "what the count limit dropped is counted");

    // One event larger than the limit stays alone; lifting the limit forgets it.
    let tiny = RoomChange { max_events: Some(None), max_bytes: Some(Some(1)), ..RoomChange::default() };
    run(vec![Request::UpdateRoom { room: "r".into(), change: tiny }]);
    let info = store.room("r").unwrap().unwrap().info;
    assert_eq!((info.min_offset, info.next_offset), (22, 23), "the newest event stays");
    let lift = RoomChange { max_bytes: Some(None), ..RoomChange::default() };
    run(vec![Request::UpdateRoom { room: "r".into(), change: lift }]);
    assert_eq!(store.byte_limit(room.id).unwrap(), None);
}

/// A crash can cut an apply after any of the new events it writes ahead
/// of its redo record (`Writes::insert_past_head`). Loading the state
/// must then show it as before the apply, without those records, and
/// the repeat of the apply (which Raft makes) must end where the uncut
/// apply ends. The cut apply creates a room and publishes to an old
/// one, both in chunks (packed), so records are left past an existing
/// head and under a room id not given out yet.
#[test]
fn an_apply_cut_before_its_record_is_undone_at_load_and_repeated_whole() {
    let events = |room: &str, n: usize| NewEvent {
        room: room.into(),
        event_type: "e".into(),
        // ~2 KiB each: a few events per chunk, several chunks per room.
        data: format!("\"{}\"", "x".repeat(2_000 + n)),
        metadata: None,
        id: format!("{room}-{n}"),
        dedup: false,
    };
    let publish_to = |rooms: &[&str], n: usize| Request::Publish {
        events: rooms.iter().flat_map(|room| (0..n).map(move |i| events(room, i))).collect(),
        create_missing: true,
    };
    let before = vec![command(1, vec![Request::PackEvents]), command(2, vec![publish_to(&["old"], 5)])];
    let cut_apply = command(3, vec![publish_to(&["old", "new"], 9)]);
    let contents =
        |store: &Store| -> Vec<(sled::IVec, sled::IVec)> { store.tree().iter().map(|i| i.unwrap()).collect() };
    let apply_all = |applier: &mut Applier, commands: &[Command]| {
        for command in commands {
            let mut batch = applier.begin();
            applier.apply(&mut batch, command).unwrap();
            applier.commit(batch).unwrap();
        }
    };

    let (whole, at_start) = {
        let (_dir, store) = store();
        let mut applier = Applier::load(store.clone()).unwrap();
        apply_all(&mut applier, &before);
        let at_start = contents(&store);
        apply_all(&mut applier, std::slice::from_ref(&cut_apply));
        (contents(&store), at_start)
    };
    for cut in 1.. {
        let (_dir, store) = store();
        let mut applier = Applier::load(store.clone()).unwrap();
        apply_all(&mut applier, &before);
        let mut batch = applier.begin();
        applier.apply(&mut batch, &cut_apply).unwrap();
        let (ahead, _rest) = batch.batch.into_parts();
        let ahead_count = ahead.len();
        assert!(ahead_count > 2, "the apply writes its events ahead of the record, in several chunks");
        if cut > ahead_count {
            break;
        }
        for (key, value) in ahead.into_iter().take(cut) {
            store.tree().insert(key, value.expect("an insert")).unwrap();
        }
        drop(applier);
        // The node starts again: the state as before the apply, then the
        // apply once more.
        let mut applier = Applier::load(store.clone()).unwrap();
        assert_same(&contents(&store), &at_start, &format!("after a crash {cut} inserts into the apply, at load"));
        apply_all(&mut applier, std::slice::from_ref(&cut_apply));
        assert_same(&contents(&store), &whole, &format!("after a crash {cut} inserts into the apply, repeated"));
    }
}

/// Compares two states key by key first, so that a failure names keys
/// instead of printing kilobytes of values.
fn assert_same(state: &[(sled::IVec, sled::IVec)], expected: &[(sled::IVec, sled::IVec)], when: &str) {
    let keys = |s: &[(sled::IVec, sled::IVec)]| s.iter().map(|(k, _)| k.to_vec()).collect::<Vec<_>>();
    assert_eq!(keys(state), keys(expected), "keys {when}");
    assert!(state == expected, "values {when}");
}
