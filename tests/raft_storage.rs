//! openraft's own storage conformance suite against the sled log store and
//! state machine.

use openraft::testing::{StoreBuilder, Suite};
use synap::raft::log_store::LogStore;
use synap::raft::state_machine::StateMachine;
use synap::raft::{StorageError, TypeConfig};
use synap::store::Store;
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let db = sled::Config::new().path(dir.path().join("db")).open().expect("open sled");
        let log = LogStore::open(&db).expect("open log store");
        let store = Store::open(&db).expect("open store");
        let hub = synap::hub::Hub::new(store.clone(), 16);
        let sm = StateMachine::open(store, &dir.path().join("snapshot"), hub).expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_storage_passes_openraft_suite() {
    Suite::test_all(SledBuilder).expect("storage suite");
}
