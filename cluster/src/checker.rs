//! Checks a run against the guarantees of `docs/architecture.md`, from the operations the workload
//! recorded and the history every node serves after the faults healed.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use synap::client::Event;

use crate::workload::{Outcome, PublishOp, SubscriberLog};

/// What kind of guarantee was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An acknowledged publish is missing or not at its offset.
    LostAck,
    /// Nodes disagree about an offset.
    Divergence,
    /// A room's offsets on a node are not 0, 1, 2, ...
    NotDense,
    /// Acknowledged publishes got offsets against real-time order.
    Order,
    /// A publish (id retries, or an unknown outcome) appears twice.
    Duplicate,
    /// A publish the cluster said it did not write appears.
    FailedAppeared,
    /// A subscriber's stream skipped, repeated, reordered or changed events.
    Subscriber,
    /// Nodes did not converge in time after healing.
    Convergence,
    /// A node could not be read at the end (it stopped, or refused to run).
    NodeDown,
}

/// One broken guarantee, with an example.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which guarantee.
    pub kind: Kind,
    /// What was seen.
    pub detail: String,
}

/// Every node's history: room → node id → events.
pub type Histories = BTreeMap<String, BTreeMap<u64, Vec<Event>>>;

fn op_of(event: &Event) -> Option<&str> {
    event.data.get("op").and_then(Value::as_str)
}

