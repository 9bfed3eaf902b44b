//! Rooms: publishing, reading pages, lifecycle and statistics.

use std::sync::Arc;

use super::{read_point, write, Consistency, ServiceError};
use crate::command::{NewEvent, Published, Rejection, Reply, Request, RoomChange, RoomInfo, ROOM_SETTINGS_PROTOCOL};
use crate::filter::TypeFilter;
use crate::hub::Subscription;
use crate::node::{Node, WriteError};
use crate::protocol::{RoomStats, StartAt};
use crate::store::Page;

/// A read of one page of a room.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// First offset; negative counts back from the end.
    pub from_offset: i64,
    /// Most events (the store clamps it to its maximum).
    pub limit: usize,
    /// Only events whose type passes it.
    pub filter: TypeFilter,
    /// How fresh the read must be.
    pub consistency: Consistency,
}

/// A page and the room as it was when the page was read.
#[derive(Debug, Clone)]
pub struct RoomPage {
    /// The room's description (its `next_offset` bounds the page).
    pub info: RoomInfo,
    /// The events.
    pub page: Page,
}

/// The room operations of one node. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    node: Arc<Node>,
}

impl Rooms {
    /// Room operations through `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Publishes `events` (all or none), in order; each answer says where
    /// its event landed (or where the original of a duplicate id is).
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>, ServiceError> {
        let started = std::time::Instant::now();
        self.create_with_defaults(&events).await?;
        let request = Request::Publish { events, create_missing: self.node.config.auto_create_rooms };
        let answer = match write(&self.node, request).await {
            Ok(Reply::Published(published)) => Ok(published),
            Ok(other) => Err(ServiceError::unexpected("publish", other)),
            Err(e) => Err(e),
        };
        crate::telemetry::published(started.elapsed(), answer.is_ok());
        answer
    }

    /// With default retention settings, creates the missing rooms that
    /// `events` would create (with those settings) before the publish:
    /// the applier creates rooms from the entry alone and cannot know this
    /// node's flags. A room created meanwhile by someone else is kept as
    /// it is.
    async fn create_with_defaults(&self, events: &[NewEvent]) -> Result<(), ServiceError> {
        let config = &self.node.config;
        if !config.auto_create_rooms || !config.room_defaults.any() {
            return Ok(());
        }
        let mut rooms: Vec<&str> = events.iter().map(|e| e.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            if self.node.store.room(room)?.is_none() {
                self.get_or_create(room, RoomChange::default()).await?;
            }
        }
        Ok(())
    }

    /// Publishes one event.
    pub async fn publish_one(&self, event: NewEvent) -> Result<Published, ServiceError> {
        let mut published = self.publish(vec![event]).await?;
        match published.pop() {
            Some(one) if published.is_empty() => Ok(one),
            _ => Err(ServiceError::Unexpected { what: "publish", reply: "not one answer for one event".into() }),
        }
    }

    /// One page of `room`.
    pub async fn read_page(&self, room: &str, request: &PageRequest) -> Result<RoomPage, ServiceError> {
        read_point(&self.node, request.consistency).await?;
        let store = &self.node.store;
        let meta = store.room(room)?.ok_or_else(|| Rejection::RoomNotFound(room.to_owned()))?;
        let next = meta.info.next_offset;
        let from = match request.from_offset {
            back if back < 0 => next.saturating_sub(back.unsigned_abs()),
            from => from as u64,
        };
        let page = store.read(&meta, from, next, request.limit, |t| request.filter.matches(t))?;
        Ok(RoomPage { info: meta.info, page })
    }

    /// Creates `room` with `settings` (absent ones: this node's defaults);
    /// refused if it exists.
    pub async fn create(&self, room: &str, settings: RoomChange) -> Result<RoomInfo, ServiceError> {
        self.create_room(room, settings, false).await.map(|(_, info)| info)
    }

    /// Creates `room` with `settings` (absent ones: this node's defaults)
    /// unless it exists; says whether it did, and how the room is now.
    pub async fn get_or_create(&self, room: &str, settings: RoomChange) -> Result<(bool, RoomInfo), ServiceError> {
        self.create_room(room, settings, true).await
    }

