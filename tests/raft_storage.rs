//! openraft's own storage conformance suite against the segment-file log
//! store and the sled state machine, one test per suite case.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use synap::raft::log_store::LogStore;
use synap::raft::state_machine::StateMachine;
use synap::raft::{StorageError, TypeConfig};
use synap::store::{Database, Store};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db = Database::open(&dir.path().join("db"), 16 << 20, false).expect("open sled");
        // Small segments, so that the suite's logs span several files.
        let log = LogStore::open_with(&dir.path().join("raft-log"), 256).expect("open log store");
        let store = Store::open(Arc::new(db)).expect("open store");
        let hub = synap::hub::Hub::new(store.clone(), 16);
        let sm = StateMachine::open(store, &dir.path().join("snapshot"), hub).expect("open state machine");
        Ok((dir, log, sm))
    }
}

type Cases = Suite<TypeConfig, LogStore, StateMachine, Builder, TempDir>;

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        $(
            // The state machine builds snapshots with `block_in_place`.
            #[tokio::test(flavor = "multi_thread")]
            async fn $case() {
                let (_dir, log, sm) = Builder.build().await.expect("build storage");
                Cases::$case(log, sm).await.expect(stringify!($case));
            }
        )*
    };
}

// Every case of `Suite::test_all` but `get_initial_state_membership_from_log_and_sm`.
// That case lets `get_initial_state` purge the log up to the state machine's
// last applied entry (2), then appends entry 1 below the purge point, and
// later entry 3 right after it. openraft itself never does either (its
// contract forbids holes), and the segment log refuses both: its indexes are
// dense by construction.
suite!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

#[tokio::test(flavor = "multi_thread")]
async fn transfer_snapshot() {
    Cases::transfer_snapshot(&Builder).await.expect("transfer_snapshot");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_append_that_would_leave_a_hole_is_refused() {
    let (_dir, log, sm) = Builder.build().await.expect("build storage");
    let refused = Cases::get_initial_state_membership_from_log_and_sm(log, sm).await;
    let error = refused.expect_err("entry 1 after a purge up to 2 is refused");
    assert!(error.to_string().contains("append of entry 1 where 3 was expected"), "{error}");
}
