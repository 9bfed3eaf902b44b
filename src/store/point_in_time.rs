//! A point-in-time view of the applied state: what lets a snapshot be
//! written while applies go on.
//!
//! sled has no snapshots of its own. While a view is open, every write to
//! the state goes through [`Store::write`], which hands the view the keys
//! it is about to write before writing any of them, and the view keeps
//! what each key held when it opened (first write wins). Walking the tree
//! through the view puts those values back in place of newer ones, skips
//! keys created since, and ends with the keys deleted since, which the
//! tree no longer shows.
//!
//! Whether a key first written after the walk went past it was already
//! given out is decided by the walk's position, kept under the same lock as
//! the recorded values: so every key that existed when the view opened
//! comes out exactly once, with its value of that moment. sled's iterator
//! is not a snapshot, but it does return every key that stays untouched
//! while it passes, in key order, which is all this needs.
//!
//! [`Store::write`]: super::Store::write

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sled::IVec;

use super::{redo, Store, StoreError};

/// The writes of one apply (or one clean-up), in order, as
/// [`Store::write`] takes them.
#[derive(Default)]
pub struct Writes {
    /// Inserts of keys past their room's head, made before `writes`.
    ahead: Vec<redo::Write>,
    writes: Vec<redo::Write>,
}

impl Writes {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    /// Deletes `key`.
    pub fn remove(&mut self, key: impl Into<IVec>) {
        self.writes.push((key.into(), None));
    }

    /// Sets `key`, an event record past its room's head (the new events of
    /// a publish), to `value`, before every other write and outside the
    /// redo record. Until the apply's other writes move the head over it
    /// no reader reaches such a key; if a crash comes first, a repeat of
    /// the apply writes it again with the same value (the events and their
    /// split into chunks depend only on the log), and opening the state
    /// removes what is left past a head meanwhile (`Applier::load`).
    pub(crate) fn insert_past_head(&mut self, key: impl Into<IVec>, value: impl Into<IVec>) {
        self.ahead.push((key.into(), Some(value.into())));
    }

    /// The inserts past a head, then the other writes, each in order.
    pub(super) fn into_parts(self) -> (Vec<redo::Write>, Vec<redo::Write>) {
        (self.ahead, self.writes)
    }
}

/// The applied state as it was when the view opened (see the module
/// documentation). Closes when dropped.
pub struct PointInTime {
    store: Store,
    recorded: Arc<Recorded>,
}

/// What a view needs from the writers.
#[derive(Default)]
pub(super) struct Recorded {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Keys written since the view opened, with what they held then.
    before: HashMap<IVec, Before>,
    /// The last key the walk gave out.
    passed: Option<IVec>,
}

struct Before {
    /// The value when the view opened; `None` if the key did not exist.
    value: Option<IVec>,
    /// Whether the walk has given this key out already.
    given: bool,
}

impl Recorded {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map is consistent after any panic: every change is one insert.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called with the writes of an apply before any of them is made.
    pub(super) fn before_write(&self, tree: &sled::Tree, writes: &[redo::Write]) -> Result<(), sled::Error> {
        let mut inner = self.lock();
        for (key, _) in writes {
            if inner.before.contains_key(key) {
                continue;
            }
            let given = inner.passed.as_ref().is_some_and(|passed| key <= passed);
            let value = tree.get(key)?;
            inner.before.insert(key.clone(), Before { value, given });
        }
        Ok(())
    }

    /// What the view shows for `key`, which the walk found holding `now`.
    fn seen(&self, key: IVec, now: IVec) -> Option<(IVec, IVec)> {
        let mut inner = self.lock();
        let value = match inner.before.get_mut(&key) {
            Some(before) => {
                before.given = true;
                before.value.clone()
            }
            None => Some(now),
        };
        inner.passed = Some(key.clone());
        value.map(|value| (key, value))
    }

    /// The keys of the view the walk has not found: deleted since.
    fn not_given(&self) -> Vec<(IVec, IVec)> {
        let mut inner = self.lock();
        inner
            .before
            .iter_mut()
            .filter(|(_, before)| !before.given)
            .filter_map(|(key, before)| {
                before.given = true;
                before.value.clone().map(|value| (key.clone(), value))
            })
            .collect()
    }
}

