//! Key layout of the applied state, all in one sled tree (`state`). Beside
//! it, the `redo` tree holds only the record of the last apply (see
//! `store::redo`).
//!
//! | prefix | key                         | value                  |
//! |--------|-----------------------------|------------------------|
//! | `m:`   | a name                      | state-machine metadata |
//! | `r:`   | room name                   | `RoomMeta`             |
//! | `g:`   | room name                   | last generation of a deleted room |
//! | `e`    | room id (BE u64), offset (BE u64) | one `StoredEvent` (before packing) |
//! | `e`    | room id (BE u64), first offset (BE u64), count (BE u32) | a chunk: `count` `StoredEvent`s from `first` on (packed) |
//! | `x`    | room id (BE u64)            | deleted room whose events are still being removed |
//! | `v:`   | KV key                      | `KvEntry`              |
//! | `w:`   | expiry (BE u64), KV key     | () — keys by expiry    |
//! | `i:`   | room id (BE u64), event id  | `DedupEntry`           |
//! | `j:`   | timestamp (BE u64), room id, event id | () — dedup entries by age |
//! | `n:`   | node id (BE u64)            | the node's incarnation (its data directory's id) |
//! | `c:`   | room id (BE u64), consumer name | `ConsumerRecord` |
//! | `b:`   | room id (BE u64)            | `ByteLimit`: a room's retention by bytes |

/// `m:` The next internal room id.
pub(crate) const NEXT_ROOM_ID: &[u8] = b"m:next_room_id";
/// `m:` The log id of the last applied entry (the state machine's).
pub(crate) const LAST_APPLIED: &[u8] = b"m:last_applied";
/// `m:` The last applied membership (the state machine's).
pub(crate) const MEMBERSHIP: &[u8] = b"m:membership";
/// `m:` The latest command timestamp applied.
pub(crate) const CLOCK: &[u8] = b"m:clock";
/// `m:` Present once events are stored in chunks (protocol 4).
pub(crate) const PACKED: &[u8] = b"m:packed";
/// `m:` The protocol every member was last seen to speak (`RaiseProtocol`).
pub(crate) const PROTOCOL: &[u8] = b"m:protocol";
/// `m:` The cluster's id, set once.
pub(crate) const CLUSTER: &[u8] = b"m:cluster";
pub(crate) const INCARNATION_PREFIX: &[u8] = b"n:";

/// `n:` node id (BE u64) → the incarnation the cluster knows it by.
pub(crate) fn incarnation(node: u64) -> Vec<u8> {
    [INCARNATION_PREFIX, &node.to_be_bytes()].concat()
}
pub(crate) const ROOM_PREFIX: &[u8] = b"r:";
pub(crate) const GENERATION_PREFIX: &[u8] = b"g:";
pub(crate) const TOMBSTONE_PREFIX: &[u8] = b"x";

