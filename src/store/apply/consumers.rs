//! Durable consumers in the state machine: creating them, leasing
//! messages, acks, naks and dead letters.
//!
//! Everything here is decided at apply time from the command and the
//! state, so every node leases the same messages to the same fetch: a
//! lease is part of the replicated state, which is why two live leases on
//! one message never exist, whichever node a worker asks and across leader
//! changes. Lease ends are judged by command timestamps (cluster time).

use std::sync::Arc;

use super::{Applier, ApplyBatch};
use crate::command::{ConsumerConfig, ConsumerStart, Gap, Lease, NewEvent, Rejection, Reply, RoomConfig};
use crate::filter::TypeFilter;
use crate::store::{keys, ConsumerRecord, Pending, StoreError, StoredEvent};

/// Most events one lease looks at past the cursor: a filtered consumer
/// far behind in a room of other events moves on over several fetches
/// rather than reading the whole room inside one apply.
const MAX_EXAMINED: u64 = 10_000;

/// A consumer as the applier holds it: the record and its parsed filter.
pub(super) struct LiveConsumer {
    pub(super) record: ConsumerRecord,
    filter: TypeFilter,
}

impl LiveConsumer {
    pub(super) fn new(record: ConsumerRecord) -> Self {
        // The API parses the filter before it proposes it; a filter that
        // would not parse here (none does) lets everything through, alike
        // on every node.
        let filter = record.config.types.as_deref().and_then(|t| TypeFilter::parse(t).ok()).unwrap_or_default();
        Self { record, filter }
    }
}

/// A message whose last lease ended with its deliveries used up.
struct OutOfDeliveries {
    offset: u64,
    deliveries: u32,
}

impl ApplyBatch {
    /// The events of `room_id` at offsets `[from, end)`, as this batch
    /// would leave them; stops early at an offset that holds nothing.
    fn events_between(
        &self,
        tree: &sled::Tree,
        room_id: u64,
        from: u64,
        end: u64,
    ) -> Result<Vec<(u64, Arc<StoredEvent>)>, StoreError> {
        let mut events = Vec::new();
        let mut at = from;
        while at < end {
            let Some(span) = self.span_at(tree, room_id, at)? else { break };
            let chunk: Vec<Arc<StoredEvent>> = match self.chunks.get(&(room_id, span.first)) {
                Some(Some(pending)) => pending.iter().cloned().collect(),
                _ => match tree.get(&span.key)? {
                    Some(value) => super::super::decode_events(&span.key, &value)?.into_iter().map(Arc::new).collect(),
                    None => break,
                },
            };
            for (offset, event) in (span.first..).zip(chunk) {
                if offset >= at && offset < end {
                    events.push((offset, event));
                }
            }
            at = span.end();
        }
        Ok(events)
    }
}

impl Applier {
    pub(super) fn put_consumer(
        &mut self,
        batch: &mut ApplyBatch,
        room: &str,
        name: &str,
        config: &ConsumerConfig,
        create_missing: bool,
        now: u64,
    ) -> Result<Reply, StoreError> {
        if !self.rooms.contains_key(room) {
            if !create_missing {
                return Ok(Reply::Rejected(Rejection::RoomNotFound(room.to_owned())));
            }
            self.new_room(batch, room, RoomConfig::default(), now)?;
        }
        let Some(meta) = self.rooms.get(room) else { unreachable!("the room exists or was created just above") };
        let key = (meta.id, name.to_owned());
        batch.consumers.insert(key.clone());
        if let Some(existing) = self.consumers.get_mut(&key) {
            // The position stays: `start` only means something at creation.
            let config = ConsumerConfig { start: existing.record.config.start, ..config.clone() };
            *existing = LiveConsumer::new(ConsumerRecord { config, ..existing.record.clone() });
            return Ok(Reply::Consumer { created: false });
        }
        let cursor = match config.start {
            ConsumerStart::Earliest => meta.info.min_offset,
            ConsumerStart::Latest => meta.info.next_offset,
            ConsumerStart::Offset(offset) => offset,
        };
        let record = ConsumerRecord {
            name: name.to_owned(),
            config: config.clone(),
            created_at: now,
            cursor,
            pending: Default::default(),
            delivered: 0,
            redelivered: 0,
            acked: 0,
            dead_lettered: 0,
            dropped: 0,
            missed: 0,
        };
        self.consumers.insert(key, LiveConsumer::new(record));
        Ok(Reply::Consumer { created: true })
    }

