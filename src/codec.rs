//! The one place that knows how internal types are encoded.
//!
//! Raft entries, votes, state-machine records and the internal RPC bodies are
//! all bincode 1.3. Keeping every call behind these two functions means the
//! format can change in one file.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An encoding or decoding failure of an internal record.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] bincode::Error);

/// Encodes `value` in the internal binary format.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serialize(value)?)
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(bincode::deserialize(bytes)?)
}
