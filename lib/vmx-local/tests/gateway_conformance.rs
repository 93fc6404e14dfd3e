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

/// Usage buckets kept in memory under a lazy sync: while records arrive from several tasks
/// and write-backs run (some of them failing half way is not possible to force here, so every
/// one commits), every query sees each record exactly once: its count never goes down, never
/// exceeds what was recorded, and ends equal to it, before and after the last write-back;
/// a reopened database holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_usage_write_behind_counts_each_record_once() {
    use vmx_domain::usage::UsageEvent;
    let dir = tempfile::tempdir().unwrap();
    let at = time::OffsetDateTime::from_unix_timestamp(1_765_000_000).unwrap();
    let (lo, hi) = (at.unix_timestamp() - 7200, at.unix_timestamp() + 7200);
    let total = |buckets: &[vmx_domain::usage::UsageBucket]| -> u64 {
        buckets.iter().map(|b| b.counters.requests).sum()
    };
    const TASKS: u64 = 4;
    const EACH: u64 = 300;
    {
        let db = open_database(dir.path()).unwrap();
        let sync = vmx_local::LazySync::new(db.clone());
        let store = Arc::new(
            LocalUsageStore::new(db)
                .unwrap()
                .with_lazy_sync(sync.clone()),
        );
        let flusher = tokio::spawn(sync.clone().run(std::time::Duration::from_millis(1)));
        let recorders: Vec<_> = (0..TASKS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        let mut e = UsageEvent::new("c1", if i % 2 == 0 { "m1" } else { "m2" }, at);
                        e.api_key_id = (t % 2 == 0).then(|| format!("k{t}"));
                        e.prompt_tokens = 1;
                        store.record(&e).await.unwrap();
                        if i % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let mut seen = 0;
        let mut queries = 0;
        while recorders.iter().any(|r| !r.is_finished()) || queries < 10 {
            let n = total(&store.hours("c1", lo, hi).await.unwrap());
            assert!(
                n >= seen,
                "a query saw {n} after {seen}: a record was missed"
            );
            assert!(
                n <= TASKS * EACH,
                "a query saw {n}: a record was counted twice"
            );
            seen = n;
            queries += 1;
        }
        for r in recorders {
            r.await.unwrap();
        }
        let buckets = store.hours("c1", lo, hi).await.unwrap();
        assert_eq!(total(&buckets), TASKS * EACH);
        // One bucket per (hour, model, key): pending and written counters are merged.
        assert_eq!(buckets.len(), 2 * 3, "{buckets:?}");
        let prompt: u64 = buckets.iter().map(|b| b.counters.prompt_tokens).sum();
        assert_eq!(prompt, TASKS * EACH);
        flusher.abort();
        let _ = flusher.await;
        sync.flush().unwrap();
        assert_eq!(
            total(&store.hours("c1", lo, hi).await.unwrap()),
            TASKS * EACH
        );
    }
    // A write-back thread that was running when the flusher stopped may still hold the
    // database for a moment: open it again once it is free.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let db = loop {
        match open_database(dir.path()) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopening the database: {e}"),
        }
    };
    let store = LocalUsageStore::new(db).unwrap();
    assert_eq!(
        total(&store.hours("c1", lo, hi).await.unwrap()),
        TASKS * EACH
    );
}
