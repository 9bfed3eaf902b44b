//! The wall clock, read in one place. Nothing in the replicated state
//! depends on it: the leader stamps commands with it (never going back,
//! see `node::proposer`) and every node then uses those stamps (cluster
//! time). `--unsafe-clock-offset-ms` skews it, to test that nothing else
//! does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Skews this process's wall clock by `ms` (tests of clock skew only).
pub fn set_unsafe_offset_ms(ms: i64) {
    OFFSET_MS.store(ms, Ordering::SeqCst);
}

/// Unix milliseconds now, as this process's (possibly skewed) clock says.
pub fn wall_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    now.saturating_add_signed(OFFSET_MS.load(Ordering::Relaxed))
}
