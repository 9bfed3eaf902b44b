//! The log's small durable state: the vote and the purge point, in one file
//! (`raft-log/meta`) replaced atomically on every change.
//!
//! Both change rarely (an election, a snapshot), and both must be on disk
//! before openraft acts on them: a vote forgotten after a crash lets a node
//! vote twice in one term; a purge point forgotten after its segments are
//! gone leaves a hole at the head of the log.

use std::path::Path;

use openraft::Vote;
use serde::{Deserialize, Serialize};

use super::segments::LogError;
use super::{LogId, NodeId};
use crate::{codec, durable};

const FILE: &str = "meta";

/// The vote and the last purged log id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The last vote this node cast or accepted.
    pub vote: Option<Vote<NodeId>>,
    /// Everything up to this log id is purged.
    pub last_purged: Option<LogId>,
}

impl Meta {
    /// Reads the meta file in `dir`; a log that has none has voted for
    /// nobody and purged nothing.
    pub fn read(dir: &Path) -> Result<Meta, LogError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
            Err(source) => return Err(LogError::Io { path, source }),
        };
        let corrupt = |why: &str| LogError::Corrupt(format!("{}: {why}", path.display()));
        let (crc, body) = bytes.split_first_chunk::<4>().ok_or_else(|| corrupt("shorter than its checksum"))?;
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err(corrupt("checksum mismatch"));
        }
        codec::decode(body).map_err(|e| corrupt(&e.to_string()))
    }

    /// Replaces the meta file in `dir` with `self`, durably, before
    /// returning.
    pub fn write(&self, dir: &Path) -> Result<(), LogError> {
        let path = dir.join(FILE);
        let body = codec::encode(self).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let mut bytes = crc32fast::hash(&body).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        durable::replace_file(&path, &bytes).map_err(|source| LogError::Io { path, source })
    }
}
