//! The redo record: how one apply is written as plain sled inserts and is
//! still all or nothing after a crash.
//!
//! Why not one `sled::Batch`: every `apply_batch` seals sled's write buffer
//! (twice) so that a crash cannot split the batch, and every seal wakes all
//! of sled's writer threads. Measured against sled 0.34.7 with Synap's
//! settings, applies 1 ms apart as a node sees them: ~245 µs of process CPU
//! per `apply_batch` against ~75 µs for the same writes as plain inserts,
//! which only seal a buffer once it is full (docs/performance.md).
//!
//! Plain inserts are not atomic: sled recovers a prefix of its log, so a
//! crash can keep the first writes of an apply and lose the rest. So before
//! an apply's writes, the store inserts all of them, encoded as one value,
//! as the record under [`KEY`] in a tree of its own (one insert: atomic).
//! sled's log is one sequence for all trees of a database, so what a crash
//! keeps is either none of the apply's writes or the record followed by a
//! prefix of them. Opening the store replays the record: it sets every key
//! it names to the value the apply gave it, which is right on top of any
//! such prefix and harmless on top of the whole apply. Each apply's record
//! replaces the previous one, whose writes all come before it in the log.
//!
//! A record is replayed only over the state it was written for: it keeps
//! what the marker key (`last_applied`) held before the apply, and opening
//! replays it only if the marker still holds that or what the apply wrote.
//! Anything else means the state moved on without the record: a build from
//! before records ran on this data directory (a downgrade) and applied
//! more, and a stale record must not undo that.
//!
//! A publish's new event chunks are not in the record: they are inserted
//! before it, past their room's head, where no reader looks; a crash
//! before the record leaves only them, the apply is repeated whole, and
//! `Applier::load` removes what is past a head meanwhile (see
//! `Writes::insert_past_head`).
//!
//! An apply whose record would exceed [`MAX_BYTES`] is written as one
//! `apply_batch` after the record is removed: a batch that large costs
//! little per event already, and keeping the record small keeps it in
//! sled's log rather than in a blob file of its own (see `database`).

use sled::IVec;

/// The record's key in the redo tree.
pub const KEY: &[u8] = b"apply";

/// The name of the redo tree in the state's database.
pub const TREE: &[u8] = b"redo";

/// Largest record written; larger applies go as one batch.
pub const MAX_BYTES: usize = 32 * 1024;

/// Format of the record, first byte, so a later version can tell.
const FORMAT: u8 = 1;
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

/// One write of an apply: `None` removes the key.
pub type Write = (IVec, Option<IVec>);

/// The record of `writes`, made over a state whose marker key holds
/// `marker` (see the module documentation), or `None` if it would exceed
/// [`MAX_BYTES`].
pub fn encode(marker: Option<&[u8]>, writes: &[Write]) -> Option<Vec<u8>> {
    let optional = |bytes: Option<&[u8]>| 5 + bytes.map_or(0, <[u8]>::len);
    let len = 1
        + optional(marker)
        + writes.iter().map(|(key, value)| 4 + key.len() + optional(value.as_deref())).sum::<usize>();
    if len > MAX_BYTES {
        return None;
    }
    let mut record = Vec::with_capacity(len);
    record.push(FORMAT);
    put_optional(&mut record, marker);
    for (key, value) in writes {
        put_sized(&mut record, key);
        put_optional(&mut record, value.as_deref());
    }
    Some(record)
}

/// Appends `bytes` after its length, which fits in u32: the whole record
/// is below [`MAX_BYTES`].
fn put_sized(record: &mut Vec<u8>, bytes: &[u8]) {
    record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    record.extend_from_slice(bytes);
}

fn put_optional(record: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            record.push(PRESENT);
            put_sized(record, bytes);
        }
        None => record.push(ABSENT),
    }
}

/// The record did not decode: written by a later version, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("the redo record of the last apply is unreadable ({0})")]
pub struct Malformed(&'static str);

/// A record read back.
pub struct Record<'a> {
    /// What the marker key held before the apply.
    marker: Option<&'a [u8]>,
    /// The apply's writes, in order (`None` removes the key).
    writes: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Reads a record made by [`encode`].
pub fn decode(record: &[u8]) -> Result<Record<'_>, Malformed> {
    let (&format, mut rest) = record.split_first().ok_or(Malformed("empty"))?;
    if format != FORMAT {
        return Err(Malformed("unknown format"));
    }
    let marker = take_optional(&mut rest)?;
    let mut writes = Vec::new();
    while !rest.is_empty() {
        let key = take_sized(&mut rest)?;
        writes.push((key, take_optional(&mut rest)?));
    }
    Ok(Record { marker, writes })
}

