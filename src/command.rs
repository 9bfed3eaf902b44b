//! The replicated vocabulary: what a Raft entry carries and what applying it
//! answers.
//!
//! A [`Command`] is one Raft entry. The proposer packs the requests of many
//! concurrent clients into one command (group commit), so a command holds a
//! list of [`Request`]s and its apply answers one [`Reply`] per request, in
//! order. Everything here is plain data: validation happens in `api`, offsets
//! and timestamps are decided in `store` at apply time.

use serde::{Deserialize, Serialize};

/// The version of this vocabulary. A leader proposes a request that an
/// older version lacks only once every member says it speaks this version
/// (`/health`), so that a cluster in the middle of a rolling upgrade never
/// commits an entry some member cannot apply.
///
/// 1: rooms, publish, KV, `Expire`. 2: `Trim`. 3: `Identify`, `Register`.
/// 4: `PackEvents` (and the chunked event format it switches on, which
/// older versions cannot read). 5: durable consumers (`PutConsumer`,
/// `DeleteConsumer`, `Lease`, `Ack`, `Nak`) and `RaiseProtocol`.
/// 6: `UpdateRoom`.
pub const PROTOCOL: u32 = 6;

/// The protocol that changing a room's settings needs.
pub const ROOM_SETTINGS_PROTOCOL: u32 = 6;

/// The protocol that durable consumers need: the API refuses consumer
/// requests until every member speaks it.
pub const CONSUMERS_PROTOCOL: u32 = 5;

/// Most payload bytes one request may carry (a batch's events together):
/// a request is never split across entries, and an entry must reach a
/// follower, and be synced there, within one heartbeat interval.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Retention and behaviour settings of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    /// Keep at most this many events (oldest trimmed first).
    pub max_events: Option<u64>,
    /// Drop events older than this many seconds.
    pub max_age_secs: Option<u64>,
}

/// Where a new durable consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerStart {
    /// The lowest retained offset.
    Earliest,
    /// The room's next offset: only events published after creation.
    Latest,
    /// This offset (below the retained range counts the gap as missed).
    Offset(u64),
}

/// Settings of a durable consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerConfig {
    /// Where it starts (used when it is created only).
    pub start: ConsumerStart,
    /// Event-type filter text (`crate::filter`), if any: other events are
    /// skipped, never delivered.
    pub types: Option<String>,
    /// How long a delivered message stays leased to its fetch.
    pub ack_wait_ms: u64,
    /// Deliveries of one message before it is dead-lettered (0: no limit).
    pub max_deliver: u32,
    /// Room that messages out of deliveries are published to; without
    /// one they are dropped (and counted).
    pub dead_letter: Option<String>,
    /// Most messages delivered and not yet acked at once.
    pub max_ack_pending: u32,
}

/// One event as a client submitted it, before it has an offset.
///
/// `data` and `metadata` are kept as the JSON text the client sent: they are
/// validated once at the edge and then never parsed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Target room.
    pub room: String,
    /// Event type, e.g. `user.registered`.
    pub event_type: String,
    /// JSON text of the payload.
    pub data: String,
    /// JSON text of a metadata object, if any.
    pub metadata: Option<String>,
    /// The client's id for the event, or one the receiving node generated.
    pub id: String,
    /// Whether `id` came from the client: only those are remembered for
    /// deduplication (a generated id never repeats).
    pub dedup: bool,
}

impl NewEvent {
    /// Bytes of payload and metadata: what the request limits count.
    pub fn payload_bytes(&self) -> usize {
        self.data.len() + self.metadata.as_ref().map_or(0, String::len)
    }
}

