//! Usage statistics on redb: one row per (connection, hour, model), and per API key for the
//! requests of gateway keys, holding the bucket's counters as JSON. A query is one range
//! scan of the connection's hours in each of the two tables, rolled up to days (and summed
//! over keys) in memory.
//!
//! Recording: without a [`LazySync`], one write transaction synced on commit (read, add,
//! write: serializable, so concurrent records never lose a count). Under a [`LazySync`] (the
//! local server), a record only adds into an in-memory bucket (a mutex and a map update, no
//! transaction and no thread hand-off on the request path); the sync's next flush adds every
//! pending bucket into its row in the one transaction it commits, with a flush sequence
//! number in the same transaction. A query sees the pending buckets at once: it adds them to
//! what it read, and adds the buckets of a write-back in progress only when its snapshot does
//! not hold that write-back's sequence number yet, so nothing is counted twice or missed.
//! A failed write-back puts its buckets back.
//!
//! Rows are kept until the database is deleted: a laptop's usage is small. Deleting a
//! connection keeps its usage (as in DynamoDB, where it expires after
//! [`vmx_domain::usage::RETENTION_DAYS`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use vmx_domain::usage::{UsageBucket, UsageCounters, UsageEvent, UsageStore};
use vmx_domain::{Error, Result};

use crate::sync::{LazySync, WriteBehind};

/// (connection id, hour start in epoch seconds, model) -> JSON of [`UsageCounters`]: the
/// requests made without an API key (the admin token).
const HOURS: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("usage_hours");
/// (connection id, hour start, model, API key id) -> JSON of [`UsageCounters`]: the requests
/// of gateway API keys (a table of its own, so databases written before keys were recorded
/// open unchanged).
const KEY_HOURS: TableDefinition<(&str, i64, &str, &str), &[u8]> =
    TableDefinition::new("usage_key_hours");
/// `"flushed"` -> the sequence number of the last write-back of pending buckets.
const META: TableDefinition<&str, u64> = TableDefinition::new("usage_meta");
const FLUSHED: &str = "flushed";

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded usage store: {e}"))
}