impl Record<'_> {
    /// Whether the record belongs over a state whose `marker_key` holds
    /// `now`: what it held before the apply, or what the apply wrote.
    pub fn belongs_over(&self, marker_key: &[u8], now: Option<&[u8]>) -> bool {
        let written = self.writes.iter().rev().find(|(key, _)| *key == marker_key).map(|(_, value)| *value);
        now == self.marker || written.is_some_and(|written| now == written)
    }

    /// The writes as one batch (the last write of a key wins, as when they
    /// are made in order).
    pub fn batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in &self.writes {
            match value {
                Some(value) => batch.insert(*key, *value),
                None => batch.remove(*key),
            }
        }
        batch
    }
}

/// Takes an optional length-prefixed byte string off the front of `rest`.
fn take_optional<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, Malformed> {
    let (&tag, after) = rest.split_first().ok_or(Malformed("cut short"))?;
    *rest = after;
    match tag {
        PRESENT => take_sized(rest).map(Some),
        ABSENT => Ok(None),
        _ => Err(Malformed("unknown tag")),
    }
}

/// Takes a length-prefixed byte string off the front of `rest`.
fn take_sized<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let (len, after) = rest.split_first_chunk::<4>().ok_or(Malformed("cut short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if after.len() < len {
        return Err(Malformed("cut short"));
    }
    let (bytes, after) = after.split_at(len);
    *rest = after;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes() -> Vec<Write> {
        vec![
            (IVec::from(b"a"), Some(IVec::from(vec![7u8; 300]))),
            (IVec::from(b"b"), None),
            (IVec::from(b""), Some(IVec::from(b""))),
        ]
    }

    /// Applies `batch` to a tree holding `b` and lists what it holds then.
    fn applied(batch: sled::Batch) -> Vec<(IVec, IVec)> {
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        db.insert(b"b", b"there before").expect("insert");
        db.apply_batch(batch).expect("apply");
        db.iter().collect::<Result<_, _>>().expect("iterate")
    }

    #[test]
    fn a_record_replays_its_writes() {
        let record = encode(None, &writes()).expect("small enough");
        let expected = vec![(IVec::from(b""), IVec::from(b"")), (IVec::from(b"a"), IVec::from(vec![7u8; 300]))];
        assert_eq!(applied(decode(&record).expect("decodes").batch()), expected);
    }

    #[test]
    fn a_record_belongs_over_the_marker_before_or_after_its_apply_only() {
        let mut writes = writes();
        writes.push((IVec::from(b"marker"), Some(IVec::from(b"7"))));
        let record = encode(Some(b"6"), &writes).expect("small enough");
        let record = decode(&record).expect("decodes");
        assert!(record.belongs_over(b"marker", Some(b"6")), "a crash before the marker was written");
        assert!(record.belongs_over(b"marker", Some(b"7")), "a crash after it");
        assert!(!record.belongs_over(b"marker", Some(b"8")), "the state moved on");
        assert!(!record.belongs_over(b"marker", None));
        let unmarked = encode(None, &[]).expect("small enough");
        assert!(decode(&unmarked).expect("decodes").belongs_over(b"marker", None));
    }

    #[test]
    fn writes_past_the_limit_get_no_record() {
        let big = vec![(IVec::from(b"k"), Some(IVec::from(vec![0u8; MAX_BYTES])))];
        assert!(encode(None, &big).is_none());
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let record = encode(None, &writes()).expect("small enough");
        // One byte short: the last write's value length is cut.
        assert!(decode(&record[..record.len() - 1]).is_err());
        // Inside the first key.
        assert!(decode(&record[..4]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[FORMAT + 1, ABSENT]).is_err());
        assert!(decode(&[FORMAT, 9]).is_err());
        assert!(decode(&[FORMAT, ABSENT, 1, 0, 0, 0, b'k', 9]).is_err());
        assert!(decode(&[FORMAT, ABSENT, 1, 0, 0, 0, b'k', PRESENT, 200, 0, 0, 0, 1]).is_err());
    }
}
