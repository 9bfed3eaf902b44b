//! A budget of bytes for work waiting in a queue. Queues of writes (the
//! proposer's, the forwarder's) reserve what each request weighs before it
//! enters, and give it back when the request leaves the queue, so that a
//! burst of large writes is refused with "try again" instead of growing
//! memory without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes that may wait at once. Cheap to clone; clones share the budget.
#[derive(Debug, Clone)]
pub struct Budget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { used: Arc::default(), limit }
    }

    /// Takes `bytes`, unless that would go over the limit. A request alone
    /// in an empty queue always fits, whatever it weighs: the limit bounds
    /// what waits behind others, not what may be asked.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used > 0 && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Reservation { used: self.used.clone(), bytes }),
                Err(now) => used = now,
            }
        }
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.try_reserve(60).expect("fits");
        let b = budget.try_reserve(40).expect("fits exactly");
        assert!(budget.try_reserve(1).is_none(), "over the limit");
        drop(a);
        assert_eq!(budget.used(), 40);
        let c = budget.try_reserve(60).expect("room again");
        drop((b, c));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_large_request_fits_an_empty_queue_only() {
        let budget = Budget::new(10);
        let big = budget.try_reserve(1_000).expect("alone, anything fits");
        assert!(budget.try_reserve(1).is_none());
        drop(big);
        assert!(budget.try_reserve(1).is_some());
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let budget = Budget::new(1_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..1_000 {
                        if let Some(r) = budget.try_reserve(7) {
                            assert!(budget.used() <= budget.limit());
                            held.push(r);
                        }
                        if held.len() > 10 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(budget.used(), 0);
    }
}
