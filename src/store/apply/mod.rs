//! The write side of the applied state: turns committed [`Command`]s into
//! rooms and events.
//!
//! Offsets are assigned here, from the room's `next_offset`, so every node
//! assigns the same offsets in the same log order. Timestamps come from the
//! command (the proposer's clock), clamped so they never go backwards within a
//! room. All changes of one apply call go into one [`ApplyBatch`], written
//! all or nothing (`Store::write`) together with the Raft bookkeeping
//! (`last_applied`, membership) that the caller adds to it.

mod consumers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{keys, ByteLimit, ConsumerRecord, DedupEntry, KvEntry, RoomMeta, Store, StoreError, StoredEvent, Writes};
use crate::codec;
use crate::command::{Command, NewEvent, Published, Rejection, Reply, Request, RoomChange, RoomConfig, RoomInfo};
use consumers::LiveConsumer;

/// Most expired keys (and, separately, dedup entries) one `Expire` removes;
/// the leader proposes the next one soon after.
const MAX_EXPIRE: usize = 10_000;

/// Event bytes (as [`StoredEvent::weight`] counts them) a chunk takes before
/// the next event starts a new one. sled splits a leaf past 16 keys and
/// writes a leaf bigger than 128 KiB to a file of its own: 16 chunks of
/// this size stay below that.
const CHUNK_BYTES: usize = 6 * 1024;

/// Events stored under one key, as an apply batch sees them.
type Chunk = Arc<Vec<Arc<StoredEvent>>>;

/// Where a run of stored events sits: its key, first offset and count.
struct Span {
    key: Vec<u8>,
    first: u64,
    count: u64,
}

impl Span {
    fn end(&self) -> u64 {
        self.first + self.count
    }
}

/// Pending changes of one apply call.
pub struct ApplyBatch {
    batch: Writes,
    deleted_rooms: Vec<u64>,
    touched: Vec<String>,
    appended: Vec<(String, u64, Arc<StoredEvent>)>,
    /// KV records written in this batch (None = deleted): the batch is not
    /// readable from the tree until it commits.
    kv: HashMap<String, Option<KvEntry>>,
    /// Dedup records written in this batch (None = deleted), for the same
    /// reason as `kv`.
    dedup: HashMap<Vec<u8>, Option<DedupEntry>>,
    /// Event records written in this batch (None = deleted), by (room id,
    /// first offset), for retention: like `kv`, they cannot be read from
    /// the tree before the batch commits.
    chunks: BTreeMap<(u64, u64), Option<Chunk>>,
    /// The cluster id set in this batch.
    cluster: Option<String>,
    /// Incarnations registered in this batch.
    incarnations: HashMap<u64, String>,
    /// Consumers changed in this batch (room id, name): their records are
    /// written once, at commit.
    consumers: BTreeSet<(u64, String)>,
}

/// What one committed apply changed in one room, for live subscribers.
#[derive(Debug, Clone)]
pub struct RoomUpdate {
    /// Room name.
    pub room: String,
    /// The room after the apply; `None` if it was deleted.
    pub meta: Option<RoomMeta>,
    /// Events appended to it, in offset order.
    pub appended: Vec<(u64, Arc<StoredEvent>)>,
}

impl ApplyBatch {
    /// The KV record of `key` as this batch would leave it.
    fn kv_entry(&self, tree: &sled::Tree, key: &str) -> Result<Option<KvEntry>, StoreError> {
        if let Some(pending) = self.kv.get(key) {
            return Ok(pending.clone());
        }
        tree.get(keys::kv(key))?.map(|bytes| codec::decode(&bytes)).transpose().map_err(Into::into)
    }

    /// The dedup record under `key` as this batch would leave it.
    fn dedup_entry(&self, tree: &sled::Tree, key: &[u8]) -> Result<Option<DedupEntry>, StoreError> {
        if let Some(pending) = self.dedup.get(key) {
            return Ok(*pending);
        }
        tree.get(key)?.map(|bytes| codec::decode(&bytes)).transpose().map_err(Into::into)
    }

