//! Every node must end in the same state from the same log, however its
//! entries were grouped into apply calls (a lagging follower applies many
//! at once, a restart replays in chunks) and wherever it restarted. This
//! generates logs of every request kind, with timestamps that jump back
//! and forth and dedup windows that change, applies each log several ways,
//! and compares the stores byte for byte.

use proptest::prelude::*;

use super::*;
use crate::command::{ConsumerConfig, ConsumerStart, RoomChange};

const ROOMS: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 3] = ["k1", "k2", "k3"];
const IDS: [&str; 4] = ["i1", "i2", "i3", "i4"];

fn new_event() -> impl Strategy<Value = NewEvent> {
    (0..ROOMS.len(), prop::option::of(0..IDS.len()), any::<bool>(), 0u32..1000).prop_map(
        |(room, id, with_metadata, n)| NewEvent {
            room: ROOMS[room].into(),
            // Two types, so that filtered consumers skip some.
            event_type: if n % 2 == 0 { "t".into() } else { "u".into() },
            // Sizes from a few bytes to ~3 KiB, so that packed requests
            // split into several chunks.
            data: format!("\"{}\"", "x".repeat(n as usize * 3)),
            metadata: with_metadata.then(|| format!("{{\"n\":{n}}}")),
            // Without a client id the id is unique and never deduplicated.
            id: id.map_or_else(|| format!("generated-{n}"), |i| IDS[i].to_owned()),
            dedup: id.is_some(),
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (0..ROOMS.len(), prop::option::of(1u64..6), prop::option::of(1u64..4), any::<bool>()).prop_map(
            |(room, max_events, max_age_secs, if_absent)| Request::CreateRoom {
                room: ROOMS[room].into(),
                config: RoomConfig { max_events, max_age_secs },
                if_absent,
            }
        ),
        (0..ROOMS.len()).prop_map(|room| Request::DeleteRoom { room: ROOMS[room].into() }),
        (
            0..ROOMS.len(),
            prop::option::of(prop::option::of(1u64..6)),
            prop::option::of(prop::option::of(1u64..4)),
            prop::option::of(prop::option::of(1u64..40)),
        )
            .prop_map(|(room, max_events, max_age_secs, max_bytes)| Request::UpdateRoom {
                room: ROOMS[room].into(),
                change: RoomChange { max_events, max_age_secs, max_bytes },
            }),
        (prop::collection::vec(new_event(), 1..12), any::<bool>())
            .prop_map(|(events, create_missing)| Request::Publish { events, create_missing }),
        (0..KEYS.len(), 0u32..100, prop::option::of(1u64..3_000), any::<bool>()).prop_map(
            |(key, value, ttl_ms, nx)| {
                Request::KvSet { key: KEYS[key].into(), value: value.to_string(), ttl_ms, nx }
            }
        ),
        (0..KEYS.len()).prop_map(|key| Request::KvDelete { key: KEYS[key].into() }),
        Just(Request::Expire),
        Just(Request::Trim),
        Just(Request::PackEvents),
        (4u32..6).prop_map(|to| Request::RaiseProtocol { to }),
        // Weighted up: a third of the requests, so that leases meet acks,
        // naks, retention and room deletions within one log.
        consumer_request(),
        consumer_request(),
        consumer_request(),
        consumer_request(),
    ]
}

const CONSUMERS: [&str; 2] = ["w1", "w2"];

/// Consumer requests: leases, acks and naks over small offsets, with
/// filters, dead letters and short leases so that redeliveries and dead
/// letters happen within the generated timestamps.
fn consumer_request() -> BoxedStrategy<Request> {
    let room = 0..ROOMS.len();
    let name = 0..CONSUMERS.len();
    let offsets = prop::collection::vec(0u64..20, 1..5);
    prop_oneof![
        (room.clone(), name.clone(), 0u64..4, any::<bool>(), 0u32..3, any::<bool>(), 1u32..5).prop_map(
            |(room, name, start, filtered, max_deliver, dead_letter, max_ack_pending)| Request::PutConsumer {
                room: ROOMS[room].into(),
                name: CONSUMERS[name].into(),
                config: ConsumerConfig {
                    start: match start {
                        0 => ConsumerStart::Earliest,
                        1 => ConsumerStart::Latest,
                        n => ConsumerStart::Offset(n),
                    },
                    types: filtered.then(|| "t".into()),
                    ack_wait_ms: 1_000,
                    max_deliver,
                    dead_letter: dead_letter.then(|| ROOMS[(room + 1) % ROOMS.len()].into()),
                    max_ack_pending,
                },
                create_missing: true,
            }
        ),
        (room.clone(), name.clone()).prop_map(|(room, name)| Request::DeleteConsumer {
            room: ROOMS[room].into(),
            name: CONSUMERS[name].into()
        }),
        (room.clone(), name.clone(), 0u32..4).prop_map(|(room, name, max)| Request::Lease {
            room: ROOMS[room].into(),
            name: CONSUMERS[name].into(),
            max
        }),
        (room.clone(), name.clone(), offsets.clone()).prop_map(|(room, name, offsets)| Request::Ack {
            room: ROOMS[room].into(),
            name: CONSUMERS[name].into(),
            offsets
        }),
        (room, name, offsets, 0u64..2_000).prop_map(|(room, name, offsets, delay_ms)| Request::Nak {
            room: ROOMS[room].into(),
            name: CONSUMERS[name].into(),
            offsets,
            delay_ms
        }),
    ]
    .boxed()
}

fn command() -> impl Strategy<Value = Command> {
    // Timestamps jump back and forth (leaders with different clocks), and
    // leaders may run with different dedup windows.
    (0u64..20_000, prop_oneof![Just(0u64), Just(500), Just(2_000)], prop::collection::vec(request(), 1..4))
        .prop_map(|(timestamp_ms, dedup_window_ms, requests)| Command { timestamp_ms, dedup_window_ms, requests })
}

/// How one node applies the log: where apply calls end, and after which
/// call (if any) it restarts.
#[derive(Debug, Clone)]
struct Schedule {
    cuts: Vec<bool>,
    restart_after: Option<usize>,
}

fn schedule(commands: usize) -> impl Strategy<Value = Schedule> {
    (prop::collection::vec(any::<bool>(), commands), prop::option::of(0..commands.max(1)))
        .prop_map(|(cuts, restart_after)| Schedule { cuts, restart_after })
}

/// Applies `log` as the state machine does (an apply call commits first
/// before a command that needs the committed state) and returns every
/// record of the store.
fn apply_log(log: &[Command], schedule: &Schedule) -> Vec<(sled::IVec, sled::IVec)> {
    let (_dir, store) = Store::scratch();
    let mut applier = Applier::load(store.clone()).expect("load");
    let mut batch = applier.begin();
    let mut batched = 0;
    let mut calls = 0;
    for (i, command) in log.iter().enumerate() {
        if Applier::needs_committed_state(command) && batched > 0 {
            applier.commit(std::mem::replace(&mut batch, applier.begin())).expect("commit");
            batched = 0;
        }
        applier.apply(&mut batch, command).expect("apply");
        batched += 1;
        let last = i + 1 == log.len();
        if schedule.cuts[i] || last {
            applier.commit(std::mem::replace(&mut batch, applier.begin())).expect("commit");
            batched = 0;
            if schedule.restart_after == Some(calls) {
                applier = Applier::load(store.clone()).expect("reload");
                batch = applier.begin();
            }
            calls += 1;
        }
    }
    store.tree().iter().map(|item| item.expect("read")).collect()
}

proptest! {
    // A failing case is kept next to this file and tried first next time.
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_same_log_gives_the_same_state_however_it_is_applied(
        (log, schedules) in prop::collection::vec(command(), 1..30)
            .prop_flat_map(|log| {
                let n = log.len();
                (Just(log), prop::collection::vec(schedule(n), 3))
            })
    ) {
        // The reference: every command in its own apply call.
        let one_by_one = Schedule { cuts: vec![true; log.len()], restart_after: None };
        let reference = apply_log(&log, &one_by_one);
        for schedule in &schedules {
            let state = apply_log(&log, schedule);
            prop_assert_eq!(&state, &reference, "schedule {:?}", schedule);
        }
    }
}
