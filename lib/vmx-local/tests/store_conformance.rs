//! The connection-store conformance suite (shared with the DynamoDB adapter) on redb.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use vmx_domain::ports::ConnectionStore;
use vmx_local::{LocalStore, open_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_store_passes_the_conformance_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    vmx_conformance::store::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(open_database(dir.path()).unwrap()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { Arc::new(store) as Arc<dyn ConnectionStore> }
    })
    .await;
}

#[tokio::test]
async fn data_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let c = vmx_conformance::store::api_key_connection("persisted");
    {
        let store = LocalStore::new(open_database(dir.path()).unwrap()).unwrap();
        store.insert(&c).await.unwrap();
    }
    let store = LocalStore::new(open_database(dir.path()).unwrap()).unwrap();
    assert_eq!(store.get(&c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(
        store.get_by_name("persisted").await.unwrap().map(|x| x.id),
        Some(c.id)
    );
}
