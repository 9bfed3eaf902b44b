//! Durable consumers as the applied state keeps them: a position in a
//! room, the messages delivered and not yet done, and counters. The state
//! machine changes them (`apply::consumers`); every node holds the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::ConsumerConfig;

/// A message delivered and not yet done (acked, dead-lettered or
/// dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Deliveries so far.
    pub deliveries: u32,
    /// Cluster time (Unix ms) at which its lease ends and it may be
    /// delivered again.
    pub lease_until: u64,
}

/// One durable consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerRecord {
    /// Its name, unique within the room.
    pub name: String,
    /// Its settings.
    pub config: ConsumerConfig,
    /// Cluster time of creation.
    pub created_at: u64,
    /// The next offset not yet looked at: every offset below it was
    /// delivered, skipped by the filter, or missed.
    pub cursor: u64,
    /// Messages delivered and not yet done, by offset.
    pub pending: BTreeMap<u64, Pending>,
    /// Deliveries ever made (redeliveries included).
    pub delivered: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages published to the dead-letter room.
    pub dead_lettered: u64,
    /// Messages out of deliveries without a dead-letter room.
    pub dropped: u64,
    /// Events retention removed before they were done.
    pub missed: u64,
}

impl ConsumerRecord {
    /// Every offset below this one is done (acked, skipped, missed or
    /// dead-lettered).
    pub fn ack_floor(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.cursor)
    }

    /// When the earliest lease ends (cluster time), if any message is
    /// pending.
    pub fn next_lease_end(&self) -> Option<u64> {
        self.pending.values().map(|p| p.lease_until).min()
    }
}
