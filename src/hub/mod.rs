//! Live fan-out: the bridge between the state machine, which applies events,
//! and subscribers, which stream them.
//!
//! After each apply the state machine hands the hub what changed
//! ([`RoomUpdate`]s). For each room that has subscribers the hub publishes
//! the room's new head (id, retained range) on a `watch` channel and keeps
//! the newest events in a small per-room cache. Each subscriber
//! ([`Subscription`]) owns only a cursor: it reads `[cursor, head)` from the
//! cache or, when it has fallen behind the cache, from the store. There is
//! no per-subscriber queue, so a slow subscriber costs no memory and loses
//! nothing; it catches up from disk at its own pace.

mod subscription;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

pub use subscription::{Delivery, Subscription};

use crate::protocol::StartAt;
use crate::store::{RoomUpdate, Store, StoreError, StoredEvent, MAX_PAGE_BYTES};

/// Events kept in memory per watched room, at most.
const CACHE_EVENTS_PER_ROOM: usize = 4096;
/// Bytes of events kept in memory per watched room, at most.
const CACHE_BYTES_PER_ROOM: usize = 8 * 1024 * 1024;

/// A room's state as subscribers follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomHead {
    /// Internal id of the room's current incarnation; `None` while the room
    /// does not exist.
    pub room_id: Option<u64>,
    /// Lowest retained offset.
    pub min_offset: u64,
    /// Offset the next event will get (the high-water mark).
    pub next_offset: u64,
}

/// An event on its way to subscribers, rendered at most once however many
/// subscribers send it.
#[derive(Debug)]
pub struct LiveEvent {
    /// Offset in its room.
    pub offset: u64,
    /// The stored event.
    pub event: Arc<StoredEvent>,
    rendered: OnceLock<Bytes>,
}

impl LiveEvent {
    fn new(offset: u64, event: Arc<StoredEvent>) -> Self {
        Self { offset, event, rendered: OnceLock::new() }
    }

    /// The event's wire form (UTF-8 text), made by `render` the first time
    /// it is asked for; every subscriber then sends the same bytes, a
    /// reference count apart, instead of a copy each.
    pub fn rendered(&self, render: impl FnOnce(&LiveEvent) -> String) -> Bytes {
        self.rendered.get_or_init(|| Bytes::from(render(self))).clone()
    }
}

/// Why a subscription could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The node's subscriber limit is reached.
    #[error("this node already serves {0} subscribers, its limit; try another node")]
    TooMany(usize),
    /// Reading the room failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct RoomChannel {
    head: watch::Sender<RoomHead>,
    cache: Mutex<Cache>,
    subscribers: AtomicUsize,
}

/// A contiguous run of the room's newest events, and the incarnation they
/// belong to: checked under the same lock that refills it, so a reader of
/// a deleted room can never be handed the new room's events.
#[derive(Default)]
struct Cache {
    room_id: Option<u64>,
    events: VecDeque<Arc<LiveEvent>>,
    /// What `events` weigh together.
    bytes: usize,
}