/// Checks everything; returns the violations found (none is a pass).
pub fn check(ops: &[PublishOp], histories: &Histories, subscribers: &[SubscriberLog]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut push = |kind, detail: String| violations.push(Violation { kind, detail });

    // Per room: dense on each node, identical across nodes.
    let mut reference: BTreeMap<&str, &Vec<Event>> = BTreeMap::new();
    for (room, per_node) in histories {
        let mut first: Option<(u64, &Vec<Event>)> = None;
        for (node, events) in per_node {
            if let Some((i, e)) = events.iter().enumerate().find(|(i, e)| e.offset != *i as u64) {
                push(Kind::NotDense, format!("{room} on node {node}: position {i} holds offset {}", e.offset));
            }
            match first {
                None => first = Some((*node, events)),
                Some((first_node, first_events)) => {
                    let differs = first_events.iter().zip(events).find(|(a, b)| a != b);
                    if let Some((a, b)) = differs {
                        push(
                            Kind::Divergence,
                            format!("{room}@{}: node {first_node} has {}, node {node} has {}", a.offset, a.id, b.id),
                        );
                    } else if first_events.len() != events.len() {
                        push(
                            Kind::Divergence,
                            format!(
                                "{room}: node {first_node} holds {} events, node {node} {}",
                                first_events.len(),
                                events.len()
                            ),
                        );
                    }
                }
            }
        }
        if let Some((_, events)) = first {
            reference.insert(room, events);
        }
    }

    // Where each op marker landed, per room.
    let mut landed: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for (room, events) in &reference {
        for event in events.iter() {
            if let Some(op) = op_of(event) {
                landed.entry((room, op)).or_default().push(event.offset);
            }
        }
    }
    for op in ops {
        let found = landed.get(&(op.room.as_str(), op.op.as_str())).map(Vec::as_slice).unwrap_or(&[]);
        if found.len() > 1 {
            let what = if op.id.is_some() { "publish with an id" } else { "publish" };
            push(Kind::Duplicate, format!("{what} {} in {} appears at offsets {found:?}", op.op, op.room));
        }
        match &op.outcome {
            Outcome::Ok { offset } if !found.contains(offset) => push(
                Kind::LostAck,
                format!("{} acknowledged at {}@{offset}, history has it at {found:?}", op.op, op.room),
            ),
            Outcome::Failed(why) if !found.is_empty() => push(
                Kind::FailedAppeared,
                format!("{} was refused ({why}) yet appears at {}@{found:?}", op.op, op.room),
            ),
            _ => {}
        }
    }

    // Real-time order: an acknowledgement that came before another publish
    // was sent must have the lower offset (same room).
    let mut by_room: BTreeMap<&str, Vec<(&PublishOp, u64)>> = BTreeMap::new();
    for op in ops {
        if let Outcome::Ok { offset } = op.outcome {
            by_room.entry(op.room.as_str()).or_default().push((op, offset));
        }
    }
    for (room, mut acked) in by_room {
        let mut by_completion = acked.clone();
        by_completion.sort_by_key(|(op, _)| op.completed);
        acked.sort_by_key(|(op, _)| op.invoked);
        let (mut i, mut max_before): (usize, Option<(&PublishOp, u64)>) = (0, None);
        for (op, offset) in &acked {
            while i < by_completion.len() && by_completion[i].0.completed < op.invoked {
                if max_before.is_none_or(|(_, m)| by_completion[i].1 > m) {
                    max_before = Some(by_completion[i]);
                }
                i += 1;
            }
            if let Some((earlier, earlier_offset)) = max_before {
                if earlier_offset >= *offset {
                    push(
                        Kind::Order,
                        format!(
                            "{room}: {} was acknowledged at offset {earlier_offset} before {} was sent, which got {offset}",
                            earlier.op, op.op
                        ),
                    );
                }
            }
        }
    }

    // Subscribers: consecutive offsets from where they started, each equal
    // to history.
    for sub in subscribers {
        let Some(history) = reference.get(sub.room.as_str()) else {
            if !sub.received.is_empty() {
                push(Kind::Subscriber, format!("{} received events of {}, which has no history", sub.name, sub.room));
            }
            continue;
        };
        let mut expected_next = sub.received.first().map(|(o, _)| *o).unwrap_or(0);
        for (offset, value) in &sub.received {
            if *offset != expected_next {
                let what = if *offset < expected_next { "repeated or went back to" } else { "skipped to" };
                push(
                    Kind::Subscriber,
                    format!("{} on {}: expected offset {expected_next}, {what} {offset}", sub.name, sub.room),
                );
                break;
            }
            expected_next = offset + 1;
            let mut received = value.clone();
            if let Some(object) = received.as_object_mut() {
                object.remove("type");
            }
            let in_history = history.get(*offset as usize).map(|e| serde_json::to_value(e).unwrap_or(Value::Null));
            if in_history.as_ref() != Some(&received) {
                push(
                    Kind::Subscriber,
                    format!("{} on {}@{offset}: received {received}, history has {in_history:?}", sub.name, sub.room),
                );
                break;
            }
        }
        if !sub.gaps.is_empty() {
            push(Kind::Subscriber, format!("{} got gap notices {:?} in a room without retention", sub.name, sub.gaps));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;

    fn event(room: &str, offset: u64, op: &str) -> Event {
        Event {
            offset,
            room: room.into(),
            event: "chaos.publish".into(),
            data: json!({ "op": op }),
            metadata: json!({}),
            timestamp: 1000 + offset,
            id: format!("id-{op}"),
        }
    }

    fn op(name: &str, outcome: Outcome, invoked_ms: u64, completed_ms: u64, base: Instant) -> PublishOp {
        PublishOp {
            op: name.into(),
            room: "r".into(),
            id: None,
            invoked: base + Duration::from_millis(invoked_ms),
            completed: base + Duration::from_millis(completed_ms),
            attempts: 1,
            outcome,
        }
    }

    fn histories(nodes: &[(u64, Vec<Event>)]) -> Histories {
        let mut rooms = Histories::new();
        for (node, events) in nodes {
            rooms.entry("r".into()).or_default().insert(*node, events.clone());
        }
        rooms
    }

    fn kinds(v: &[Violation]) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = v.iter().map(|v| v.kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    #[test]
    fn a_clean_run_passes() {
        let t = Instant::now();
        let h = vec![event("r", 0, "a"), event("r", 1, "b"), event("r", 2, "c")];
        let ops = vec![
            op("a", Outcome::Ok { offset: 0 }, 0, 10, t),
            op("b", Outcome::Ok { offset: 1 }, 20, 30, t),
            op("c", Outcome::Unknown("timeout".into()), 40, 50, t),
            op("d", Outcome::Failed("refused".into()), 60, 70, t),
        ];
        let subs = vec![SubscriberLog {
            name: "ws-0".into(),
            room: "r".into(),
            received: h.iter().map(|e| (e.offset, serde_json::to_value(e).unwrap())).collect(),
            gaps: vec![],
            error: None,
        }];
        let v = check(&ops, &histories(&[(1, h.clone()), (2, h)]), &subs);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn each_broken_guarantee_is_reported() {
        let t = Instant::now();
        let good = vec![event("r", 0, "a"), event("r", 1, "b"), event("r", 2, "b")];
        let other = vec![event("r", 0, "a"), event("r", 1, "x"), event("r", 2, "b")];
        let ops = vec![
            op("a", Outcome::Ok { offset: 0 }, 100, 110, t),
            // Acknowledged at 1 but the history has it at 1 and 2 (dup).
            op("b", Outcome::Ok { offset: 1 }, 200, 210, t),
            // Acknowledged but absent.
            op("lost", Outcome::Ok { offset: 5 }, 300, 310, t),
            // Refused, yet present on the other node's history? (checked on
            // the reference history: the first node's).
            op("x", Outcome::Failed("refused".into()), 0, 1, t),
            // Sent after "a" was acknowledged, yet a lower offset.
            op("early", Outcome::Ok { offset: 0 }, 120, 130, t),
        ];
        let subs = vec![SubscriberLog {
            name: "sse-1".into(),
            room: "r".into(),
            received: vec![(0, serde_json::to_value(&good[0]).unwrap()), (2, serde_json::to_value(&good[2]).unwrap())],
            gaps: vec![],
            error: None,
        }];
        let v = check(&ops, &histories(&[(1, good), (2, other)]), &subs);
        assert_eq!(
            kinds(&v),
            vec![Kind::LostAck, Kind::Divergence, Kind::Order, Kind::Duplicate, Kind::Subscriber],
            "{v:#?}"
        );
    }

    #[test]
    fn holes_and_refused_writes_are_reported() {
        let t = Instant::now();
        let h = vec![event("r", 0, "a"), event("r", 2, "refused")];
        let ops = vec![op("refused", Outcome::Failed("no leader available".into()), 0, 5, t)];
        let v = check(&ops, &histories(&[(1, h)]), &[]);
        assert_eq!(kinds(&v), vec![Kind::NotDense, Kind::FailedAppeared], "{v:#?}");
    }
}