    /// The stored run of `room_id`'s events that holds `offset`, as this
    /// batch would leave it.
    fn span_at(&self, tree: &sled::Tree, room_id: u64, offset: u64) -> Result<Option<Span>, StoreError> {
        let pending = self.chunks.range(..=(room_id, offset)).next_back();
        if let Some((&(room, first), Some(events))) = pending {
            let count = events.len() as u64;
            if room == room_id && first + count > offset {
                return Ok(Some(Span { key: chunk_key(room_id, first, count), first, count }));
            }
        }
        let holding = keys::room_events(room_id).to_vec()..=keys::chunk(room_id, offset, u32::MAX).to_vec();
        let Some((key, _)) = tree.range(holding).next_back().transpose()? else { return Ok(None) };
        let Some((first, count)) = keys::events_span(&key) else { return Ok(None) };
        let deleted = matches!(self.chunks.get(&(room_id, first)), Some(None));
        Ok((first + count > offset && !deleted).then(|| Span { key: key.to_vec(), first, count }))
    }

    /// `read` of each event in `span`, as this batch would leave them.
    fn span_values<T>(
        &self,
        tree: &sled::Tree,
        room_id: u64,
        span: &Span,
        read: impl Fn(&StoredEvent) -> T,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(Some(events)) = self.chunks.get(&(room_id, span.first)) {
            return Ok(events.iter().map(|e| read(e)).collect());
        }
        let Some(value) = tree.get(&span.key)? else { return Ok(Vec::new()) };
        Ok(super::decode_events(&span.key, &value)?.iter().map(read).collect())
    }

    /// The payload bytes of `room_id`'s events at offsets `[from, to)`, as
    /// this batch would leave them.
    fn payload_bytes_between(&self, tree: &sled::Tree, room_id: u64, from: u64, to: u64) -> Result<u64, StoreError> {
        let mut total = 0;
        let mut at = from;
        while at < to {
            let Some(span) = self.span_at(tree, room_id, at)? else { break };
            let sizes = self.span_values(tree, room_id, &span, StoredEvent::payload_bytes)?;
            let take = (to.min(span.end()) - at) as usize;
            total += sizes.iter().skip((at - span.first) as usize).take(take).sum::<u64>();
            at += take as u64;
        }
        Ok(total)
    }

    /// Deletes the events of `span`.
    fn remove_span(&mut self, room_id: u64, span: &Span) {
        self.batch.remove(span.key.as_slice());
        self.chunks.insert((room_id, span.first), None);
    }

    /// Adds a raw key/value (the caller's own bookkeeping) to the batch.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.batch.insert(key, value);
    }
}

/// The single writer of the applied state. It keeps the room metadata in
/// memory so that assigning offsets never reads the disk.
pub struct Applier {
    store: Store,
    rooms: HashMap<String, RoomMeta>,
    retired_generations: HashMap<String, u64>,
    next_room_id: u64,
    /// The latest command timestamp applied: new leaders never propose
    /// earlier than this.
    clock: u64,
    /// The members of the cluster (voters and learners), as the state
    /// machine last applied them.
    members: BTreeSet<u64>,
    /// Whether events are stored in chunks (`PackEvents` applied).
    packed: bool,
    /// Durable consumers by (room id, name).
    consumers: HashMap<(u64, String), LiveConsumer>,
    /// The protocol recorded by `RaiseProtocol`.
    protocol: u32,
    /// Retention by bytes, by room id, for the rooms that have it.
    byte_limits: HashMap<u64, ByteLimit>,
}