fn decode(bytes: &[u8]) -> Result<UsageCounters> {
    serde_json::from_slice(bytes).map_err(|e| {
        db_err(format!(
            "corrupt usage bucket at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// A bucket's row: (connection id, hour start, model, API key id).
type BucketKey = (String, i64, String, Option<String>);

/// The buckets recorded since the last write-back, and those of a write-back in progress.
#[derive(Default)]
struct Buckets {
    pending: HashMap<BucketKey, UsageCounters>,
    writing: HashMap<BucketKey, UsageCounters>,
    /// The sequence number that the write-back of `writing` stores in [`META`].
    writing_seq: u64,
}

/// The in-memory side of a store under a [`LazySync`].
#[derive(Default)]
struct Pending {
    buckets: Mutex<Buckets>,
}

impl Pending {
    fn lock(&self) -> std::result::Result<std::sync::MutexGuard<'_, Buckets>, String> {
        self.buckets
            .lock()
            .map_err(|_| "pending usage buckets poisoned".to_owned())
    }
}

/// Adds `delta` into the row `key` of `txn`.
fn add_row(
    txn: &WriteTransaction,
    key: &BucketKey,
    delta: &UsageCounters,
) -> std::result::Result<(), String> {
    let (conn, hour, model, api_key) = key;
    let merged = |old: Option<&[u8]>| -> std::result::Result<Vec<u8>, String> {
        let mut counters = match old {
            Some(bytes) => decode(bytes).map_err(|e| e.to_string())?,
            None => UsageCounters::default(),
        };
        counters.merge(delta);
        serde_json::to_vec(&counters).map_err(|e| e.to_string())
    };
    if let Some(api_key) = api_key {
        let mut hours = txn.open_table(KEY_HOURS).map_err(|e| e.to_string())?;
        let row = (conn.as_str(), *hour, model.as_str(), api_key.as_str());
        let old = hours.get(row).map_err(|e| e.to_string())?;
        let bytes = merged(old.as_ref().map(|v| v.value()))?;
        drop(old);
        hours
            .insert(row, bytes.as_slice())
            .map_err(|e| e.to_string())?;
    } else {
        let mut hours = txn.open_table(HOURS).map_err(|e| e.to_string())?;
        let row = (conn.as_str(), *hour, model.as_str());
        let old = hours.get(row).map_err(|e| e.to_string())?;
        let bytes = merged(old.as_ref().map(|v| v.value()))?;
        drop(old);
        hours
            .insert(row, bytes.as_slice())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

impl WriteBehind for Pending {
    fn write_into(&self, txn: &WriteTransaction) -> std::result::Result<(), String> {
        let rows = {
            let mut b = self.lock()?;
            if b.pending.is_empty() {
                return Ok(());
            }
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            let seq = meta
                .get(FLUSHED)
                .map_err(|e| e.to_string())?
                .map_or(0, |v| v.value())
                .saturating_add(1);
            meta.insert(FLUSHED, seq).map_err(|e| e.to_string())?;
            let taken = std::mem::take(&mut b.pending);
            b.writing = taken.clone();
            b.writing_seq = seq;
            taken
        };
        for (key, delta) in &rows {
            add_row(txn, key, delta)?;
        }
        Ok(())
    }

    fn done(&self, committed: bool) {
        let Ok(mut b) = self.lock() else { return };
        let writing = std::mem::take(&mut b.writing);
        if !committed {
            for (key, delta) in writing {
                b.pending.entry(key).or_default().merge(&delta);
            }
        }
    }
}

#[derive(Clone)]
pub struct LocalUsageStore {
    db: Arc<Database>,
    /// Under a [`LazySync`]: the buckets in memory, and the sync that writes them back.
    lazy: Option<(Arc<Pending>, Arc<LazySync>)>,
}

impl LocalUsageStore {
    /// The store on `db` (shared with the other embedded adapters), creating its table.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(HOURS).map_err(db_err)?;
        txn.open_table(KEY_HOURS).map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db, lazy: None })
    }

    /// Keeps usage records in memory and leaves writing them back, and syncing, to `sync`
    /// (see the module's documentation and [`crate::sync`]).
    pub fn with_lazy_sync(mut self, sync: Arc<LazySync>) -> Self {
        let pending = Arc::new(Pending::default());
        sync.register(pending.clone());
        self.lazy = Some((pending, sync));
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(db_err)?
    }
}

#[async_trait]
impl UsageStore for LocalUsageStore {
    async fn record(&self, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        let key = (
            event.connection_id.clone(),
            event.hour(),
            event.model.clone(),
            event.api_key_id.clone(),
        );
        if let Some((pending, sync)) = &self.lazy {
            pending
                .lock()
                .map_err(db_err)?
                .pending
                .entry(key)
                .or_default()
                .add_event(event);
            sync.mark();
            return Ok(());
        }
        let mut delta = UsageCounters::default();
        delta.add_event(event);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            add_row(&txn, &key, &delta).map_err(db_err)?;
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn hours(&self, connection_id: &str, lo: i64, hi: i64) -> Result<Vec<UsageBucket>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let conn = connection_id.to_owned();
        let pending = self.lazy.as_ref().map(|(p, _)| p.clone());
        self.blocking(move |db| {
            // The pending buckets are copied and the snapshot taken under the same lock, so
            // no write-back can move buckets between the two.
            let ours = |k: &BucketKey| k.0 == conn && (lo..hi).contains(&k.1);
            let (txn, mut extra, writing) = match &pending {
                Some(p) => {
                    let b = p.lock().map_err(db_err)?;
                    let txn = db.begin_read().map_err(db_err)?;
                    let copy =
                        |m: &HashMap<BucketKey, UsageCounters>| -> Vec<(BucketKey, UsageCounters)> {
                            m.iter()
                                .filter(|(k, _)| ours(k))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        };
                    let writing = (b.writing_seq, copy(&b.writing));
                    (txn, copy(&b.pending), Some(writing))
                }
                None => (db.begin_read().map_err(db_err)?, Vec::new(), None),
            };
            if let Some((seq, writing)) = writing
                && !writing.is_empty()
            {
                let flushed = txn
                    .open_table(META)
                    .map_err(db_err)?
                    .get(FLUSHED)
                    .map_err(db_err)?
                    .map_or(0, |v| v.value());
                if flushed < seq {
                    extra.extend(writing);
                }
            }
            let mut out = Vec::new();
            let mut index: HashMap<(i64, String, Option<String>), usize> = HashMap::new();
            // `(conn, hi, "")` sorts before every model of hour `hi`: an exclusive end.
            let hours = txn.open_table(HOURS).map_err(db_err)?;
            for item in hours
                .range((conn.as_str(), lo, "")..(conn.as_str(), hi, ""))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                let (_, hour, model) = k.value();
                index.insert((hour, model.to_owned(), None), out.len());
                out.push(UsageBucket::hourly(
                    hour,
                    model.to_owned(),
                    decode(v.value())?,
                ));
            }
            let keyed = txn.open_table(KEY_HOURS).map_err(db_err)?;
            for item in keyed
                .range((conn.as_str(), lo, "", "")..(conn.as_str(), hi, "", ""))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                let (_, hour, model, api_key) = k.value();
                let mut bucket = UsageBucket::hourly(hour, model.to_owned(), decode(v.value())?);
                bucket.api_key_id = Some(api_key.to_owned());
                index.insert(
                    (hour, model.to_owned(), Some(api_key.to_owned())),
                    out.len(),
                );
                out.push(bucket);
            }
            for ((_, hour, model, api_key), delta) in extra {
                let row = (hour, model, api_key);
                match index.get(&row) {
                    Some(&i) => out[i].counters.merge(&delta),
                    None => {
                        let (hour, model, api_key) = row.clone();
                        let mut bucket = UsageBucket::hourly(hour, model, delta);
                        bucket.api_key_id = api_key;
                        index.insert(row, out.len());
                        out.push(bucket);
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn requests(store: &LocalUsageStore) -> u64 {
        store
            .hours("c1", 0, i64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|b| b.counters.requests)
            .sum()
    }

    /// The steps of a write-back one at a time: a query between the commit and `done` (the
    /// buckets in the table and still in `writing`) or after a failed commit counts each
    /// record once.
    #[tokio::test]
    async fn a_write_back_in_progress_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(dir.path()).unwrap();
        let sync = LazySync::new(db.clone());
        let store = LocalUsageStore::new(db.clone())
            .unwrap()
            .with_lazy_sync(sync);
        let pending = store.lazy.clone().unwrap().0;
        let at = time::OffsetDateTime::from_unix_timestamp(1_765_000_000).unwrap();
        let event = |key: Option<&str>| {
            let mut e = UsageEvent::new("c1", "m", at);
            e.api_key_id = key.map(str::to_owned);
            e
        };
        for key in [None, Some("k1"), Some("k1")] {
            store.record(&event(key)).await.unwrap();
        }
        assert_eq!(requests(&store).await, 3);

        // Committed, `done` not called yet.
        let txn = db.begin_write().unwrap();
        pending.write_into(&txn).unwrap();
        assert_eq!(requests(&store).await, 3, "before the commit");
        txn.commit().unwrap();
        assert_eq!(requests(&store).await, 3, "after the commit, before done");
        pending.done(true);
        assert_eq!(requests(&store).await, 3, "after done");

        // A write-back that fails: its buckets are pending again, counted once.
        store.record(&event(None)).await.unwrap();
        let txn = db.begin_write().unwrap();
        pending.write_into(&txn).unwrap();
        assert_eq!(requests(&store).await, 4);
        txn.abort().unwrap();
        pending.done(false);
        assert_eq!(requests(&store).await, 4, "after a failed write-back");
        let txn = db.begin_write().unwrap();
        pending.write_into(&txn).unwrap();
        txn.commit().unwrap();
        pending.done(true);
        assert_eq!(requests(&store).await, 4);
        // Everything is in the table now: a store without the memory reads the same.
        let plain = LocalUsageStore::new(db).unwrap();
        assert_eq!(requests(&plain).await, 4);
    }
}