impl Cache {
    fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    fn push(&mut self, event: Arc<LiveEvent>) {
        self.bytes += event.event.weight();
        self.events.push_back(event);
        while self.events.len() > CACHE_EVENTS_PER_ROOM || self.bytes > CACHE_BYTES_PER_ROOM {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(first) = self.events.pop_front() {
            self.bytes -= first.event.weight();
        }
    }
}

impl RoomChannel {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking holder could break
        // halfway (push/pop only), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fan-out hub of one node.
pub struct Hub {
    store: Store,
    rooms: Mutex<HashMap<String, Arc<RoomChannel>>>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
    shutdown: watch::Sender<bool>,
}

impl Hub {
    /// A hub over `store` serving at most `max_subscribers` at once.
    pub fn new(store: Store, max_subscribers: usize) -> Arc<Self> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Self { store, rooms: Mutex::default(), subscribers: AtomicUsize::new(0), max_subscribers, shutdown })
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<RoomChannel>>> {
        // Map operations only; see RoomChannel::cache.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the state machine after each committed apply.
    pub fn applied(&self, updates: Vec<RoomUpdate>) {
        let rooms = self.rooms();
        for update in updates {
            let Some(channel) = rooms.get(&update.room) else { continue };
            let head = head_of(update.meta.as_ref());
            let mut cache = channel.cache();
            if head.room_id != cache.room_id {
                cache.clear();
                cache.room_id = head.room_id;
            }
            for (offset, event) in update.appended {
                if cache.events.back().is_some_and(|last| last.offset + 1 != offset) {
                    cache.clear();
                }
                cache.push(Arc::new(LiveEvent::new(offset, event)));
            }
            while cache.events.front().is_some_and(|first| first.offset < head.min_offset) {
                cache.pop();
            }
            drop(cache);
            channel.head.send_replace(head);
        }
    }

    /// Re-reads every watched room from the store (after a snapshot
    /// replaced the whole state).
    pub fn resync(&self) -> Result<(), StoreError> {
        let rooms = self.rooms();
        for (name, channel) in rooms.iter() {
            let head = head_of(self.store.room(name)?.as_ref());
            *channel.cache() = Cache { room_id: head.room_id, ..Cache::default() };
            channel.head.send_replace(head);
        }
        Ok(())
    }

    /// Opens a subscription to `room` starting at `start`.
    pub fn subscribe(self: &Arc<Self>, room: &str, start: StartAt) -> Result<Subscription, SubscribeError> {
        let count = self.subscribers.fetch_add(1, Ordering::SeqCst) + 1;
        if count > self.max_subscribers {
            self.subscribers.fetch_sub(1, Ordering::SeqCst);
            return Err(SubscribeError::TooMany(self.max_subscribers));
        }
        let channel = {
            let mut rooms = self.rooms();
            let channel = match rooms.get(room) {
                Some(channel) => channel.clone(),
                None => {
                    // Read under the map lock: an apply that commits after
                    // this read finds the channel and updates it.
                    let meta = match self.store.room(room) {
                        Ok(meta) => meta,
                        Err(e) => {
                            self.subscribers.fetch_sub(1, Ordering::SeqCst);
                            return Err(e.into());
                        }
                    };
                    let head = head_of(meta.as_ref());
                    let cache = Mutex::new(Cache { room_id: head.room_id, ..Cache::default() });
                    let (head, _) = watch::channel(head);
                    let channel = Arc::new(RoomChannel { head, cache, subscribers: AtomicUsize::new(0) });
                    rooms.insert(room.to_owned(), channel.clone());
                    channel
                }
            };
            // Counted under the map lock: the last subscriber leaving
            // removes the channel under the same lock, so it cannot remove
            // one that a new subscriber is about to use.
            channel.subscribers.fetch_add(1, Ordering::SeqCst);
            channel
        };
        let guard = SubscriberGuard { hub: self.clone(), room: room.to_owned(), channel: channel.clone() };
        Ok(Subscription::new(guard, start))
    }

    /// Subscribers of `room` on this node.
    pub fn subscribers_of(&self, room: &str) -> usize {
        self.rooms().get(room).map_or(0, |c| c.subscribers.load(Ordering::SeqCst))
    }

    /// Subscribers on this node.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::SeqCst)
    }

