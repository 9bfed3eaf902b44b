//! Process-wide measurements that must outlive a scrape: latency
//! histograms and counters, recorded where things happen (the service, the
//! proposer, the log, the state machine, the forwarder) and exposed by
//! `GET /metrics` (`api::metrics`), which reads everything else off the
//! node's state at scrape time. One process is one node, so they are
//! process globals, like the allocator.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The label of a publish's outcome.
type Outcome = [(&'static str, &'static str); 1];

/// What is recorded.
struct Telemetry {
    publish: Family<Outcome, Histogram, fn() -> Histogram>,
    apply: Histogram,
    entries_per_apply: Histogram,
    log_sync: Histogram,
    entries_per_append: Histogram,
    requests_per_entry: Histogram,
    forward: Histogram,
    snapshots: Counter,
    snapshot_duration: Histogram,
    snapshot_bytes: Gauge,
}

/// 100 µs to ~26 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// 1 to 8,192.
fn counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 14))
}

static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| Telemetry {
    publish: Family::new_with_constructor(seconds),
    apply: seconds(),
    entries_per_apply: counts(),
    log_sync: seconds(),
    entries_per_append: counts(),
    requests_per_entry: counts(),
    forward: seconds(),
    snapshots: Counter::default(),
    snapshot_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
    snapshot_bytes: Gauge::default(),
});

/// A publish (of one or many events) answered, `ok` or not, after `took`.
pub fn published(took: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    TELEMETRY.publish.get_or_create(&[("outcome", outcome)]).observe(took.as_secs_f64());
}

/// The state machine applied `entries` in one batch in `took`.
pub fn applied(took: Duration, entries: usize) {
    TELEMETRY.apply.observe(took.as_secs_f64());
    TELEMETRY.entries_per_apply.observe(entries as f64);
}

/// The Raft log synced a group of appends in `took`.
pub fn log_synced(took: Duration) {
    TELEMETRY.log_sync.observe(took.as_secs_f64());
}

/// The Raft log appended `entries` in one call.
pub fn appended(entries: usize) {
    TELEMETRY.entries_per_append.observe(entries as f64);
}

/// The proposer put `requests` in one entry.
pub fn proposed(requests: usize) {
    TELEMETRY.requests_per_entry.observe(requests as f64);
}

/// A batch of forwarded writes came back from the leader after `took`.
pub fn forwarded(took: Duration) {
    TELEMETRY.forward.observe(took.as_secs_f64());
}

/// This node wrote a snapshot of `bytes` in `took`.
pub fn snapshot_built(took: Duration, bytes: u64) {
    TELEMETRY.snapshots.inc();
    TELEMETRY.snapshot_duration.observe(took.as_secs_f64());
    TELEMETRY.snapshot_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Adds the measurements to `registry` (each scrape builds its own).
pub fn register(registry: &mut Registry) {
    let t = &*TELEMETRY;
    let secs = Unit::Seconds;
    let s = registry;
    s.register_with_unit(
        "publish_duration",
        "Publish requests, by outcome, until answered",
        secs.clone(),
        t.publish.clone(),
    );
    s.register_with_unit("apply_duration", "Apply calls of the state machine", secs.clone(), t.apply.clone());
    s.register("entries_per_apply", "Raft entries per apply call", t.entries_per_apply.clone());
    s.register_with_unit(
        "log_sync_duration",
        "fdatasync of a group of Raft log appends",
        secs.clone(),
        t.log_sync.clone(),
    );
    s.register("entries_per_append", "Raft entries per log append", t.entries_per_append.clone());
    s.register(
        "requests_per_entry",
        "Client requests grouped in one Raft entry (leader)",
        t.requests_per_entry.clone(),
    );
    s.register_with_unit(
        "forward_duration",
        "Round trips of forwarded writes to the leader",
        secs.clone(),
        t.forward.clone(),
    );
    s.register("snapshots", "Snapshots this node wrote", t.snapshots.clone());
    s.register_with_unit("snapshot_duration", "Time to write a snapshot", secs, t.snapshot_duration.clone());
    s.register_with_unit("snapshot_size", "Size of the last snapshot written", Unit::Bytes, t.snapshot_bytes.clone());
}
