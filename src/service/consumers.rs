//! Durable consumers: named positions in a room that the cluster keeps,
//! leases with redelivery, acks and dead letters (`docs/api.md`,
//! "Durable consumers").
//!
//! Every operation is a write through Raft, the fetch included: the
//! lease it takes is replicated state, so workers on any node never hold
//! live leases on one message at once, even across leader changes. A fetch
//! that finds nothing waits here, on the node the client asked, watching
//! its own applied state, and proposes a lease only once something looks
//! deliverable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{write, ServiceError};
use crate::clock;
use crate::command::{ConsumerConfig, Gap, Lease, Rejection, Reply, Request, CONSUMERS_PROTOCOL};
use crate::filter::TypeFilter;
use crate::node::{Node, WriteError};
use crate::protocol::ConsumerInfo;
use crate::store::{ConsumerRecord, RoomMeta, StoredEvent, MAX_PAGE};

/// After a lease that found nothing although something looked due (a
/// clock ahead of the leader's, another worker quicker), the next attempt
/// waits this long at least.
const EMPTY_LEASE_PAUSE: Duration = Duration::from_millis(20);

/// One leased message and its event.
#[derive(Debug, Clone)]
pub struct Message {
    /// Offset and delivery count.
    pub lease: Lease,
    /// The event.
    pub event: StoredEvent,
}

/// What a fetch got.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The leased messages, in the order to process them.
    pub messages: Vec<Message>,
    /// Offsets retention removed before they could be delivered.
    pub missed: Vec<Gap>,
}

/// The consumer operations of one node. Cheap to clone.
#[derive(Clone)]
pub struct Consumers {
    node: Arc<Node>,
}

impl Consumers {
    /// Consumer operations through `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Writes a consumer request once every member can apply it: the
    /// state says so (recorded once all members reported it, so a member
    /// that is down later does not stop consumers), or, before that is
    /// recorded, every member says so now.
    async fn write(&self, request: Request) -> Result<Reply, ServiceError> {
        let recorded = self.node.store.protocol()? >= CONSUMERS_PROTOCOL;
        if !recorded && !self.node.all_members_speak(CONSUMERS_PROTOCOL).await {
            return Err(WriteError::Unavailable(format!(
                "durable consumers need every member to speak protocol {CONSUMERS_PROTOCOL}: finish the upgrade"
            ))
            .into());
        }
        write(&self.node, request).await
    }

    /// Creates the consumer or replaces its settings; says whether it
    /// created it.
    pub async fn put(&self, room: &str, name: &str, config: ConsumerConfig) -> Result<bool, ServiceError> {
        let create_missing = self.node.config.auto_create_rooms;
        let request = Request::PutConsumer { room: room.into(), name: name.into(), config, create_missing };
        match self.write(request).await? {
            Reply::Consumer { created } => Ok(created),
            other => Err(ServiceError::unexpected("consumer put", other)),
        }
    }

    /// Deletes the consumer.
    pub async fn delete(&self, room: &str, name: &str) -> Result<(), ServiceError> {
        match self.write(Request::DeleteConsumer { room: room.into(), name: name.into() }).await? {
            Reply::ConsumerDeleted => Ok(()),
            other => Err(ServiceError::unexpected("consumer delete", other)),
        }
    }

    /// The consumer as this node has applied it.
    pub fn info(&self, room: &str, name: &str) -> Result<ConsumerInfo, ServiceError> {
        let meta = self.room(room)?;
        let record = self.record(&meta, name)?;
        self.describe(&meta, record)
    }

    /// Every consumer of `room`, by name.
    pub fn list(&self, room: &str) -> Result<Vec<ConsumerInfo>, ServiceError> {
        let meta = self.room(room)?;
        let records = self.node.store.consumers(meta.id)?;
        records.into_iter().map(|record| self.describe(&meta, record)).collect()
    }

