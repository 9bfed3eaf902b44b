//! `GET /metrics`: Prometheus text exposition of the node's state, read at
//! scrape time.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::AppState;
use crate::node::cluster::ClusterStatus;

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
    register_raft(&mut registry, &status);
    register_rooms(&mut registry, &app, &rooms);
    register_consumers(&mut registry, &app, &rooms)?;
    register_process(&mut registry);
    crate::telemetry::register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError::internal(e.to_string()))?;
    let text = prometheus_text(&text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition, which
/// every scraper and `promtool check metrics` read: a counter's HELP and
/// TYPE name its `_total` series, and there is no `# EOF` or `# UNIT`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|p| Some((*p, line.strip_prefix(p)?)));
        match described {
            Some((prefix, rest)) if rest.split(' ').next().is_some_and(|name| counters.contains(name)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Labels of a per-room (or per-follower) series.
type OneLabel = [(&'static str, String); 1];

/// Leadership, snapshot and purge points, and on the leader how far each
/// follower trails its log.
fn register_raft(registry: &mut Registry, status: &ClusterStatus) {
    gauge(registry, "raft_leader", "Id of the leader this node knows, 0 if none", status.leader.unwrap_or(0) as i64);
    let snapshot = status.snapshot_index.unwrap_or(0) as i64;
    gauge(registry, "raft_snapshot_index", "Last log index of this node's latest snapshot", snapshot);
    gauge(
        registry,
        "raft_purged_index",
        "Last log index purged from this node's log",
        status.purged_index.unwrap_or(0) as i64,
    );
    if status.leader != Some(status.id) {
        return;
    }
    let lag: Family<OneLabel, Gauge> = Family::default();
    let last = status.last_log_index.unwrap_or(0);
    for member in status.members.iter().filter(|m| m.id != status.id) {
        let behind = last.saturating_sub(member.matched_index.unwrap_or(0));
        lag.get_or_create(&[("follower", member.id.to_string())]).set(behind as i64);
    }
    registry.register("raft_replication_lag", "Log entries a follower trails the leader by (leader only)", lag);
}

/// Per room: retained range, totals ever published, live subscribers here.
fn register_rooms(registry: &mut Registry, app: &AppState, rooms: &[crate::command::RoomInfo]) {
    let events: Family<OneLabel, Gauge> = Family::default();
    let min: Family<OneLabel, Gauge> = Family::default();
    let next: Family<OneLabel, Gauge> = Family::default();
    let subscribers: Family<OneLabel, Gauge> = Family::default();
    let published: Family<OneLabel, Counter> = Family::default();
    let bytes: Family<OneLabel, Counter> = Family::default();
    for room in rooms {
        let label = [("room", room.name.clone())];
        events.get_or_create(&label).set((room.next_offset - room.min_offset) as i64);
        min.get_or_create(&label).set(room.min_offset as i64);
        next.get_or_create(&label).set(room.next_offset as i64);
        subscribers.get_or_create(&label).set(app.node.hub.subscribers_of(&room.name) as i64);
        // Built afresh per scrape: the increment sets the total.
        published.get_or_create(&label).inc_by(room.published_total);
        bytes.get_or_create(&label).inc_by(room.bytes_total);
    }
    registry.register("room_events", "Events a room retains", events);
    registry.register("room_min_offset", "Lowest offset a room retains", min);
    registry.register("room_next_offset", "Offset a room's next event gets", next);
    registry.register("room_subscribers", "Live subscribers of a room on this node", subscribers);
    registry.register("room_published", "Events ever published to a room", published);
    registry.register_with_unit(
        "room_published",
        "Payload and metadata bytes ever published to a room",
        Unit::Bytes,
        bytes,
    );
}

/// Resident memory and open files of this process.
fn register_process(registry: &mut Registry) {
    // "VmRSS:   123456 kB"
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<i64>().ok()))
        .unwrap_or(0);
    let resident: Gauge = Gauge::default();
    resident.set(kib * 1024);
    registry.register_with_unit("process_resident_memory", "Resident memory of this node", Unit::Bytes, resident);
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as i64;
    gauge(registry, "process_open_fds", "Open file descriptors of this node", open);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_described_by_their_total_series() {
        let openmetrics = "# HELP a_b Things.\n# TYPE a_b counter\n# UNIT a_b bytes\na_b_total 3\n\
                           # HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
