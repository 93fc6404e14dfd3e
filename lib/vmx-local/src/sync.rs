//! When the hot path's commits reach the disk.
//!
//! Every admission, reconciliation and usage record is a redb write transaction. Synced one
//! by one, each waits for an fsync, and since redb has one writer at a time, the fsyncs
//! queue: measured with `scripts/bench.sh` (BENCHMARKS.md), the local server's p99 overhead
//! at 1000 requests/s was 54 ms, all of it waiting for the disk. With a [`LazySync`], those
//! commits are made with [`Durability::None`] (atomic and isolated as before, visible to
//! every later transaction at once) and a background task makes them durable with one
//! empty synced commit per interval, only when something was written. A crash of the
//! machine (not of the process: redb's file survives that either way) loses at most the
//! last interval of counter and usage updates, as with Redis' `appendfsync everysec`.
//! Connections and API keys are always synced on commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redb::{Database, Durability, WriteTransaction};

/// Commits of the capacity ledger and the usage store, made durable in the background.
pub struct LazySync {
    db: Arc<Database>,
    /// Whether a lazy commit happened since the last synced one.
    pending: AtomicBool,
}

impl LazySync {
    pub fn new(db: Arc<Database>) -> Arc<Self> {
        Arc::new(Self {
            db,
            pending: AtomicBool::new(false),
        })
    }

    /// Makes every earlier commit durable (one synced, empty commit), if any was lazy.
    /// Returns whether it had anything to do.
    pub fn flush(&self) -> Result<bool, String> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let synced = self
            .db
            .begin_write()
            .map_err(|e| e.to_string())
            .and_then(|txn| txn.commit().map_err(|e| e.to_string()));
        if synced.is_err() {
            self.pending.store(true, Ordering::Release);
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

/// Commits `txn`: lazily under `sync`, synced without it.
pub(crate) fn commit(mut txn: WriteTransaction, sync: Option<&LazySync>) -> Result<(), String> {
    if let Some(sync) = sync {
        txn.set_durability(Durability::None)
            .map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        sync.pending.store(true, Ordering::Release);
        Ok(())
    } else {
        txn.commit().map_err(|e| e.to_string())
    }
}
