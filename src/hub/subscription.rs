//! One subscriber's view of a room: a cursor and a watch on the room head.

use std::sync::Arc;

use tokio::sync::watch;

use super::{LiveEvent, RoomHead, SubscriberGuard};
use crate::filter::TypeFilter;
use crate::protocol::StartAt;
use crate::store::StoreError;

/// Most events handed out by one [`Subscription::next`] call.
const BATCH: usize = 512;

/// What a subscriber is told next.
#[derive(Debug)]
pub enum Delivery {
    /// The next events, in offset order, gapless apart from type filtering.
    Events(Vec<Arc<LiveEvent>>),
    /// The requested offset is no longer retained; delivery continues from
    /// `earliest`.
    Gap {
        /// What the cursor pointed at.
        requested: u64,
        /// The earliest retained offset, where delivery resumes.
        earliest: u64,
    },
    /// The room was deleted (or deleted and re-created): the subscription
    /// is over.
    RoomDeleted,
    /// The node is shutting down: the subscription is over.
    Shutdown,
}

/// A live subscription to one room.
pub struct Subscription {
    guard: SubscriberGuard,
    head: watch::Receiver<RoomHead>,
    shutdown: watch::Receiver<bool>,
    room_id: Option<u64>,
    cursor: u64,
    filter: TypeFilter,
}

impl Subscription {
    pub(super) fn new(guard: SubscriberGuard, start: StartAt) -> Self {
        let head = guard.channel.head.subscribe();
        let shutdown = guard.hub.shutdown.subscribe();
        let now = *head.borrow();
        let cursor = match (now.room_id, start) {
            // A room this node does not have (yet): an explicit offset is
            // kept (a client resuming on a node that lags must not get its
            // events again); otherwise start from the room's first event.
            (None, StartAt::Offset(offset)) => offset,
            (None, _) => 0,
            (Some(_), StartAt::Live) => now.next_offset,
            (Some(_), StartAt::Offset(offset)) => offset,
            (Some(_), StartAt::FromEnd(back)) => now.next_offset.saturating_sub(back),
        };
        Self { guard, head, shutdown, room_id: now.room_id, cursor, filter: TypeFilter::default() }
    }

    /// Delivers only events whose type passes `filter`.
    pub fn with_filter(mut self, filter: TypeFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.guard.room
    }

    /// The next offset this subscription will deliver.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Waits for and returns what the subscriber gets next.
    ///
    /// Cancel-safe: the cursor only moves when a call returns, so a caller
    /// may drop the future (e.g. in `select!`) without losing events.
    pub async fn next(&mut self) -> Result<Delivery, StoreError> {
        loop {
            if *self.shutdown.borrow() {
                return Ok(Delivery::Shutdown);
            }
            let head = *self.head.borrow_and_update();
            match (self.room_id, head.room_id) {
                (Some(mine), current) if current != Some(mine) => return Ok(Delivery::RoomDeleted),
                (None, Some(appeared)) => self.room_id = Some(appeared),
                _ => {}
            }
            if let Some(room_id) = self.room_id {
                if self.cursor < head.min_offset {
                    let requested = self.cursor;
                    self.cursor = head.min_offset;
                    return Ok(Delivery::Gap { requested, earliest: head.min_offset });
                }
                if self.cursor < head.next_offset {
                    let filter = &self.filter;
                    let (events, next) = self.guard.hub.read(
                        &self.guard.channel,
                        room_id,
                        self.cursor,
                        head.next_offset,
                        BATCH,
                        |t| filter.matches(t),
                    )?;
                    self.cursor = next;
                    if !events.is_empty() {
                        return Ok(Delivery::Events(events));
                    }
                    continue;
                }
            }
            tokio::select! {
                changed = self.head.changed() => {
                    // The sender lives as long as the channel we hold.
                    if changed.is_err() {
                        return Ok(Delivery::Shutdown);
                    }
                }
                _ = self.shutdown.changed() => {}
            }
        }
    }
}
