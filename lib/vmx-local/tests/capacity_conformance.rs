//! The capacity conformance suite against the embedded (redb) ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use time::macros::datetime;
use vmx_conformance::capacity::{self, Ledger, T0, entry, request};
use vmx_domain::capacity::Period;
use vmx_local::ledger::RedbLedger;

fn ledger_in(dir: &tempfile::TempDir) -> RedbLedger {
    let db = redb::Database::create(dir.path().join("vmx.redb")).expect("db");
    RedbLedger::new(Arc::new(db)).expect("ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared: Ledger = Arc::new(ledger_in(&dir));
    // One database for every case: each case uses its own connection id.
    capacity::run_all(|| {
        let l = shared.clone();
        async move { l }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_counters_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger_in(&dir);
    let entries = [
        entry(Period::Minute, Some(10), None),
        entry(Period::Lifetime, Some(10), None),
    ];
    let id = capacity::unique_id("stale");
    let l: Ledger = Arc::new(ledger.clone());
    capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    // The next minute's admission removes the previous minute's counters, keeps lifetime.
    let t1 = T0 + time::Duration::minutes(5);
    capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 1, 1, t1)).await;
    let a = capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 1, 1, t1)).await;
    assert_eq!(a.windows[1].used.requests, 3, "lifetime kept");
    // Only the current minute (r, t) and lifetime (r, t) remain: nothing to sweep.
    assert_eq!(ledger.sweep_all(t1).await.expect("sweep"), 0);
    // Once the minute is over, the sweep removes its two counters and keeps lifetime.
    let later = datetime!(2031-01-01 00:00:00 UTC);
    assert_eq!(ledger.sweep_all(later).await.expect("sweep"), 2);
    let a = capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 1, 1, later)).await;
    assert_eq!(a.windows[1].used.requests, 4);
}

/// The local server's configuration: commits made durable in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_conformance_with_lazy_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(redb::Database::create(dir.path().join("vmx.redb")).expect("db"));
    let sync = vmx_local::LazySync::new(db.clone());
    let shared: Ledger = Arc::new(
        RedbLedger::new(db)
            .expect("ledger")
            .with_lazy_sync(sync.clone())
            .expect("lazy ledger"),
    );
    let flusher = tokio::spawn(sync.run(std::time::Duration::from_millis(5)));
    capacity::run_all(|| {
        let l = shared.clone();
        async move { l }
    })
    .await;
    flusher.abort();
}

/// Lazy commits are visible at once, and durable once flushed: a reopened database has
/// every counter, and a flush with nothing new does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazily_committed_counters_survive_a_flush_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vmx.redb");
    let entries = [entry(Period::Day, Some(100), Some(10_000))];
    let id = capacity::unique_id("lazy");
    {
        let db = Arc::new(redb::Database::create(&path).expect("db"));
        let sync = vmx_local::LazySync::new(db.clone());
        assert!(!sync.flush().expect("flush"), "nothing to flush yet");
        let l: Ledger = Arc::new(
            RedbLedger::new(db)
                .expect("ledger")
                .with_lazy_sync(sync.clone())
                .expect("lazy ledger"),
        );
        for n in 1..=3 {
            let a = capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 10, 5, T0)).await;
            assert_eq!(a.windows[0].used.requests, n, "visible before any flush");
        }
        assert!(sync.flush().expect("flush"), "three lazy commits to sync");
        assert!(!sync.flush().expect("flush"), "synced already");
    }
    // A synced ledger reads the table; a lazy one loads it into memory at start.
    {
        let db = Arc::new(redb::Database::create(&path).expect("reopen"));
        let l: Ledger = Arc::new(RedbLedger::new(db).expect("ledger"));
        let a = capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 10, 5, T0)).await;
        assert_eq!(
            a.windows[0].used.requests, 4,
            "the three flushed admissions persisted"
        );
    }
    let db = Arc::new(redb::Database::create(&path).expect("reopen"));
    let sync = vmx_local::LazySync::new(db.clone());
    let l: Ledger = Arc::new(
        RedbLedger::new(db)
            .expect("ledger")
            .with_lazy_sync(sync)
            .expect("lazy ledger"),
    );
    let a = capacity::admitted(&l, &request(&id, &entries, "10.0.0.1", 10, 5, T0)).await;
    assert_eq!(a.windows[0].used.requests, 5, "loaded from the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared: Ledger = Arc::new(ledger_in(&dir));
    vmx_conformance::pools::run_all(|| std::future::ready(shared.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_capacity_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared: Ledger = Arc::new(ledger_in(&dir));
    vmx_conformance::key_capacity::run_all(|| std::future::ready(shared.clone())).await;
}
