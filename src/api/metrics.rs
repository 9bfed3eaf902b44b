//! `GET /metrics`: Prometheus text exposition of the node's state, read at
//! scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::AppState;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// `GET /metrics`
pub async fn metrics(caller: Caller, State(app): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Action::Admin, None)?;
    let node = &app.node;
    let status = node.status();
    let rooms = node.store.rooms()?;
    let mut registry = Registry::with_prefix("synap");
    gauge(&mut registry, "node_id", "This node's id", status.id as i64);
    gauge(&mut registry, "raft_term", "Current Raft term", status.term as i64);
    gauge(&mut registry, "raft_is_leader", "1 if this node is the leader", i64::from(status.leader == Some(status.id)));
    gauge(&mut registry, "raft_last_log_index", "Last log index", status.last_log_index.unwrap_or(0) as i64);
    gauge(&mut registry, "raft_last_applied_index", "Last applied log index", status.last_applied.unwrap_or(0) as i64);
    gauge(&mut registry, "raft_members", "Cluster members (voters and learners)", status.members.len() as i64);
    gauge(&mut registry, "ready", "1 if the node has a leader and is caught up", i64::from(node.is_ready()));
    gauge(&mut registry, "rooms", "Rooms", rooms.len() as i64);
    let events: u64 = rooms.iter().map(|r| r.next_offset - r.min_offset).sum();
    gauge(&mut registry, "events_retained", "Events retained over all rooms", events as i64);
    let published: u64 = rooms.iter().map(|r| r.published_total).sum();
    gauge(&mut registry, "events_published", "Events ever published over all rooms", published as i64);
    gauge(&mut registry, "subscribers", "Live subscribers on this node", node.hub.subscribers() as i64);
    register_consumers(&mut registry, &app, &rooms)?;
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

/// Labels of a per-consumer series.
type ConsumerLabels = Vec<(&'static str, String)>;

/// A per-consumer series: name, help, and how to read it off a consumer.
type ConsumerSeries = (&'static str, &'static str, fn(&crate::protocol::ConsumerInfo) -> u64);

/// Per durable consumer: lag, pending, redeliveries, dead letters, missed.
fn register_consumers(
    registry: &mut Registry,
    app: &AppState,
    rooms: &[crate::command::RoomInfo],
) -> Result<(), ApiError> {
    let series: [ConsumerSeries; 5] = [
        ("consumer_lag", "Matching events a durable consumer has not finished", |c| c.lag),
        ("consumer_pending", "Messages delivered and not yet acked", |c| c.pending),
        ("consumer_redelivered", "Deliveries after the first of a message", |c| c.redelivered),
        ("consumer_dead_lettered", "Messages moved to the dead-letter room", |c| c.dead_lettered),
        ("consumer_missed", "Events trimmed before they were done", |c| c.missed),
    ];
    let families: Vec<Family<ConsumerLabels, Gauge>> = series.iter().map(|_| Family::default()).collect();
    for room in rooms {
        for consumer in app.consumers.list(&room.name)? {
            let labels = vec![("room", room.name.clone()), ("consumer", consumer.name.clone())];
            for ((_, _, value), family) in series.iter().zip(&families) {
                family.get_or_create(&labels).set(value(&consumer) as i64);
            }
        }
    }
    for ((name, help, _), family) in series.iter().zip(families) {
        registry.register(*name, *help, family);
    }
    Ok(())
}