/// One client operation inside a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Create a room; with `if_absent` an existing room is not an error.
    CreateRoom {
        /// Room name.
        room: String,
        /// Its settings (ignored when the room already exists).
        config: RoomConfig,
        /// Get-or-create instead of create.
        if_absent: bool,
    },
    /// Delete a room and all its events.
    DeleteRoom {
        /// Room name.
        room: String,
    },
    /// Append events, all or none.
    Publish {
        /// The events, in the order they get offsets.
        events: Vec<NewEvent>,
        /// Create rooms that do not exist yet instead of rejecting.
        create_missing: bool,
    },
    /// Set a key, optionally with a time to live and only if absent.
    KvSet {
        /// The key.
        key: String,
        /// The value, stored as given.
        value: String,
        /// Time to live in milliseconds, counted from the command's timestamp.
        ttl_ms: Option<u64>,
        /// Only set if the key is absent or expired.
        nx: bool,
    },
    /// Delete a key.
    KvDelete {
        /// The key.
        key: String,
    },
    /// Drop expired keys and deduplication entries older than the window
    /// (proposed periodically by the leader).
    Expire,
    /// Drop events that have passed their room's age limit, in every room
    /// (proposed periodically by the leader; protocol 2).
    Trim,
    /// Name the cluster, once: later ones keep the first name (protocol 3).
    Identify {
        /// A new unique id.
        cluster: String,
    },
    /// Record which incarnation of its data directory a member runs, if
    /// none is recorded yet; the record goes when the node leaves the
    /// membership (protocol 3).
    Register {
        /// The member.
        node: u64,
        /// Its data directory's id.
        incarnation: String,
    },
    /// From this entry on, the events one request appends to a room are
    /// stored together, as chunks, instead of one record each (protocol
    /// 4). Proposed once, when every member speaks protocol 4; events
    /// stored before stay as they are.
    PackEvents,
    /// Record in the state that every member speaks protocol `to` (at
    /// least): from then on requests of that protocol are proposed even
    /// while a member is down, and versions before it must not run again
    /// (protocol 5).
    RaiseProtocol {
        /// The protocol every member reported.
        to: u32,
    },
    /// Create a durable consumer of a room, or change the settings of an
    /// existing one (its position stays) (protocol 5).
    PutConsumer {
        /// The room.
        room: String,
        /// The consumer's name, unique within the room.
        name: String,
        /// Its settings.
        config: ConsumerConfig,
        /// Create the room if it does not exist.
        create_missing: bool,
    },
    /// Delete a durable consumer and its position (protocol 5).
    DeleteConsumer {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
    },
    /// Lease up to `max` messages to one fetch: expired leases first
    /// (redeliveries, oldest offset first), then new matching events; and
    /// dead-letter the expired messages out of deliveries (protocol 5).
    Lease {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
        /// Most messages leased (0: only dead-letter what is due).
        max: u32,
    },
    /// Mark messages done (protocol 5).
    Ack {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
        /// Offsets of the messages.
        offsets: Vec<u64>,
    },
    /// End the leases of messages early: deliverable again after `delay_ms`
    /// (protocol 5).
    Nak {
        /// The room.
        room: String,
        /// The consumer.
        name: String,
        /// Offsets of the messages.
        offsets: Vec<u64>,
        /// How long until they may be delivered again.
        delay_ms: u64,
    },
    /// Change a room's retention settings; the events the new limits
    /// exclude go at once (protocol 6).
    UpdateRoom {
        /// The room.
        room: String,
        /// What changes.
        change: RoomChange,
    },
}

/// A change of a room's settings: `None` keeps a setting, `Some(None)`
/// removes its limit, `Some(Some(n))` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomChange {
    /// Most events kept.
    pub max_events: Option<Option<u64>>,
    /// Oldest events kept, in seconds.
    pub max_age_secs: Option<Option<u64>>,
    /// Most payload bytes (`data` + `metadata`) kept.
    pub max_bytes: Option<Option<u64>>,
}

impl Request {
    /// Whether this request needs durable consumers (protocol 5).
    pub fn is_consumer_request(&self) -> bool {
        matches!(
            self,
            Request::PutConsumer { .. }
                | Request::DeleteConsumer { .. }
                | Request::Lease { .. }
                | Request::Ack { .. }
                | Request::Nak { .. }
        )
    }
}

/// One Raft entry's payload: requests of one or more clients, and the
/// cluster time at which they were proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Unix milliseconds, read from the proposing leader's clock. Every node
    /// stamps events with this value, never with its own clock.
    pub timestamp_ms: u64,
    /// How long a publish id is remembered for deduplication, in
    /// milliseconds (the proposing leader's setting, so that every node
    /// decides alike).
    pub dedup_window_ms: u64,
    /// The requests, applied in order.
    pub requests: Vec<Request>,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command({} requests @{})", self.requests.len(), self.timestamp_ms)
    }
}

