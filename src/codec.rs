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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NewEvent, Request};

    #[test]
    fn a_command_round_trips() {
        let event = NewEvent {
            room: "r".into(),
            event_type: "t".into(),
            data: "{\"a\":1}".into(),
            metadata: None,
            id: "i".into(),
            dedup: true,
        };
        let command = Command {
            timestamp_ms: 7,
            dedup_window_ms: 9,
            requests: vec![Request::Publish { events: vec![event], create_missing: false }, Request::Expire],
        };
        let bytes = encode(&command).unwrap();
        assert_eq!(decode::<Command>(&bytes).unwrap(), command);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_an_error_not_a_panic() {
        let bytes = encode(&Command { timestamp_ms: 1, dedup_window_ms: 2, requests: vec![Request::Expire] }).unwrap();
        assert!(decode::<Command>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode::<Command>(&[0xff; 3]).is_err());
    }
}