    pub(super) fn delete_consumer(&mut self, batch: &mut ApplyBatch, room: &str, name: &str) -> Reply {
        let Some(meta) = self.rooms.get(room) else {
            return Reply::Rejected(Rejection::RoomNotFound(room.to_owned()));
        };
        let key = (meta.id, name.to_owned());
        if self.consumers.remove(&key).is_none() {
            return Reply::Rejected(Rejection::ConsumerNotFound(room.to_owned(), name.to_owned()));
        }
        batch.batch.remove(keys::consumer(meta.id, name));
        batch.consumers.remove(&key);
        Reply::ConsumerDeleted
    }

    /// Forgets the consumers of a deleted room (in `batch`).
    pub(super) fn drop_consumers_of(&mut self, batch: &mut ApplyBatch, room_id: u64) {
        let gone: Vec<(u64, String)> = self.consumers.keys().filter(|(id, _)| *id == room_id).cloned().collect();
        for key in gone {
            batch.batch.remove(keys::consumer(room_id, &key.1));
            batch.consumers.remove(&key);
            self.consumers.remove(&key);
        }
    }

    pub(super) fn lease(
        &mut self,
        batch: &mut ApplyBatch,
        room: &str,
        name: &str,
        max: u32,
        now: u64,
        dedup_window: u64,
    ) -> Result<Reply, StoreError> {
        let Some(meta) = self.rooms.get(room) else {
            return Ok(Reply::Rejected(Rejection::RoomNotFound(room.to_owned())));
        };
        let (room_id, min_offset, next_offset) = (meta.id, meta.info.min_offset, meta.info.next_offset);
        let key = (room_id, name.to_owned());
        let Some(consumer) = self.consumers.get_mut(&key) else {
            return Ok(Reply::Rejected(Rejection::ConsumerNotFound(room.to_owned(), name.to_owned())));
        };
        batch.consumers.insert(key.clone());
        let record = &mut consumer.record;
        let config = record.config.clone();
        let lease_until = now.saturating_add(config.ack_wait_ms);

        // What retention took before it was done is missed, and said so.
        let mut missed = Vec::new();
        let trimmed: Vec<u64> = record.pending.range(..min_offset).map(|(offset, _)| *offset).collect();
        for offset in trimmed {
            record.pending.remove(&offset);
            record.missed += 1;
            push_gap(&mut missed, offset, offset + 1);
        }
        if record.cursor < min_offset {
            record.missed += min_offset - record.cursor;
            push_gap(&mut missed, record.cursor, min_offset);
            record.cursor = min_offset;
        }

        // Ended leases first, in offset order: redelivered, or out of
        // deliveries.
        let max = max as usize;
        let mut messages = Vec::new();
        let mut exhausted = Vec::new();
        for (offset, pending) in record.pending.iter_mut().filter(|(_, p)| p.lease_until <= now) {
            if config.max_deliver > 0 && pending.deliveries >= config.max_deliver {
                exhausted.push(OutOfDeliveries { offset: *offset, deliveries: pending.deliveries });
            } else if messages.len() < max {
                pending.deliveries += 1;
                pending.lease_until = lease_until;
                messages.push(Lease { offset: *offset, delivery: pending.deliveries });
            }
        }
        for gone in &exhausted {
            record.pending.remove(&gone.offset);
        }
        record.redelivered += messages.len() as u64;

        // Then new events from the cursor, while fewer than
        // `max_ack_pending` are out.
        let room_limit = config.max_ack_pending as usize;
        let wanted = max.saturating_sub(messages.len()).min(room_limit.saturating_sub(record.pending.len()));
        if wanted > 0 && record.cursor < next_offset {
            let end = next_offset.min(record.cursor.saturating_add(MAX_EXAMINED));
            let fresh: Vec<u64> = if consumer.filter.is_empty() {
                (record.cursor..end).take(wanted).collect()
            } else {
                let events = batch.events_between(self.store.tree(), room_id, record.cursor, end)?;
                let mut fresh = Vec::new();
                let mut examined_to = end;
                for (offset, event) in events {
                    if fresh.len() == wanted {
                        examined_to = offset;
                        break;
                    }
                    if consumer.filter.matches(&event.event_type) {
                        fresh.push(offset);
                    }
                }
                record.cursor = examined_to;
                fresh
            };
            if let Some(last) = fresh.last() {
                record.cursor = record.cursor.max(last + 1);
            }
            for offset in fresh {
                record.pending.insert(offset, Pending { deliveries: 1, lease_until });
                messages.push(Lease { offset, delivery: 1 });
            }
        }
        record.delivered += messages.len() as u64;

        let dead_letter = config.dead_letter.filter(|dl| dl != room);
        for gone in exhausted {
            self.out_of_deliveries(batch, room, room_id, name, dead_letter.as_deref(), gone, now, dedup_window)?;
        }
        Ok(Reply::Leased { messages, missed })
    }