/// Public description of a room, as `stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room name.
    pub name: String,
    /// How many times a room of this name has been created.
    pub generation: u64,
    /// Offset the next event will get.
    pub next_offset: u64,
    /// Lowest offset still retained.
    pub min_offset: u64,
    /// Its settings.
    pub config: RoomConfig,
    /// Unix milliseconds of creation (cluster time).
    pub created_at: u64,
    /// Unix milliseconds of the last event (cluster time), 0 if none.
    pub last_event_at: u64,
    /// Events ever published to it.
    pub published_total: u64,
    /// Sum of `data` + `metadata` bytes ever published.
    pub bytes_total: u64,
}

/// Where one published event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Room name.
    pub room: String,
    /// Its offset in the room.
    pub offset: u64,
    /// Cluster time stamped on it.
    pub timestamp: u64,
    /// True when an earlier publish with the same id was found instead.
    pub duplicate: bool,
}

/// Why the state machine refused a request. Refusal changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// `CreateRoom` without `if_absent` on an existing room.
    #[error("room '{0}' already exists")]
    RoomExists(String),
    /// A request named a room that does not exist.
    #[error("room '{0}' does not exist")]
    RoomNotFound(String),
    /// A request named a consumer that does not exist: (room, name).
    #[error("room '{0}' has no consumer '{1}'")]
    ConsumerNotFound(String, String),
}

/// One message leased by [`Request::Lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The event's offset.
    pub offset: u64,
    /// How many times it has been delivered, this time included.
    pub delivery: u32,
}

/// Offsets a consumer passed without delivering: trimmed by retention
/// before they were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First offset missed.
    pub from: u64,
    /// One past the last offset missed.
    pub to: u64,
}

/// The outcome of one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to `CreateRoom`.
    Room {
        /// False when the room already existed (get-or-create).
        created: bool,
        /// The room as it is after the request.
        info: RoomInfo,
    },
    /// Answer to `DeleteRoom`.
    Deleted,
    /// Answer to `Publish`: one entry per event, in order.
    Published(Vec<Published>),
    /// Answer to `KvSet`: whether the value was written (false only with
    /// `nx` on a live key).
    KvSet {
        /// Written or not.
        written: bool,
    },
    /// Answer to `KvDelete`: whether a live key was removed.
    KvDeleted {
        /// Removed or not.
        existed: bool,
    },
    /// Answer to `Expire`: how many records were dropped.
    Expired {
        /// Keys and dedup entries removed.
        removed: u64,
    },
    /// The request was refused and changed nothing.
    Rejected(Rejection),
    /// Answer to `Trim`: how many events were dropped.
    Trimmed {
        /// Events removed over all rooms.
        removed: u64,
    },
    /// Answer to `Identify`: the cluster's id (the first one proposed).
    Identified {
        /// The id.
        cluster: String,
    },
    /// Answer to `PackEvents`.
    Packed,
    /// Answer to `Register`: whether the incarnation was recorded.
    Registered {
        /// False if the node is not a member or has another incarnation
        /// recorded.
        accepted: bool,
    },
    /// Answer to `RaiseProtocol`: the protocol the state records now.
    Protocol {
        /// The recorded protocol.
        now: u32,
    },
    /// Answer to `PutConsumer`.
    Consumer {
        /// False when it existed (its settings were replaced).
        created: bool,
    },
    /// Answer to `DeleteConsumer`.
    ConsumerDeleted,
    /// Answer to `Lease`: the messages leased, in the order to process
    /// them, and what retention took before it could be delivered.
    Leased {
        /// The leases.
        messages: Vec<Lease>,
        /// Offsets missed since the last lease.
        missed: Vec<Gap>,
    },
    /// Answer to `Ack` and `Nak`: how many of the offsets were pending.
    Settled {
        /// Offsets that were pending (the others were done already or
        /// never delivered).
        count: u64,
    },
}
