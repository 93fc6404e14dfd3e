//! When the local server's hot path reaches the disk.
//!
//! Every admission, reconciliation and usage record used to be a redb write transaction
//! synced on commit. redb has one writer at a time, so the fsyncs queued: measured with
//! `scripts/bench.sh` (BENCHMARKS.md, before/after table), the p99 overhead at 1000
//! requests/s was about 80 ms, all of it waiting for the disk. Under a [`LazySync`]:
//! - the capacity ledger serves its counters from memory and registers them here as a
//!   [`WriteBehind`] source (see `ledger.rs`): an admission never waits for the disk;
//! - the usage store keeps the records' buckets in memory (visible to its queries at once)
//!   and registers them here too (see `usage.rs`): recording one is a map update;
//! - one synced transaction per interval (`VMX_SYNC_INTERVAL_MS`, 100 ms), only when
//!   something changed, writes the ledger's counters and the usage buckets back and makes everything durable; a
//!   last one runs at exit. A crash of the machine loses at most the last interval of
//!   counters and usage, as with Redis' `appendfsync everysec`. Connections and API keys
//!   are always synced on commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, WriteTransaction};

/// What keeps changes in memory and writes them back when [`LazySync`] flushes (the
/// capacity ledger's counters, the usage store's buckets).
pub(crate) trait WriteBehind: Send + Sync {
    /// Writes every change since the last call into `txn`.
    fn write_into(&self, txn: &WriteTransaction) -> Result<(), String>;
    /// Whether the transaction of the last `write_into` committed; if not, its changes
    /// are written again next time.
    fn done(&self, committed: bool);
}

/// Makes the capacity ledger's and the usage store's changes durable in the background.
pub struct LazySync {
    db: Arc<Database>,
    /// Whether anything changed since the last synced commit.
    pending: AtomicBool,
    sources: Mutex<Vec<Arc<dyn WriteBehind>>>,
    /// Held for a whole flush: a source's `done` always follows its own `write_into`.
    flushing: Mutex<()>,
}

impl LazySync {
    pub fn new(db: Arc<Database>) -> Arc<Self> {
        Arc::new(Self {
            db,
            pending: AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
        })
    }

    pub(crate) fn register(&self, source: Arc<dyn WriteBehind>) {
        if let Ok(mut s) = self.sources.lock() {
            s.push(source);
        }
    }

    /// Something changed that the next flush must sync.
    pub(crate) fn mark(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// Makes every earlier change durable: one synced commit that also writes back what
    /// the write-behind sources hold. Returns whether it had anything to do.
    pub fn flush(&self) -> Result<bool, String> {
        let _one_at_a_time = self
            .flushing
            .lock()
            .map_err(|_| "the embedded store's flush lock is poisoned".to_owned())?;
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let sources: Vec<Arc<dyn WriteBehind>> =
            self.sources.lock().map(|s| s.clone()).unwrap_or_default();
        let synced = self
            .db
            .begin_write()
            .map_err(|e| e.to_string())
            .and_then(|txn| {
                for s in &sources {
                    s.write_into(&txn)?;
                }
                txn.commit().map_err(|e| e.to_string())
            });
        for s in &sources {
            s.done(synced.is_ok());
        }
        if synced.is_err() {
            self.mark();
        }
        synced.map(|()| true)
    }

    /// Flushes every `every` until the task is dropped or aborted; a failed flush is
    /// retried at the next tick (the commits it covers stay pending).
    pub async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || this.flush()).await {
                tracing::warn!(error = %e, "embedded store: syncing recent commits failed");
            }
        }
    }
}
