//! Types that both sides of the public API use: the server renders them,
//! the client ([`crate::client`]) reads them back.

use serde::{Deserialize, Serialize};

use crate::command::RoomInfo;

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
}

impl RoomStats {
    /// The statistics of a room as the state machine describes it, with
    /// `subscribers` on this node.
    pub fn new(info: RoomInfo, subscribers: usize) -> Self {
        Self {
            room: info.name,
            generation: info.generation,
            event_count: info.next_offset - info.min_offset,
            min_offset: info.min_offset,
            next_offset: info.next_offset,
            max_events: info.config.max_events,
            max_age_secs: info.config.max_age_secs,
            created_at: info.created_at,
            last_event_at: info.last_event_at,
            published_total: info.published_total,
            bytes_total: info.bytes_total,
            subscribers,
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
        let stats = RoomStats::new(info, 3);
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
