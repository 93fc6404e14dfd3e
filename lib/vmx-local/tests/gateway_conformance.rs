//! The API-key, usage and discovered-capacity conformance suites on redb.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use vmx_conformance::discovered::Stores;
use vmx_domain::api_key::ApiKeyStore;
use vmx_domain::usage::UsageStore;
use vmx_local::api_keys::LocalApiKeyStore;
use vmx_local::usage::LocalUsageStore;
use vmx_local::{LocalStore, open_database};

/// Temporary directories that live as long as the test.
#[derive(Default)]
struct Dirs(Mutex<Vec<TempDir>>);

impl Dirs {
    fn db(&self) -> Arc<redb::Database> {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(dir.path()).unwrap();
        self.0.lock().unwrap().push(dir);
        db
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_api_keys_pass_the_conformance_suite() {
    let dirs = Dirs::default();
    vmx_conformance::api_keys::run_all(|| {
        let store = LocalApiKeyStore::new(dirs.db()).unwrap();
        async move { Arc::new(store) as Arc<dyn ApiKeyStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_api_keys_on_one_shared_database() {
    let dirs = Dirs::default();
    let store: Arc<dyn ApiKeyStore> = Arc::new(LocalApiKeyStore::new(dirs.db()).unwrap());
    vmx_conformance::api_keys::run_all(|| {
        let store = Arc::clone(&store);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_usage_passes_the_conformance_suite() {
    let dirs = Dirs::default();
    vmx_conformance::usage::run_all(|| {
        let store = LocalUsageStore::new(dirs.db()).unwrap();
        async move { Arc::new(store) as Arc<dyn UsageStore> }
    })
    .await;
}

/// As the local server runs it: usage records committed lazily, synced in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_usage_with_lazy_sync_passes_the_conformance_suite() {
    let dirs = Dirs::default();
    vmx_conformance::usage::run_all(|| {
        let db = dirs.db();
        let sync = vmx_local::LazySync::new(db.clone());
        let store = LocalUsageStore::new(db)
            .unwrap()
            .with_lazy_sync(sync.clone());
        tokio::spawn(sync.run(std::time::Duration::from_millis(5)));
        async move { Arc::new(store) as Arc<dyn UsageStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_usage_on_one_shared_database() {
    let dirs = Dirs::default();
    let store: Arc<dyn UsageStore> = Arc::new(LocalUsageStore::new(dirs.db()).unwrap());
    vmx_conformance::usage::run_all(|| {
        let store = Arc::clone(&store);
        async move { store }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_discovered_capacity_passes_the_conformance_suite() {
    let dirs = Dirs::default();
    vmx_conformance::discovered::run_all(|| {
        let store = LocalStore::new(dirs.db()).unwrap();
        async move { Stores::of(Arc::new(store)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_embedded_stores_share_one_database_file() {
    // The server opens one file and builds every adapter on it.
    let dirs = Dirs::default();
    let db = dirs.db();
    let connections = Arc::new(LocalStore::new(db.clone()).unwrap());
    let keys: Arc<dyn ApiKeyStore> = Arc::new(LocalApiKeyStore::new(db.clone()).unwrap());
    let usage: Arc<dyn UsageStore> = Arc::new(LocalUsageStore::new(db).unwrap());
    vmx_conformance::discovered::run_all(|| {
        let s = Stores::of(connections.clone());
        async move { s }
    })
    .await;
    vmx_conformance::api_keys::run_all(|| {
        let k = keys.clone();
        async move { k }
    })
    .await;
    vmx_conformance::usage::run_all(|| {
        let u = usage.clone();
        async move { u }
    })
    .await;
}

#[tokio::test]
async fn keys_and_usage_survive_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let key = vmx_conformance::api_keys::key_record("persisted");
    let conn = vmx_conformance::usage::conn_id();
    let h = vmx_conformance::usage::hour_ago(1);
    let event = vmx_conformance::usage::event(&conn, "m", h, 1);
    {
        let db = open_database(dir.path()).unwrap();
        LocalApiKeyStore::new(db.clone())
            .unwrap()
            .insert(&key)
            .await
            .unwrap();
        LocalUsageStore::new(db)
            .unwrap()
            .record(&event)
            .await
            .unwrap();
    }
    let db = open_database(dir.path()).unwrap();
    let keys = LocalApiKeyStore::new(db.clone()).unwrap();
    assert_eq!(keys.find_by_hash(&key.hash).await.unwrap(), Some(key));
    let usage = LocalUsageStore::new(db).unwrap();
    let got = usage
        .query(
            &conn,
            h,
            h + time::Duration::hours(1),
            vmx_domain::usage::Granularity::Hour,
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vmx_conformance::usage::expected(&[event], vmx_domain::usage::Granularity::Hour)
    );
}