impl Applier {
    /// Loads the in-memory view of `store`, finishing any room deletion a
    /// crash interrupted.
    pub fn load(store: Store) -> Result<Self, StoreError> {
        let tree = store.tree();
        let mut rooms = HashMap::new();
        for value in tree.scan_prefix(keys::ROOM_PREFIX).values() {
            let meta: RoomMeta = codec::decode(&value?)?;
            rooms.insert(meta.info.name.clone(), meta);
        }
        let mut retired_generations = HashMap::new();
        for item in tree.scan_prefix(keys::GENERATION_PREFIX) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[keys::GENERATION_PREFIX.len()..]).into_owned();
            retired_generations.insert(name, codec::decode(&value)?);
        }
        let next_room_id = match tree.get(keys::NEXT_ROOM_ID)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => 1,
        };
        let clock = match tree.get(keys::CLOCK)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => 0,
        };
        let mut consumers = HashMap::new();
        for item in tree.scan_prefix(keys::CONSUMER_PREFIX) {
            let (key, value) = item?;
            let Some(room_id) = key.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue;
            };
            let record: ConsumerRecord = codec::decode(&value)?;
            consumers.insert((room_id, record.name.clone()), LiveConsumer::new(record));
        }
        let members = BTreeSet::new();
        let packed = tree.contains_key(keys::PACKED)?;
        let protocol = tree.get(keys::PROTOCOL)?.map(|b| codec::decode(&b)).transpose()?.unwrap_or(0);
        let mut byte_limits = HashMap::new();
        for item in tree.scan_prefix(keys::BYTE_LIMIT_PREFIX) {
            let (key, value) = item?;
            let Some(room_id) = key.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                continue;
            };
            byte_limits.insert(room_id, codec::decode(&value)?);
        }
        let applier = Self {
            store,
            rooms,
            retired_generations,
            next_room_id,
            clock,
            members,
            packed,
            consumers,
            protocol,
            byte_limits,
        };
        applier.remove_events_past_heads()?;
        applier.purge_deleted_rooms()?;
        Ok(applier)
    }

    /// Removes event records past their room's head, and under room ids
    /// not given out yet: what a crash leaves of an apply that had written
    /// its new events (`Writes::insert_past_head`) but not the rest. The
    /// repeat of that apply writes them again; until then nobody may find
    /// them (a backup taken meanwhile would carry them to a restored
    /// cluster, which gives those offsets to other events).
    fn remove_events_past_heads(&self) -> Result<(), StoreError> {
        let tree = self.store.tree();
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = self
            .rooms
            .values()
            .map(|meta| {
                let end =
                    meta.id.checked_add(1).map_or(keys::EVENTS_END.to_vec(), |next| keys::room_events(next).to_vec());
                (keys::event(meta.id, meta.info.next_offset).to_vec(), end)
            })
            .collect();
        ranges.push((keys::room_events(self.next_room_id).to_vec(), keys::EVENTS_END.to_vec()));
        let mut removal = Writes::default();
        let mut left = 0usize;
        for (from, to) in ranges {
            for key in tree.range(from..to).keys() {
                removal.remove(key?);
                left += 1;
            }
        }
        if left > 0 {
            tracing::info!(
                records = left,
                "removed event records past their room's head, left by an apply a crash cut short"
            );
            self.store.write(removal)?;
        }
        Ok(())
    }

    /// Whether the changes pending before `command` must be committed
    /// before it is applied: `Expire` scans the committed tree, so every
    /// node must see the same tree there however its entries were grouped
    /// into apply calls.
    pub fn needs_committed_state(command: &Command) -> bool {
        command.requests.contains(&Request::Expire)
    }

    /// Starts an empty batch.
    pub fn begin(&self) -> ApplyBatch {
        ApplyBatch {
            batch: Writes::default(),
            deleted_rooms: Vec::new(),
            touched: Vec::new(),
            appended: Vec::new(),
            kv: HashMap::new(),
            dedup: HashMap::new(),
            chunks: BTreeMap::new(),
            cluster: None,
            incarnations: HashMap::new(),
            consumers: BTreeSet::new(),
        }
    }

    /// The latest command timestamp applied (Unix ms, cluster time).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Tells the applier who the members are (after opening the state,
    /// or a snapshot replaced it).
    pub fn set_members(&mut self, members: BTreeSet<u64>) {
        self.members = members;
    }

    /// A membership change was applied: the incarnations of nodes that
    /// left are forgotten in `batch` (a node that rejoins registers anew).
    pub fn members_changed(&mut self, batch: &mut ApplyBatch, members: BTreeSet<u64>) {
        for gone in self.members.difference(&members) {
            batch.batch.remove(keys::incarnation(*gone));
        }
        self.members = members;
    }

    /// Applies one command into `batch` and answers each of its requests.
    pub fn apply(&mut self, batch: &mut ApplyBatch, command: &Command) -> Result<Vec<Reply>, StoreError> {
        self.clock = self.clock.max(command.timestamp_ms);
        let mut replies = Vec::with_capacity(command.requests.len());
        for request in &command.requests {
            let reply = match request {
                Request::CreateRoom { room, config, if_absent } => {
                    self.create_room(batch, room, config, *if_absent, command.timestamp_ms)?
                }
                Request::DeleteRoom { room } => self.delete_room(batch, room)?,
                Request::UpdateRoom { room, change } => self.update_room(batch, room, change, command.timestamp_ms)?,
                Request::Publish { events, create_missing } => {
                    self.publish(batch, events, *create_missing, command.timestamp_ms, command.dedup_window_ms)?
                }
                Request::KvSet { key, value, ttl_ms, nx } => {
                    self.kv_set(batch, key, value, *ttl_ms, *nx, command.timestamp_ms)?
                }
                Request::KvDelete { key } => self.kv_delete(batch, key, command.timestamp_ms)?,
                Request::Expire => self.expire(batch, command.timestamp_ms, command.dedup_window_ms)?,
                Request::Trim => self.trim_aged(batch, command.timestamp_ms)?,
                Request::Identify { cluster } => self.identify(batch, cluster)?,
                Request::Register { node, incarnation } => self.register(batch, *node, incarnation)?,
                Request::PackEvents => {
                    if !self.packed {
                        batch.batch.insert(keys::PACKED, Vec::new());
                        self.packed = true;
                    }
                    Reply::Packed
                }
                Request::RaiseProtocol { to } => {
                    if *to > self.protocol {
                        self.protocol = *to;
                        batch.batch.insert(keys::PROTOCOL, codec::encode(to)?);
                    }
                    Reply::Protocol { now: self.protocol }
                }
                Request::PutConsumer { room, name, config, create_missing } => {
                    self.put_consumer(batch, room, name, config, *create_missing, command.timestamp_ms)?
                }
                Request::DeleteConsumer { room, name } => self.delete_consumer(batch, room, name),
                Request::Lease { room, name, max } => {
                    self.lease(batch, room, name, *max, command.timestamp_ms, command.dedup_window_ms)?
                }
                Request::Ack { room, name, offsets } => {
                    self.settle(batch, room, name, offsets, None, command.timestamp_ms)
                }
                Request::Nak { room, name, offsets, delay_ms } => {
                    self.settle(batch, room, name, offsets, Some(*delay_ms), command.timestamp_ms)
                }
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    /// Writes `batch` all or nothing, then removes the events of rooms it
    /// deleted. Returns what changed, room by room.
    pub fn commit(&mut self, batch: ApplyBatch) -> Result<Vec<RoomUpdate>, StoreError> {
        let ApplyBatch { batch: mut writes, deleted_rooms, mut touched, appended, consumers, .. } = batch;
        for key in consumers {
            if let Some(consumer) = self.consumers.get(&key) {
                writes.insert(keys::consumer(key.0, &key.1), codec::encode(&consumer.record)?);
            }
        }
        writes.insert(keys::NEXT_ROOM_ID, codec::encode(&self.next_room_id)?);
        writes.insert(keys::CLOCK, codec::encode(&self.clock)?);
        self.store.write(writes)?;
        if !deleted_rooms.is_empty() {
            self.purge_deleted_rooms()?;
        }
        touched.sort_unstable();
        touched.dedup();
        let mut updates: Vec<RoomUpdate> = touched
            .into_iter()
            .map(|room| RoomUpdate { meta: self.rooms.get(&room).cloned(), room, appended: Vec::new() })
            .collect();
        for (room, offset, event) in appended {
            if let Ok(i) = updates.binary_search_by(|u| u.room.as_str().cmp(&room)) {
                updates[i].appended.push((offset, event));
            }
        }
        Ok(updates)
    }

    /// Throws away the in-memory view and reloads it from disk (after a
    /// snapshot replaced the state).
    pub fn reload(&mut self) -> Result<(), StoreError> {
        *self = Self::load(self.store.clone())?;
        Ok(())
    }

    fn create_room(
        &mut self,
        batch: &mut ApplyBatch,
        name: &str,
        config: &RoomConfig,
        if_absent: bool,
        now: u64,
    ) -> Result<Reply, StoreError> {
        if let Some(meta) = self.rooms.get(name) {
            return Ok(if if_absent {
                Reply::Room { created: false, info: meta.info.clone() }
            } else {
                Reply::Rejected(Rejection::RoomExists(name.to_owned()))
            });
        }
        let meta = self.new_room(batch, name, config.clone(), now)?;
        Ok(Reply::Room { created: true, info: meta.info.clone() })
    }

    fn new_room(
        &mut self,
        batch: &mut ApplyBatch,
        name: &str,
        config: RoomConfig,
        now: u64,
    ) -> Result<&RoomMeta, StoreError> {
        let id = self.next_room_id;
        self.next_room_id += 1;
        let generation = self.retired_generations.get(name).copied().unwrap_or(0) + 1;
        let meta = RoomMeta {
            id,
            info: RoomInfo {
                name: name.to_owned(),
                generation,
                next_offset: 0,
                min_offset: 0,
                config,
                created_at: now,
                last_event_at: 0,
                published_total: 0,
                bytes_total: 0,
            },
        };
        batch.batch.insert(keys::room(name), codec::encode(&meta)?);
        batch.touched.push(name.to_owned());
        Ok(self.rooms.entry(name.to_owned()).or_insert(meta))
    }

    fn update_room(
        &mut self,
        batch: &mut ApplyBatch,
        name: &str,
        change: &RoomChange,
        now: u64,
    ) -> Result<Reply, StoreError> {
        let Some(meta) = self.rooms.get_mut(name) else {
            return Ok(Reply::Rejected(Rejection::RoomNotFound(name.to_owned())));
        };
        if let Some(max_events) = change.max_events {
            meta.info.config.max_events = max_events;
        }
        if let Some(max_age_secs) = change.max_age_secs {
            meta.info.config.max_age_secs = max_age_secs;
        }
        let (id, min, next) = (meta.id, meta.info.min_offset, meta.info.next_offset);
        match change.max_bytes {
            Some(Some(max_bytes)) => {
                let retained = match self.byte_limits.get(&id) {
                    Some(limit) => limit.retained,
                    None => batch.payload_bytes_between(self.store.tree(), id, min, next)?,
                };
                self.byte_limits.insert(id, ByteLimit { max_bytes, retained });
            }
            Some(None) => {
                self.byte_limits.remove(&id);
                batch.batch.remove(keys::byte_limit(id));
            }
            None => {}
        }
        self.trim_room(batch, name, now, true)?;
        batch.touched.push(name.to_owned());
        let info = self.rooms.get(name).map(|m| m.info.clone());
        // `trim_room` keeps the room: it only moves its start.
        let info = info.ok_or_else(|| StoreError::Io(std::io::Error::other("room vanished while trimmed")))?;
        Ok(Reply::Room { created: false, info })
    }

    fn delete_room(&mut self, batch: &mut ApplyBatch, name: &str) -> Result<Reply, StoreError> {
        let Some(meta) = self.rooms.remove(name) else {
            return Ok(Reply::Rejected(Rejection::RoomNotFound(name.to_owned())));
        };
        batch.batch.remove(keys::room(name));
        batch.batch.insert(keys::generation(name), codec::encode(&meta.info.generation)?);
        batch.batch.insert(&keys::tombstone(meta.id), Vec::new());
        self.retired_generations.insert(name.to_owned(), meta.info.generation);
        if self.byte_limits.remove(&meta.id).is_some() {
            batch.batch.remove(keys::byte_limit(meta.id));
        }
        self.drop_consumers_of(batch, meta.id);
        batch.deleted_rooms.push(meta.id);
        batch.touched.push(name.to_owned());
        Ok(Reply::Deleted)
    }

    fn publish(
        &mut self,
        batch: &mut ApplyBatch,
        events: &[NewEvent],
        create_missing: bool,
        now: u64,
        dedup_window: u64,
    ) -> Result<Reply, StoreError> {
        // All or nothing: check every room before writing anything.
        if !create_missing {
            if let Some(missing) = events.iter().find(|e| !self.rooms.contains_key(&e.room)) {
                return Ok(Reply::Rejected(Rejection::RoomNotFound(missing.room.clone())));
            }
        }
        let mut published = Vec::with_capacity(events.len());
        // The events this request appends, per room (id, first offset):
        // stored together once the request is done.
        let mut runs: Vec<(u64, u64, Vec<Arc<StoredEvent>>)> = Vec::new();
        for new in events {
            if !self.rooms.contains_key(&new.room) {
                self.new_room(batch, &new.room, RoomConfig::default(), now)?;
            }
            let Some(meta) = self.rooms.get_mut(&new.room) else { unreachable!("room was created just above") };
            let dedup_key = new.dedup.then(|| keys::dedup(meta.id, &new.id));
            if let Some(key) = &dedup_key {
                if let Some(original) = batch.dedup_entry(self.store.tree(), key)? {
                    if original.timestamp.saturating_add(dedup_window) > now {
                        let (offset, timestamp) = (original.offset, original.timestamp);
                        published.push(Published { room: new.room.clone(), offset, timestamp, duplicate: true });
                        continue;
                    }
                }
            }
            let info = &mut meta.info;
            let offset = info.next_offset;
            let timestamp = now.max(info.last_event_at);
            info.next_offset += 1;
            info.last_event_at = timestamp;
            info.published_total += 1;
            let stored = Arc::new(StoredEvent {
                event_type: new.event_type.clone(),
                data: new.data.clone(),
                metadata: new.metadata.clone(),
                timestamp,
                id: new.id.clone(),
            });
            info.bytes_total += stored.payload_bytes();
            if let Some(limit) = self.byte_limits.get_mut(&meta.id) {
                limit.retained += stored.payload_bytes();
            }
            match runs.iter_mut().find(|(room_id, _, _)| *room_id == meta.id) {
                Some((_, _, run)) => run.push(stored.clone()),
                None => runs.push((meta.id, offset, vec![stored.clone()])),
            }
            if let Some(key) = dedup_key {
                let entry = DedupEntry { offset, timestamp };
                batch.batch.insert(keys::dedup_expiry(timestamp, meta.id, &new.id), Vec::new());
                batch.batch.insert(key.clone(), codec::encode(&entry)?);
                batch.dedup.insert(key, Some(entry));
            }
            published.push(Published { room: new.room.clone(), offset, timestamp, duplicate: false });
            batch.touched.push(new.room.clone());
            batch.appended.push((new.room.clone(), offset, stored));
        }
        for (room_id, first, run) in runs {
            self.store_events(batch, room_id, first, run)?;
        }
        let mut rooms: Vec<&str> = events.iter().map(|e| e.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        for name in rooms {
            self.trim(batch, name, now)?;
        }
        Ok(Reply::Published(published))
    }

    /// Writes consecutive events of a room from offset `first`: packed,
    /// as chunks of about [`CHUNK_BYTES`] (the split depends only on the
    /// events, so every node stores the same chunks); otherwise one record
    /// each.
    fn store_events(
        &mut self,
        batch: &mut ApplyBatch,
        room_id: u64,
        first: u64,
        events: Vec<Arc<StoredEvent>>,
    ) -> Result<(), StoreError> {
        let mut start = first;
        let mut rest = events.as_slice();
        while !rest.is_empty() {
            let count = if self.packed {
                let mut bytes = 0;
                let fits = rest.iter().take_while(|e| {
                    bytes += e.weight();
                    bytes <= CHUNK_BYTES
                });
                fits.count().clamp(1, u32::MAX as usize)
            } else {
                1
            };
            let (chunk, after) = rest.split_at(count);
            let key = chunk_key(room_id, start, count as u64);
            // One event keeps the single-event format (see `chunk_key`).
            let value = if count == 1 { codec::encode(&*chunk[0])? } else { codec::encode(chunk)? };
            batch.batch.insert_past_head(key, value);
            batch.chunks.insert((room_id, start), Some(Arc::new(chunk.to_vec())));
            start += count as u64;
            rest = after;
        }
        Ok(())
    }

    fn kv_set(
        &mut self,
        batch: &mut ApplyBatch,
        key: &str,
        value: &str,
        ttl_ms: Option<u64>,
        nx: bool,
        now: u64,
    ) -> Result<Reply, StoreError> {
        if nx && batch.kv_entry(self.store.tree(), key)?.is_some_and(|e| e.is_live(now)) {
            return Ok(Reply::KvSet { written: false });
        }
        let entry = KvEntry { value: value.to_owned(), expires_at: ttl_ms.map(|ttl| now.saturating_add(ttl)) };
        if let Some(at) = entry.expires_at {
            batch.batch.insert(keys::kv_expiry(at, key), Vec::new());
        }
        batch.batch.insert(keys::kv(key), codec::encode(&entry)?);
        batch.kv.insert(key.to_owned(), Some(entry));
        Ok(Reply::KvSet { written: true })
    }

    fn kv_delete(&mut self, batch: &mut ApplyBatch, key: &str, now: u64) -> Result<Reply, StoreError> {
        let existed = batch.kv_entry(self.store.tree(), key)?.is_some_and(|e| e.is_live(now));
        batch.batch.remove(keys::kv(key));
        batch.kv.insert(key.to_owned(), None);
        Ok(Reply::KvDeleted { existed })
    }

    /// Removes expired keys and dedup entries older than the window, at
    /// most `MAX_EXPIRE` of each per call. An index entry whose record was
    /// since overwritten (new expiry, id reused after the window) only
    /// removes itself.
    fn expire(&mut self, batch: &mut ApplyBatch, now: u64, dedup_window: u64) -> Result<Reply, StoreError> {
        let tree = self.store.tree();
        let mut removed = 0;
        for item in tree.scan_prefix(keys::KV_EXPIRY_PREFIX).take(MAX_EXPIRE) {
            let (index_key, _) = item?;
            let Some((at, key)) = keys::split_expiry(&index_key) else { continue };
            if at > now {
                break;
            }
            let key = String::from_utf8_lossy(key).into_owned();
            if batch.kv_entry(tree, &key)?.is_some_and(|e| e.expires_at == Some(at)) {
                batch.batch.remove(keys::kv(&key));
                batch.kv.insert(key, None);
                removed += 1;
            }
            batch.batch.remove(index_key);
        }
        for item in tree.scan_prefix(keys::DEDUP_EXPIRY_PREFIX).take(MAX_EXPIRE) {
            let (index_key, _) = item?;
            let Some((timestamp, rest)) = keys::split_expiry(&index_key) else { continue };
            if timestamp.saturating_add(dedup_window) > now {
                break;
            }
            let Some((room_id, id)) = rest.split_first_chunk::<8>() else { continue };
            let key = keys::dedup(u64::from_be_bytes(*room_id), &String::from_utf8_lossy(id));
            if batch.dedup_entry(tree, &key)?.is_some_and(|e| e.timestamp == timestamp) {
                batch.batch.remove(key.clone());
                batch.dedup.insert(key, None);
                removed += 1;
            }
            batch.batch.remove(index_key);
        }
        Ok(Reply::Expired { removed })
    }

    fn identify(&mut self, batch: &mut ApplyBatch, cluster: &str) -> Result<Reply, StoreError> {
        if let Some(pending) = &batch.cluster {
            return Ok(Reply::Identified { cluster: pending.clone() });
        }
        if let Some(existing) = self.store.cluster_id()? {
            return Ok(Reply::Identified { cluster: existing });
        }
        batch.batch.insert(keys::CLUSTER, codec::encode(cluster)?);
        batch.cluster = Some(cluster.to_owned());
        Ok(Reply::Identified { cluster: cluster.to_owned() })
    }

    fn register(&mut self, batch: &mut ApplyBatch, node: u64, incarnation: &str) -> Result<Reply, StoreError> {
        let recorded = match batch.incarnations.get(&node) {
            Some(pending) => Some(pending.clone()),
            None => self.store.incarnation(node)?,
        };
        let accepted = self.members.contains(&node) && recorded.as_deref().is_none_or(|r| r == incarnation);
        if accepted && recorded.is_none() {
            batch.batch.insert(keys::incarnation(node), codec::encode(incarnation)?);
            batch.incarnations.insert(node, incarnation.to_owned());
        }
        Ok(Reply::Registered { accepted })
    }

    /// Applies age retention to every room that has it, so that rooms
    /// nobody publishes to lose their old events too. Only rooms that lost
    /// events are written (and told to subscribers).
    fn trim_aged(&mut self, batch: &mut ApplyBatch, now: u64) -> Result<Reply, StoreError> {
        let mut aged: Vec<String> =
            self.rooms.values().filter(|m| m.info.config.max_age_secs.is_some()).map(|m| m.info.name.clone()).collect();
        aged.sort_unstable();
        let mut removed = 0;
        for name in aged {
            let trimmed = self.trim_room(batch, &name, now, false)?;
            if trimmed > 0 {
                removed += trimmed;
                batch.touched.push(name);
            }
        }
        Ok(Reply::Trimmed { removed })
    }

    /// Applies the room's retention limits and persists its metadata.
    fn trim(&mut self, batch: &mut ApplyBatch, name: &str, now: u64) -> Result<(), StoreError> {
        self.trim_room(batch, name, now, true).map(|_| ())
    }

    /// Applies the room's retention limits; persists its metadata if
    /// anything was trimmed, or `always`. Returns how many events went.
    ///
    /// The new start is found first (count, then age, then bytes), then
    /// the whole records below it go; one that straddles it stays (reads
    /// skip what is below `min_offset`). Events of this same batch are not
    /// in the tree yet, and how entries are grouped into batches differs
    /// between nodes, so the batch is asked first (`span_at`,
    /// `span_values`).
    fn trim_room(&mut self, batch: &mut ApplyBatch, name: &str, now: u64, always: bool) -> Result<u64, StoreError> {
        let tree = self.store.tree();
        let Some(meta) = self.rooms.get_mut(name) else {
            return Ok(0);
        };
        let (id, before, next) = (meta.id, meta.info.min_offset, meta.info.next_offset);
        let config = &meta.info.config;
        let mut min = before;
        if let Some(max) = config.max_events {
            min = min.max(next.saturating_sub(max));
        }
        if let Some(max_age) = config.max_age_secs {
            let cutoff = now.saturating_sub(max_age.saturating_mul(1000));
            while min < next {
                let Some(span) = batch.span_at(tree, id, min)? else { break };
                let timestamps = batch.span_values(tree, id, &span, |e| e.timestamp)?;
                let skip = (min - span.first) as usize;
                min += timestamps.iter().skip(skip).take_while(|t| **t < cutoff).count() as u64;
                if min < span.end() {
                    break;
                }
            }
        }
        if let Some(limit) = self.byte_limits.get_mut(&id) {
            limit.retained = limit.retained.saturating_sub(batch.payload_bytes_between(tree, id, before, min)?);
            // The newest event stays, even alone over the limit.
            while min + 1 < next && limit.retained > limit.max_bytes {
                let start = min;
                let Some(span) = batch.span_at(tree, id, min)? else { break };
                let sizes = batch.span_values(tree, id, &span, StoredEvent::payload_bytes)?;
                for size in sizes.iter().skip((min - span.first) as usize) {
                    if limit.retained <= limit.max_bytes || min + 1 >= next {
                        break;
                    }
                    limit.retained = limit.retained.saturating_sub(*size);
                    min += 1;
                }
                if min == start {
                    break; // a span without readable events: nothing to count
                }
            }
            batch.batch.insert(keys::byte_limit(id), codec::encode(&*limit)?);
        }
        let mut at = before;
        while at < min {
            let Some(span) = batch.span_at(tree, id, at)? else { break };
            if span.end() > min {
                break;
            }
            batch.remove_span(id, &span);
            at = span.end();
        }
        meta.info.min_offset = min;
        let trimmed = min - before;
        if trimmed > 0 || always {
            batch.batch.insert(keys::room(name), codec::encode(&*meta)?);
        }
        Ok(trimmed)
    }

    /// Removes the events of deleted rooms (their tombstones say which),
    /// outside the apply batch: they are unreachable already, so a crash
    /// halfway only leaves work for the next start.
    fn purge_deleted_rooms(&self) -> Result<(), StoreError> {
        let tree = self.store.tree();
        for key in tree.scan_prefix(keys::TOMBSTONE_PREFIX).keys() {
            let key = key?;
            let Some(room_id) = keys::tombstone_room(&key) else {
                continue;
            };
            let mut removal = Writes::default();
            for event_key in tree.scan_prefix(keys::room_events(room_id)).keys() {
                removal.remove(event_key?);
            }
            removal.remove(key);
            self.store.write(removal)?;
        }
        Ok(())
    }
}

/// The key of `count` events of a room from `first`: a single event keeps
/// the key it had before packing.
fn chunk_key(room_id: u64, first: u64, count: u64) -> Vec<u8> {
    match u32::try_from(count) {
        Ok(1) => keys::event(room_id, first).to_vec(),
        Ok(count) => keys::chunk(room_id, first, count).to_vec(),
        // A request holds far fewer events than u32::MAX.
        Err(_) => keys::chunk(room_id, first, u32::MAX).to_vec(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod determinism;