pub(crate) fn room(name: &str) -> Vec<u8> {
    [ROOM_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn generation(name: &str) -> Vec<u8> {
    [GENERATION_PREFIX, name.as_bytes()].concat()
}

/// `e` key of one event stored alone (the format before packing), and the
/// exclusive upper bound of a room's events below `offset` in both formats.
pub(crate) fn event(room_id: u64, offset: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'e';
    key[1..9].copy_from_slice(&room_id.to_be_bytes());
    key[9..].copy_from_slice(&offset.to_be_bytes());
    key
}

/// `e` key of a chunk: `count` consecutive events from `first`. It sorts
/// after any single-event key of the same offset, and before the next
/// offset's keys, so both formats interleave in offset order.
pub(crate) fn chunk(room_id: u64, first: u64, count: u32) -> [u8; 21] {
    let mut key = [0u8; 21];
    key[..17].copy_from_slice(&event(room_id, first));
    key[17..].copy_from_slice(&count.to_be_bytes());
    key
}

/// The first offset and the number of events under an `e` key of either
/// format.
pub(crate) fn events_span(key: &[u8]) -> Option<(u64, u64)> {
    let first = u64::from_be_bytes(key.get(9..17)?.try_into().ok()?);
    match key.len() {
        17 => Some((first, 1)),
        21 => Some((first, u64::from(u32::from_be_bytes(key[17..21].try_into().ok()?)))),
        _ => None,
    }
}

/// The exclusive upper bound of every `e` key.
pub(crate) const EVENTS_END: &[u8] = b"f";

pub(crate) fn room_events(room_id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = b'e';
    key[1..].copy_from_slice(&room_id.to_be_bytes());
    key
}

pub(crate) fn tombstone(room_id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = TOMBSTONE_PREFIX[0];
    key[1..].copy_from_slice(&room_id.to_be_bytes());
    key
}

/// The room id of a tombstone key.
pub(crate) fn tombstone_room(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub(crate) const CONSUMER_PREFIX: &[u8] = b"c:";
pub(crate) const BYTE_LIMIT_PREFIX: &[u8] = b"b:";

/// `b:` room id (BE u64) → the room's `ByteLimit`, if it has one.
pub(crate) fn byte_limit(room_id: u64) -> Vec<u8> {
    [BYTE_LIMIT_PREFIX, &room_id.to_be_bytes()].concat()
}

/// `c:` room id (BE u64) → the room's consumers.
pub(crate) fn room_consumers(room_id: u64) -> Vec<u8> {
    [CONSUMER_PREFIX, &room_id.to_be_bytes()].concat()
}

/// `c:` room id (BE u64) name → `ConsumerRecord`.
pub(crate) fn consumer(room_id: u64, name: &str) -> Vec<u8> {
    [CONSUMER_PREFIX, &room_id.to_be_bytes(), name.as_bytes()].concat()
}

pub(crate) const KV_PREFIX: &[u8] = b"v:";
pub(crate) const KV_EXPIRY_PREFIX: &[u8] = b"w:";
pub(crate) const DEDUP_EXPIRY_PREFIX: &[u8] = b"j:";

/// `v:` key → `KvEntry`.
pub(crate) fn kv(key: &str) -> Vec<u8> {
    [KV_PREFIX, key.as_bytes()].concat()
}

/// `w:` expiry (BE u64) key → (): keys by expiry time, for purging.
pub(crate) fn kv_expiry(expires_at: u64, key: &str) -> Vec<u8> {
    [KV_EXPIRY_PREFIX, &expires_at.to_be_bytes(), key.as_bytes()].concat()
}

/// `i:` room id (BE u64) id → `DedupEntry`: where a client id landed.
pub(crate) fn dedup(room_id: u64, id: &str) -> Vec<u8> {
    [b"i:".as_slice(), &room_id.to_be_bytes(), id.as_bytes()].concat()
}

/// `j:` timestamp (BE u64) room id (BE u64) id → (): dedup entries by age.
pub(crate) fn dedup_expiry(timestamp: u64, room_id: u64, id: &str) -> Vec<u8> {
    [DEDUP_EXPIRY_PREFIX, &timestamp.to_be_bytes(), &room_id.to_be_bytes(), id.as_bytes()].concat()
}

/// Splits an expiry-index key (`w:` or `j:`) into its time and the rest.
pub(crate) fn split_expiry(key: &[u8]) -> Option<(u64, &[u8])> {
    let time: [u8; 8] = key.get(2..10)?.try_into().ok()?;
    Some((u64::from_be_bytes(time), &key[10..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_room_then_offset() {
        let mut keys = vec![event(2, 0), event(1, 256), event(1, 1), event(1, u64::MAX)];
        keys.sort();
        assert_eq!(keys, vec![event(1, 1), event(1, 256), event(1, u64::MAX), event(2, 0)]);
        assert!(event(1, 5).starts_with(&room_events(1)));
        assert!(!event(2, 5).starts_with(&room_events(1)));
    }

    #[test]
    fn chunks_sort_among_single_events_by_offset() {
        let mut keys = [chunk(1, 5, 3).to_vec(), event(1, 8).to_vec(), event(1, 4).to_vec(), chunk(1, 9, 1).to_vec()];
        keys.sort();
        let spans: Vec<_> = keys.iter().map(|k| events_span(k).unwrap()).collect();
        assert_eq!(spans, vec![(4, 1), (5, 3), (8, 1), (9, 1)]);
        // A chunk starting at `end` is past the range `..event(room, end)`.
        assert!(chunk(1, 9, 1).as_slice() > event(1, 9).as_slice());
        assert!(chunk(1, 8, 7).as_slice() < event(1, 9).as_slice());
        assert!(chunk(1, 5, u32::MAX).as_slice() < event(1, 6).as_slice());
    }

    #[test]
    fn offsets_and_room_ids_read_back_from_their_keys() {
        assert_eq!(events_span(&event(9, 1234)), Some((1234, 1)));
        assert_eq!(events_span(&chunk(9, 1234, 70)), Some((1234, 70)));
        assert_eq!(events_span(b"short"), None);
        assert_eq!(tombstone_room(&tombstone(77)), Some(77));
        assert_eq!(tombstone_room(b"x"), None);
    }

    #[test]
    fn expiry_indexes_sort_by_time_and_split_back() {
        let early = kv_expiry(1_000, "zebra");
        let late = kv_expiry(2_000, "apple");
        assert!(early < late, "by time first, whatever the key");
        assert_eq!(split_expiry(&late), Some((2_000, b"apple".as_slice())));
        let dedup = dedup_expiry(5, 3, "id-1");
        let (time, rest) = split_expiry(&dedup).unwrap();
        assert_eq!(time, 5);
        assert_eq!(&rest[..8], &3u64.to_be_bytes());
        assert_eq!(&rest[8..], b"id-1");
    }

    #[test]
    fn prefixes_do_not_collide() {
        // Rooms, generations, KV, dedup and metadata live in one tree.
        let samples = [
            room("a"),
            generation("a"),
            kv("a"),
            dedup(1, "a"),
            kv_expiry(1, "a"),
            LAST_APPLIED.to_vec(),
            incarnation(1),
            consumer(1, "a"),
            byte_limit(1),
        ];
        for (i, a) in samples.iter().enumerate() {
            for b in &samples[i + 1..] {
                assert_ne!(a[..2], b[..2], "{a:?} and {b:?} share a prefix");
            }
        }
        assert!([NEXT_ROOM_ID, LAST_APPLIED, MEMBERSHIP, CLOCK, CLUSTER].iter().all(|k| k.starts_with(b"m:")));
        assert!(room("a").starts_with(ROOM_PREFIX));
        assert!(kv_expiry(1, "k").starts_with(KV_EXPIRY_PREFIX));
    }
}