    /// Publishes a message out of deliveries to the dead-letter room (or
    /// drops it), and counts it.
    #[allow(clippy::too_many_arguments)]
    fn out_of_deliveries(
        &mut self,
        batch: &mut ApplyBatch,
        room: &str,
        room_id: u64,
        name: &str,
        dead_letter: Option<&str>,
        gone: OutOfDeliveries,
        now: u64,
        dedup_window: u64,
    ) -> Result<(), StoreError> {
        let event = batch.events_between(self.store.tree(), room_id, gone.offset, gone.offset + 1)?.pop();
        let outcome = match (dead_letter, event) {
            (_, None) => Outcome::Missed,
            (None, Some(_)) => Outcome::Dropped,
            (Some(target), Some((_, event))) => {
                let metadata =
                    dead_letter_metadata(event.metadata.as_deref(), room, gone.offset, name, gone.deliveries);
                let moved = NewEvent {
                    room: target.to_owned(),
                    event_type: event.event_type.clone(),
                    data: event.data.clone(),
                    metadata: Some(metadata),
                    // Decided alike on every node, unique per message.
                    id: format!("dead-letter:{room_id}:{}:{name}", gone.offset),
                    dedup: false,
                };
                self.publish(batch, &[moved], true, now, dedup_window)?;
                Outcome::DeadLettered
            }
        };
        let key = (room_id, name.to_owned());
        if let Some(consumer) = self.consumers.get_mut(&key) {
            let record = &mut consumer.record;
            match outcome {
                Outcome::Missed => record.missed += 1,
                Outcome::Dropped => record.dropped += 1,
                Outcome::DeadLettered => record.dead_lettered += 1,
            }
        }
        Ok(())
    }

    /// Acks (`delay_ms` None) or naks `offsets`.
    pub(super) fn settle(
        &mut self,
        batch: &mut ApplyBatch,
        room: &str,
        name: &str,
        offsets: &[u64],
        nak_delay_ms: Option<u64>,
        now: u64,
    ) -> Reply {
        let Some(meta) = self.rooms.get(room) else {
            return Reply::Rejected(Rejection::RoomNotFound(room.to_owned()));
        };
        let key = (meta.id, name.to_owned());
        let Some(consumer) = self.consumers.get_mut(&key) else {
            return Reply::Rejected(Rejection::ConsumerNotFound(room.to_owned(), name.to_owned()));
        };
        let record = &mut consumer.record;
        let mut count = 0;
        for offset in offsets {
            match nak_delay_ms {
                None => {
                    if record.pending.remove(offset).is_some() {
                        record.acked += 1;
                        count += 1;
                    }
                }
                Some(delay) => {
                    if let Some(pending) = record.pending.get_mut(offset) {
                        pending.lease_until = now.saturating_add(delay);
                        count += 1;
                    }
                }
            }
        }
        if count > 0 {
            batch.consumers.insert(key);
        }
        Reply::Settled { count }
    }
}

enum Outcome {
    Missed,
    Dropped,
    DeadLettered,
}

/// Adds `[from, to)` to `gaps`, joining it to the last gap when they touch.
fn push_gap(gaps: &mut Vec<Gap>, from: u64, to: u64) {
    match gaps.last_mut() {
        Some(last) if last.to == from => last.to = to,
        _ => gaps.push(Gap { from, to }),
    }
}

/// The metadata of a dead-lettered message: the original's, plus where it
/// came from and how often it was tried (string values, like all metadata
/// the SDKs send).
fn dead_letter_metadata(original: Option<&str>, room: &str, offset: u64, consumer: &str, deliveries: u32) -> String {
    let mut metadata = original
        .and_then(|text| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).ok())
        .unwrap_or_default();
    metadata.insert("dead_letter_room".into(), room.into());
    metadata.insert("dead_letter_offset".into(), offset.to_string().into());
    metadata.insert("dead_letter_consumer".into(), consumer.into());
    metadata.insert("dead_letter_deliveries".into(), deliveries.to_string().into());
    serde_json::Value::Object(metadata).to_string()
}