    async fn create_room(
        &self,
        room: &str,
        settings: RoomChange,
        if_absent: bool,
    ) -> Result<(bool, RoomInfo), ServiceError> {
        let (config, max_bytes) = self.node.config.room_defaults.resolve(&settings);
        if max_bytes.is_some() {
            // Checked before the room exists, not between its two entries.
            self.require_room_settings().await?;
        }
        let (created, info) =
            match write(&self.node, Request::CreateRoom { room: room.to_owned(), config, if_absent }).await? {
                Reply::Room { created, info } => (created, info),
                other => return Err(ServiceError::unexpected("create", other)),
            };
        if !created || max_bytes.is_none() {
            return Ok((created, info));
        }
        // A byte limit is a setting of its own (protocol 6), set by the
        // entry right after the creation; nothing published in between
        // escapes it, since it applies to the events already there.
        let limit = RoomChange { max_bytes: Some(max_bytes), ..Default::default() };
        Ok((true, self.update_room(room, limit).await?))
    }

    /// Refuses room settings changes until every member can apply them
    /// (protocol 6).
    async fn require_room_settings(&self) -> Result<(), ServiceError> {
        let recorded = self.node.store.protocol()? >= ROOM_SETTINGS_PROTOCOL;
        if !recorded && !self.node.all_members_speak(ROOM_SETTINGS_PROTOCOL).await {
            return Err(WriteError::Unavailable(format!(
                "changing room settings needs every member to speak protocol {ROOM_SETTINGS_PROTOCOL}: finish the upgrade"
            ))
            .into());
        }
        Ok(())
    }

    /// Changes `room`'s retention settings once every member can apply the
    /// change (protocol 6); answers the room as it is after.
    pub async fn update(&self, room: &str, change: RoomChange) -> Result<RoomInfo, ServiceError> {
        self.require_room_settings().await?;
        self.update_room(room, change).await
    }

    async fn update_room(&self, room: &str, change: RoomChange) -> Result<RoomInfo, ServiceError> {
        match write(&self.node, Request::UpdateRoom { room: room.to_owned(), change }).await? {
            Reply::Room { info, .. } => Ok(info),
            other => Err(ServiceError::unexpected("update", other)),
        }
    }

    /// Deletes `room` and its events.
    pub async fn delete(&self, room: &str) -> Result<(), ServiceError> {
        match write(&self.node, Request::DeleteRoom { room: room.to_owned() }).await? {
            Reply::Deleted => Ok(()),
            other => Err(ServiceError::unexpected("delete", other)),
        }
    }

    /// Statistics of `room` on this node.
    pub fn stats(&self, room: &str) -> Result<RoomStats, ServiceError> {
        let meta = self.node.store.room(room)?.ok_or_else(|| Rejection::RoomNotFound(room.to_owned()))?;
        self.stats_of(meta.info)
    }

    /// Statistics of a room described by `info`.
    pub fn stats_of(&self, info: RoomInfo) -> Result<RoomStats, ServiceError> {
        let subscribers = self.node.hub.subscribers_of(&info.name);
        let store = &self.node.store;
        let (consumers, max_bytes) = match store.room(&info.name)? {
            Some(meta) => (
                store.consumers(meta.id)?.into_iter().map(|c| c.name).collect(),
                store.byte_limit(meta.id)?.map(|limit| limit.max_bytes),
            ),
            None => (Vec::new(), None),
        };
        let mut stats = RoomStats::new(info, subscribers, consumers);
        stats.max_bytes = max_bytes;
        Ok(stats)
    }

    /// Opens a live subscription to `room` from `start`, delivering only
    /// events that pass `filter`. A room that does not exist yet is waited
    /// for.
    pub fn subscribe(&self, room: &str, start: StartAt, filter: TypeFilter) -> Result<Subscription, ServiceError> {
        Ok(self.node.hub.subscribe(room, start)?.with_filter(filter))
    }

    /// Every room, by name.
    pub fn list(&self) -> Result<Vec<RoomInfo>, ServiceError> {
        Ok(self.node.store.rooms()?)
    }
}