    /// Leases up to `max` messages, waiting up to `wait` for one.
    pub async fn fetch(&self, room: &str, name: &str, max: u32, wait: Duration) -> Result<Fetched, ServiceError> {
        let deadline = Instant::now() + wait;
        let mut applied = self.node.applied_index();
        // Offsets up to here were found not to match the filter.
        let mut scanned_to = 0;
        loop {
            let meta = self.room(room)?;
            let record = self.record(&meta, name)?;
            let now = clock::wall_ms();
            let (due, checked) = self.deliverable(&meta, &record, now, scanned_to)?;
            scanned_to = checked;
            if due || wait.is_zero() {
                let request = Request::Lease { room: room.into(), name: name.into(), max };
                let (leases, missed) = match self.write(request).await? {
                    Reply::Leased { messages, missed } => (messages, missed),
                    other => return Err(ServiceError::unexpected("fetch", other)),
                };
                if !leases.is_empty() || !missed.is_empty() || Instant::now() >= deadline {
                    let messages = self.read_messages(&meta, &leases)?;
                    return Ok(Fetched { messages, missed });
                }
                tokio::time::sleep(EMPTY_LEASE_PAUSE.min(deadline.saturating_duration_since(Instant::now()))).await;
                continue;
            }
            if Instant::now() >= deadline {
                return Ok(Fetched::default());
            }
            // Until the state changes, a lease ends or the wait is over.
            let lease_end = record.next_lease_end().map(|at| Duration::from_millis(at.saturating_sub(now)));
            let until = lease_end.map_or(deadline, |d| deadline.min(Instant::now() + d));
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Acks `offsets`; answers how many were pending.
    pub async fn ack(&self, room: &str, name: &str, offsets: Vec<u64>) -> Result<u64, ServiceError> {
        self.settle(Request::Ack { room: room.into(), name: name.into(), offsets }).await
    }

    /// Makes `offsets` deliverable again after `delay`; answers how many
    /// were pending.
    pub async fn nak(&self, room: &str, name: &str, offsets: Vec<u64>, delay: Duration) -> Result<u64, ServiceError> {
        let delay_ms = delay.as_millis().min(u128::from(u64::MAX)) as u64;
        self.settle(Request::Nak { room: room.into(), name: name.into(), offsets, delay_ms }).await
    }

    async fn settle(&self, request: Request) -> Result<u64, ServiceError> {
        match self.write(request).await? {
            Reply::Settled { count } => Ok(count),
            other => Err(ServiceError::unexpected("ack", other)),
        }
    }

    fn room(&self, room: &str) -> Result<RoomMeta, ServiceError> {
        Ok(self.node.store.room(room)?.ok_or_else(|| Rejection::RoomNotFound(room.to_owned()))?)
    }

    fn record(&self, meta: &RoomMeta, name: &str) -> Result<ConsumerRecord, ServiceError> {
        let record = self.node.store.consumer(meta.id, name)?;
        Ok(record.ok_or_else(|| Rejection::ConsumerNotFound(meta.info.name.clone(), name.to_owned()))?)
    }

    fn describe(&self, meta: &RoomMeta, record: ConsumerRecord) -> Result<ConsumerInfo, ServiceError> {
        let from = record.cursor.max(meta.info.min_offset);
        let end = meta.info.next_offset;
        let unread = match record.config.types.as_deref().map(TypeFilter::parse) {
            Some(Ok(filter)) if from < end => {
                self.node.store.count_matching(meta.id, from, end, |t| filter.matches(t))?
            }
            _ => end.saturating_sub(from),
        };
        Ok(ConsumerInfo::new(&meta.info.name, record, unread))
    }

    /// Whether a lease at `now` would find something: an ended lease, a
    /// gap to report, or a matching event past the cursor (looked for
    /// from `scanned_to` on). Also answers how far it looked.
    fn deliverable(
        &self,
        meta: &RoomMeta,
        record: &ConsumerRecord,
        now: u64,
        scanned_to: u64,
    ) -> Result<(bool, u64), ServiceError> {
        let info = &meta.info;
        if record.pending.values().any(|p| p.lease_until <= now) || record.cursor < info.min_offset {
            return Ok((true, scanned_to));
        }
        let room_for_more = (record.pending.len() as u64) < u64::from(record.config.max_ack_pending);
        if !room_for_more || record.cursor >= info.next_offset {
            return Ok((false, scanned_to));
        }
        let filter = match record.config.types.as_deref().map(TypeFilter::parse) {
            Some(Ok(filter)) => filter,
            _ => return Ok((true, scanned_to)),
        };
        let from = record.cursor.max(scanned_to);
        let page = self.node.store.read_range(meta.id, from, info.next_offset, 1, |t| filter.matches(t))?;
        Ok((!page.events.is_empty(), page.next_offset))
    }

    /// The events of `leases`, in lease order; a message retention removed
    /// since its lease is left out (the next lease reports it missed).
    fn read_messages(&self, meta: &RoomMeta, leases: &[Lease]) -> Result<Vec<Message>, ServiceError> {
        let mut offsets: Vec<u64> = leases.iter().map(|l| l.offset).collect();
        offsets.sort_unstable();
        let mut events = HashMap::with_capacity(offsets.len());
        let mut i = 0;
        while i < offsets.len() {
            // One read per run of consecutive offsets.
            let start = offsets[i];
            let mut end = start + 1;
            while i + 1 < offsets.len() && offsets[i + 1] == end {
                end += 1;
                i += 1;
            }
            i += 1;
            let mut at = start;
            while at < end {
                let page = self.node.store.read_range(meta.id, at, end, MAX_PAGE, |_| true)?;
                for record in page.events {
                    events.insert(record.offset, record.event);
                }
                at = page.next_offset.max(at + 1);
            }
        }
        Ok(leases
            .iter()
            .filter_map(|lease| events.remove(&lease.offset).map(|event| Message { lease: *lease, event }))
            .collect())
    }
}
