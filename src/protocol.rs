//! Types that both sides of the public API use: the server renders them,
//! the client ([`crate::client`]) reads them back.

use serde::{Deserialize, Serialize};

use crate::command::{ConsumerConfig, ConsumerStart, RoomInfo};
use crate::store::ConsumerRecord;

/// Most bytes either end of a WebSocket asks its socket for in one read.
/// The WebSocket library zeroes that much of its buffer before every read,
/// also before the many that find nothing (a subscriber's task polls its
/// socket at every event it sends): at the library's default of 128 KiB
/// that zeroing was 13% of a follower's samples under fan-out, and it cost
/// the subscribers of `synap bench fanout` more still (fan-out p50 12 ms
/// -> 4 ms). A larger frame still arrives whole, over more reads.
pub const WS_READ_BUFFER: usize = 8 * 1024;

/// Statistics of one room, as `GET /stream/{room}/stats` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    /// Room name.
    pub room: String,
    /// How many times a room of this name was created.
    pub generation: u64,
    /// Events currently retained.
    pub event_count: u64,
    /// Lowest retained offset.
    pub min_offset: u64,
    /// Offset of the next event.
    pub next_offset: u64,
    /// Retention by count, if set.
    pub max_events: Option<u64>,
    /// Retention by age in seconds, if set.
    pub max_age_secs: Option<u64>,
    /// Retention by payload bytes, if set.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Creation time (Unix ms, cluster time).
    pub created_at: u64,
    /// Time of the last event (Unix ms, cluster time), 0 if none.
    pub last_event_at: u64,
    /// Events ever published.
    pub published_total: u64,
    /// Payload bytes ever published.
    pub bytes_total: u64,
    /// Live subscribers of the room on the answering node.
    #[serde(default)]
    pub subscribers: usize,
    /// Names of the room's durable consumers.
    #[serde(default)]
    pub consumers: Vec<String>,
}

impl RoomStats {
    /// The statistics of a room as the state machine describes it, with
    /// `subscribers` on this node.
    pub fn new(info: RoomInfo, subscribers: usize, consumers: Vec<String>) -> Self {
        Self {
            room: info.name,
            generation: info.generation,
            event_count: info.next_offset - info.min_offset,
            min_offset: info.min_offset,
            next_offset: info.next_offset,
            max_events: info.config.max_events,
            max_age_secs: info.config.max_age_secs,
            max_bytes: None,
            created_at: info.created_at,
            last_event_at: info.last_event_at,
            published_total: info.published_total,
            bytes_total: info.bytes_total,
            subscribers,
            consumers,
        }
    }
}

/// Where a durable consumer starts, as JSON writes it: `"earliest"`,
/// `"latest"` or an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartSpec {
    /// From this offset.
    Offset(u64),
    /// `"earliest"` or `"latest"`.
    Named(NamedStart),
}

/// The named starts of a durable consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedStart {
    /// The lowest retained offset.
    Earliest,
    /// Only events published after creation.
    Latest,
}

impl From<StartSpec> for ConsumerStart {
    fn from(spec: StartSpec) -> Self {
        match spec {
            StartSpec::Offset(offset) => ConsumerStart::Offset(offset),
            StartSpec::Named(NamedStart::Earliest) => ConsumerStart::Earliest,
            StartSpec::Named(NamedStart::Latest) => ConsumerStart::Latest,
        }
    }
}

impl From<ConsumerStart> for StartSpec {
    fn from(start: ConsumerStart) -> Self {
        match start {
            ConsumerStart::Offset(offset) => StartSpec::Offset(offset),
            ConsumerStart::Earliest => StartSpec::Named(NamedStart::Earliest),
            ConsumerStart::Latest => StartSpec::Named(NamedStart::Latest),
        }
    }
}

/// A durable consumer's settings, as JSON writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSettings {
    /// Where it started.
    pub start: StartSpec,
    /// Event-type filter, if any.
    pub types: Option<String>,
    /// How long a delivered message stays leased to its fetch (ms).
    pub ack_wait_ms: u64,
    /// Deliveries before a message is dead-lettered (0: unlimited).
    pub max_deliver: u32,
    /// Where messages out of deliveries go, if anywhere.
    pub dead_letter: Option<String>,
    /// Most messages delivered and not acked at once.
    pub max_ack_pending: u32,
}

