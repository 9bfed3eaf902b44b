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
const REMOVE: u8 = 0;
const INSERT: u8 = 1;

/// One write of an apply: `None` removes the key.
pub type Write = (IVec, Option<IVec>);

/// The record of `writes`, or `None` if it would exceed [`MAX_BYTES`].
pub fn encode(writes: &[Write]) -> Option<Vec<u8>> {
    let len =
        1 + writes.iter().map(|(key, value)| 9 + key.len() + value.as_ref().map_or(0, |v| v.len())).sum::<usize>();
    if len > MAX_BYTES {
        return None;
    }
    let mut record = Vec::with_capacity(len);
    record.push(FORMAT);
    for (key, value) in writes {
        // Both fit in u32: the whole record is below MAX_BYTES.
        record.extend_from_slice(&(key.len() as u32).to_le_bytes());
        record.extend_from_slice(key);
        match value {
            Some(value) => {
                record.push(INSERT);
                record.extend_from_slice(&(value.len() as u32).to_le_bytes());
                record.extend_from_slice(value);
            }
            None => record.push(REMOVE),
        }
    }
    Some(record)
}

/// The record did not decode: written by a later version, or damaged.
#[derive(Debug, thiserror::Error)]
#[error("the redo record of the last apply is unreadable ({0})")]
pub struct Malformed(&'static str);

/// The writes of a record made by [`encode`], as one batch.
pub fn decode(record: &[u8]) -> Result<sled::Batch, Malformed> {
    let (&format, mut rest) = record.split_first().ok_or(Malformed("empty"))?;
    if format != FORMAT {
        return Err(Malformed("unknown format"));
    }
    let mut batch = sled::Batch::default();
    while !rest.is_empty() {
        let key = take_sized(&mut rest)?;
        let (&tag, after) = rest.split_first().ok_or(Malformed("cut short"))?;
        rest = after;
        match tag {
            INSERT => batch.insert(key, take_sized(&mut rest)?),
            REMOVE => batch.remove(key),
            _ => return Err(Malformed("unknown write")),
        }
    }
    Ok(batch)
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

    /// Applies `batch` to an empty tree and lists what it holds.
    fn applied(batch: sled::Batch) -> Vec<(IVec, IVec)> {
        let db = sled::Config::new().temporary(true).open().expect("temporary sled");
        db.insert(b"b", b"there before").expect("insert");
        db.apply_batch(batch).expect("apply");
        db.iter().collect::<Result<_, _>>().expect("iterate")
    }

    #[test]
    fn a_record_replays_its_writes() {
        let record = encode(&writes()).expect("small enough");
        let expected = vec![(IVec::from(b""), IVec::from(b"")), (IVec::from(b"a"), IVec::from(vec![7u8; 300]))];
        assert_eq!(applied(decode(&record).expect("decodes")), expected);
    }

    #[test]
    fn writes_past_the_limit_get_no_record() {
        let big = vec![(IVec::from(b"k"), Some(IVec::from(vec![0u8; MAX_BYTES])))];
        assert!(encode(&big).is_none());
    }

    #[test]
    fn a_damaged_record_is_refused() {
        let record = encode(&writes()).expect("small enough");
        // One byte short: the last write's value length is cut.
        assert!(decode(&record[..record.len() - 1]).is_err());
        // Inside the first key.
        assert!(decode(&record[..3]).is_err());
        assert!(decode(&[]).is_err());
        assert!(decode(&[FORMAT + 1]).is_err());
        assert!(decode(&[FORMAT, 1, 0, 0, 0, b'k', 9]).is_err());
        assert!(decode(&[FORMAT, 1, 0, 0, 0, b'k', INSERT, 200, 0, 0, 0, 1]).is_err());
    }
}
