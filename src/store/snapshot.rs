//! Snapshot files: a header frame (the caller's description of the
//! snapshot), then the whole applied state as length-prefixed key/value
//! records, written and read as a stream, never held in memory.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{Store, StoreError};
use crate::durable;

/// Records per sled batch while loading: bounds memory during install.
const LOAD_BATCH: usize = 4096;

/// Writes `header` and every record of `store` to `path`, and syncs it.
pub fn dump(store: &Store, header: &[u8], path: &Path) -> Result<u64, StoreError> {
    let file = std::fs::File::create(path)?;
    let mut out = BufWriter::new(file);
    write_frame(&mut out, header)?;
    let mut records = 0u64;
    for item in store.tree().iter() {
        let (key, value) = item?;
        write_frame(&mut out, &key)?;
        write_frame(&mut out, &value)?;
        records += 1;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    durable::sync_data(&file)?;
    Ok(records)
}

/// Replaces the whole content of `store` with the records in `path`.
/// Readers wait meanwhile.
///
/// Neither atomic nor durable: the caller marks the install as in progress
/// before calling, checkpoints the store after, and repeats the install
/// after a crash in between.
pub fn load(store: &Store, path: &Path) -> Result<u64, StoreError> {
    let _replacing = store.replacing();
    let tree = store.tree();
    tree.clear()?;
    let mut input = BufReader::new(std::fs::File::open(path)?);
    read_frame(&mut input)?;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let mut records = 0u64;
    while let Some(key) = read_frame(&mut input)? {
        let value = read_frame(&mut input)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "snapshot ends after a key"))?;
        batch.insert(key, value);
        pending += 1;
        records += 1;
        if pending == LOAD_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    tree.apply_batch(batch)?;
    Ok(records)
}

/// The header frame of the snapshot file at `path`.
pub fn read_header(path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut input = BufReader::new(std::fs::File::open(path)?);
    let header = read_frame(&mut input)?;
    Ok(header.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "empty snapshot file"))?)
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("record over 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}
