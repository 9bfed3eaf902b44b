//! Key layout of the applied state, all in one sled tree so that one
//! `sled::Batch` (atomic) can change any part of it.
//!
//! | prefix | key                         | value                  |
//! |--------|-----------------------------|------------------------|
//! | `m:`   | a name                      | state-machine metadata |
//! | `r:`   | room name                   | `RoomMeta`             |
//! | `g:`   | room name                   | last generation of a deleted room |
//! | `e`    | room id (BE u64), offset (BE u64) | `StoredEvent`    |
//! | `x`    | room id (BE u64)            | deleted room whose events are still being removed |
//! | `v:`   | KV key                      | `KvEntry`              |
//! | `w:`   | expiry (BE u64), KV key     | () — keys by expiry    |
//! | `i:`   | room id (BE u64), event id  | `DedupEntry`           |
//! | `j:`   | timestamp (BE u64), room id, event id | () — dedup entries by age |

pub(crate) const NEXT_ROOM_ID: &[u8] = b"m:next_room_id";
pub(crate) const ROOM_PREFIX: &[u8] = b"r:";
pub(crate) const GENERATION_PREFIX: &[u8] = b"g:";
pub(crate) const TOMBSTONE_PREFIX: &[u8] = b"x";

pub(crate) fn room(name: &str) -> Vec<u8> {
    [ROOM_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn generation(name: &str) -> Vec<u8> {
    [GENERATION_PREFIX, name.as_bytes()].concat()
}

pub(crate) fn event(room_id: u64, offset: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'e';
    key[1..9].copy_from_slice(&room_id.to_be_bytes());
    key[9..].copy_from_slice(&offset.to_be_bytes());
    key
}

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

/// The offset part of an event key.
pub(crate) fn event_offset(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(9..17)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The room id of a tombstone key.
pub(crate) fn tombstone_room(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
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