    /// Ends every subscription (node shutdown).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Events `[from, end)` of the room, from the cache when it holds
    /// `from`, else from the store; at most `limit` of those `matches` lets
    /// through. Returns them and the offset after the last one examined.
    fn read(
        &self,
        channel: &RoomChannel,
        room_id: u64,
        from: u64,
        end: u64,
        limit: usize,
        matches: impl Fn(&str) -> bool,
    ) -> Result<(Vec<Arc<LiveEvent>>, u64), StoreError> {
        {
            let cache = channel.cache();
            // The cache belongs to one incarnation of the room, checked
            // under the lock that refills it.
            let first = cache.events.front().filter(|_| cache.room_id == Some(room_id));
            if let Some(first) = first {
                if first.offset <= from {
                    let skip = (from - first.offset) as usize;
                    let mut events = Vec::new();
                    let mut next = from;
                    let mut bytes = 0;
                    for event in cache.events.iter().skip(skip).take_while(|e| e.offset < end) {
                        next = event.offset + 1;
                        if matches(&event.event.event_type) {
                            bytes += event.event.weight();
                            events.push(event.clone());
                            if events.len() >= limit || bytes >= MAX_PAGE_BYTES {
                                break;
                            }
                        }
                    }
                    if next > from || skip < cache.events.len() {
                        return Ok((events, next));
                    }
                }
            }
        }
        let page = self.store.read_range(room_id, from, end, limit, matches)?;
        let events = page.events.into_iter().map(|r| Arc::new(LiveEvent::new(r.offset, Arc::new(r.event)))).collect();
        Ok((events, page.next_offset))
    }
}

fn head_of(meta: Option<&crate::store::RoomMeta>) -> RoomHead {
    match meta {
        Some(meta) => {
            RoomHead { room_id: Some(meta.id), min_offset: meta.info.min_offset, next_offset: meta.info.next_offset }
        }
        None => RoomHead::default(),
    }
}

/// Keeps the counts right and drops a room's channel with its last
/// subscriber.
struct SubscriberGuard {
    hub: Arc<Hub>,
    room: String,
    channel: Arc<RoomChannel>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::SeqCst);
        let mut rooms = self.hub.rooms();
        if self.channel.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(current) = rooms.get(&self.room) {
                if Arc::ptr_eq(current, &self.channel) && current.subscribers.load(Ordering::SeqCst) == 0 {
                    rooms.remove(&self.room);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incarnation(id: u64, events: u64) -> RoomUpdate {
        let info = crate::command::RoomInfo {
            name: "r".into(),
            generation: id,
            next_offset: events,
            min_offset: 0,
            config: Default::default(),
            created_at: 0,
            last_event_at: 0,
            published_total: events,
            bytes_total: 0,
        };
        let appended = (0..events)
            .map(|offset| {
                let event = StoredEvent {
                    event_type: "t".into(),
                    data: id.to_string(),
                    metadata: None,
                    timestamp: 0,
                    id: format!("{id}-{offset}"),
                };
                (offset, Arc::new(event))
            })
            .collect();
        RoomUpdate { room: "r".into(), meta: Some(crate::store::RoomMeta { id, info }), appended }
    }

    #[test]
    fn an_event_is_rendered_once_and_its_bytes_shared_by_every_sender() {
        let (_, update) = incarnation(1, 1).appended.into_iter().next().expect("one event");
        let event = LiveEvent::new(0, update);
        let mut renders = 0;
        let first = event.rendered(|e| {
            renders += 1;
            format!("frame {}", e.offset)
        });
        let second = event.rendered(|_| {
            renders += 1;
            "another".to_owned()
        });
        assert_eq!(renders, 1, "the second sender rendered the event again");
        assert_eq!(second, "frame 0");
        assert_eq!(first.as_ptr(), second.as_ptr(), "the second sender got a copy, not the shared bytes");
    }

    #[test]
    fn a_reader_of_a_deleted_room_never_gets_the_new_rooms_events() {
        let (_dir, store) = Store::scratch();
        let hub = Hub::new(store, 8);
        let subscription = hub.subscribe("r", StartAt::Offset(0)).unwrap();
        let channel = subscription_channel(&hub);
        hub.applied(vec![incarnation(1, 8)]);
        // The room is deleted and created again, over and over, while a
        // reader of incarnation 1 keeps reading.
        let writer = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    hub.applied(vec![incarnation(1 + i % 2, 8)]);
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let (events, _) = hub.read(&channel, 1, 0, 8, 8, |_| true).unwrap();
            for event in events {
                assert_eq!(event.event.data, "1", "incarnation 1's reader got {}", event.event.id);
            }
            reads += 1;
        }
        writer.join().unwrap();
        drop(subscription);
    }

    fn subscription_channel(hub: &Hub) -> Arc<RoomChannel> {
        hub.rooms().get("r").cloned().expect("a subscribed room has a channel")
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_keeps_the_newest_events() {
        let mut cache = Cache::default();
        let big = |offset: u64| {
            let event = StoredEvent {
                event_type: "t".into(),
                data: "x".repeat(1024 * 1024),
                metadata: None,
                timestamp: 0,
                id: offset.to_string(),
            };
            Arc::new(LiveEvent::new(offset, Arc::new(event)))
        };
        for offset in 0..20 {
            cache.push(big(offset));
        }
        assert!(cache.bytes <= CACHE_BYTES_PER_ROOM, "{} bytes", cache.bytes);
        assert_eq!(cache.events.back().map(|e| e.offset), Some(19));
        assert_eq!(cache.events.len(), 7, "seven 1 MiB events fit in 8 MiB");
        assert_eq!(cache.bytes, cache.events.iter().map(|e| e.event.weight()).sum::<usize>());
    }

    #[test]
    fn an_explicit_offset_is_kept_for_a_room_this_node_does_not_have_yet() {
        let (_dir, store) = Store::scratch();
        let hub = Hub::new(store, 8);
        assert_eq!(hub.subscribe("later", StartAt::Offset(100)).unwrap().cursor(), 100);
        assert_eq!(hub.subscribe("later", StartAt::Live).unwrap().cursor(), 0);
        assert_eq!(hub.subscribers_of("later"), 0, "dropped subscriptions are no longer counted");
    }
}