impl PointInTime {
    /// Opens a view of `store` as it is now. The caller makes sure no
    /// write is under way (the state machine, between two applies), and
    /// that no other view is open.
    pub fn open(store: &Store) -> Self {
        let recorded = Arc::new(Recorded::default());
        store.set_view(Some(recorded.clone()));
        Self { store: store.clone(), recorded }
    }

    /// Every record of the view, once each; keys in order except those
    /// deleted since the view opened, which come last. Meant to be walked
    /// once.
    pub fn records(&self) -> Records<'_> {
        Records { view: self, iter: self.store.tree().iter(), deleted: None }
    }
}

impl Drop for PointInTime {
    fn drop(&mut self) {
        self.store.set_view(None);
    }
}

/// The walk over a [`PointInTime`].
pub struct Records<'a> {
    view: &'a PointInTime,
    iter: sled::Iter,
    deleted: Option<std::vec::IntoIter<(IVec, IVec)>>,
}

impl Iterator for Records<'_> {
    type Item = Result<(IVec, IVec), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(deleted) = &mut self.deleted {
            return deleted.next().map(Ok);
        }
        loop {
            let item = {
                let _reading = self.view.store.reading();
                self.iter.next()
            };
            match item {
                Some(Ok((key, now))) => {
                    if let Some(record) = self.view.recorded.seen(key, now) {
                        return Some(Ok(record));
                    }
                }
                Some(Err(e)) => return Some(Err(e.into())),
                None => {
                    let deleted = self.deleted.insert(self.view.recorded.not_given().into_iter());
                    return deleted.next().map(Ok);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A write to one of a few keys: `None` deletes it.
    fn write() -> impl Strategy<Value = (u8, Option<u8>)> {
        (0u8..40, proptest::option::of(any::<u8>()))
    }

    fn contents(store: &Store) -> BTreeMap<IVec, IVec> {
        store.tree().iter().map(Result::unwrap).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// However writes interleave with the walk, it gives out exactly
        /// the records the state held when the view opened.
        #[test]
        fn the_walk_shows_the_state_of_the_moment_the_view_opened(
            initial in proptest::collection::btree_map(0u8..40, any::<u8>(), 0..30),
            batches in proptest::collection::vec(proptest::collection::vec(write(), 1..6), 0..30),
            steps in proptest::collection::vec(0usize..4, 0..30),
        ) {
            let (_dir, store) = Store::scratch();
            let mut setup = Writes::default();
            for (key, value) in &initial {
                setup.insert(&[*key], &[*value]);
            }
            store.write(setup).unwrap();
            let expected = contents(&store);

            let view = PointInTime::open(&store);
            let mut records = view.records();
            let mut given = Vec::new();
            // Between batches, the walk takes 0 to 3 steps.
            for (i, batch) in batches.iter().enumerate() {
                for _ in 0..steps.get(i).copied().unwrap_or(1) {
                    if let Some(record) = records.next() {
                        given.push(record.unwrap());
                    }
                }
                let mut writes = Writes::default();
                for (key, value) in batch {
                    match value {
                        Some(value) => writes.insert(&[*key], &[*value]),
                        None => writes.remove(&[*key]),
                    }
                }
                store.write(writes).unwrap();
            }
            given.extend(records.map(Result::unwrap));

            let keys: Vec<_> = given.iter().map(|(k, _)| k.clone()).collect();
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), keys.len(), "a key given out twice: {:?}", keys);
            let shown: BTreeMap<IVec, IVec> = given.into_iter().collect();
            prop_assert_eq!(shown, expected);
        }
    }

    #[test]
    fn closing_the_view_stops_the_recording() {
        let (_dir, store) = Store::scratch();
        let view = PointInTime::open(&store);
        let recorded = view.recorded.clone();
        drop(view);
        let mut writes = Writes::default();
        writes.insert(b"k".as_slice(), b"v".as_slice());
        store.write(writes).unwrap();
        assert!(recorded.lock().before.is_empty(), "a closed view records nothing");
    }
}