impl From<ConsumerConfig> for ConsumerSettings {
    fn from(c: ConsumerConfig) -> Self {
        Self {
            start: c.start.into(),
            types: c.types,
            ack_wait_ms: c.ack_wait_ms,
            max_deliver: c.max_deliver,
            dead_letter: c.dead_letter,
            max_ack_pending: c.max_ack_pending,
        }
    }
}

/// A durable consumer's state, as `GET /stream/{room}/consumers/{name}`
/// answers it (the same on every node at the same log index, but for
/// `lag`, which counts against the answering node's room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// The room.
    pub room: String,
    /// The consumer's name.
    pub name: String,
    /// Its settings.
    pub config: ConsumerSettings,
    /// Creation time (Unix ms, cluster time).
    pub created_at: u64,
    /// The next offset it has not looked at yet.
    pub next_offset: u64,
    /// Every offset below it is done.
    pub ack_floor: u64,
    /// Messages delivered and not yet acked.
    pub pending: u64,
    /// Deliveries ever made, redeliveries included.
    pub delivered: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    /// Messages acked.
    pub acked: u64,
    /// Messages moved to the dead-letter room.
    pub dead_lettered: u64,
    /// Messages out of deliveries without a dead-letter room.
    pub dropped: u64,
    /// Events retention removed before they were done.
    pub missed: u64,
    /// Matching events not yet acked, dead-lettered or dropped.
    pub lag: u64,
}

impl ConsumerInfo {
    /// The description of `record` of `room`, with `unread` matching events
    /// past its cursor.
    pub fn new(room: &str, record: ConsumerRecord, unread: u64) -> Self {
        let ack_floor = record.ack_floor();
        let pending = record.pending.len() as u64;
        Self {
            room: room.to_owned(),
            name: record.name,
            config: record.config.into(),
            created_at: record.created_at,
            next_offset: record.cursor,
            ack_floor,
            pending,
            delivered: record.delivered,
            redelivered: record.redelivered,
            acked: record.acked,
            dead_lettered: record.dead_lettered,
            dropped: record.dropped,
            missed: record.missed,
            lag: pending + unread,
        }
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only events published after subscribing (from the first event if the
    /// room does not exist yet).
    Live,
    /// From this offset.
    Offset(u64),
    /// This many events back from the end.
    FromEnd(u64),
}

impl StartAt {
    /// The start a `from_offset` query value asks for: none means live, a
    /// negative one counts back from the end.
    pub fn from_query(from_offset: Option<i64>) -> Self {
        match from_offset {
            None => StartAt::Live,
            Some(back) if back < 0 => StartAt::FromEnd(back.unsigned_abs()),
            Some(from) => StartAt::Offset(from as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RoomConfig;

    #[test]
    fn stats_count_the_retained_range() {
        let info = RoomInfo {
            name: "orders".into(),
            generation: 2,
            next_offset: 10,
            min_offset: 4,
            config: RoomConfig { max_events: Some(6), max_age_secs: None },
            created_at: 1,
            last_event_at: 2,
            published_total: 10,
            bytes_total: 300,
        };
        let stats = RoomStats::new(info, 3, vec!["email".into()]);
        assert_eq!((stats.event_count, stats.min_offset, stats.next_offset), (6, 4, 10));
        assert_eq!((stats.max_events, stats.subscribers), (Some(6), 3));
    }

    #[test]
    fn a_negative_from_offset_counts_back_from_the_end() {
        assert_eq!(StartAt::from_query(None), StartAt::Live);
        assert_eq!(StartAt::from_query(Some(-5)), StartAt::FromEnd(5));
        assert_eq!(StartAt::from_query(Some(0)), StartAt::Offset(0));
        assert_eq!(StartAt::from_query(Some(i64::MIN)), StartAt::FromEnd(1 << 63));
    }
}
