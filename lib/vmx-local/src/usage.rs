//! Usage statistics on redb: one row per (connection, hour, model), and per API key for the
//! requests of gateway keys, holding the bucket's counters as JSON. Recording is one write
//! transaction (read, add, write: serializable, so concurrent records never lose a count); a query is one range scan of the connection's
//! hours in each of the two tables, rolled up to days (and summed over keys) in memory.
//!
//! Rows are kept until the database is deleted: a laptop's usage is small. Deleting a
//! connection keeps its usage (as in DynamoDB, where it expires after
//! [`vmx_domain::usage::RETENTION_DAYS`]).

use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use vmx_domain::usage::{UsageBucket, UsageCounters, UsageEvent, UsageStore};
use vmx_domain::{Error, Result};

use crate::sync::{LazySync, commit};

/// (connection id, hour start in epoch seconds, model) -> JSON of [`UsageCounters`]: the
/// requests made without an API key (the admin token).
const HOURS: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("usage_hours");
/// (connection id, hour start, model, API key id) -> JSON of [`UsageCounters`]: the requests
/// of gateway API keys (a table of its own, so databases written before keys were recorded
/// open unchanged).
const KEY_HOURS: TableDefinition<(&str, i64, &str, &str), &[u8]> =
    TableDefinition::new("usage_key_hours");

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

#[derive(Clone)]
pub struct LocalUsageStore {
    db: Arc<Database>,
    sync: Option<Arc<LazySync>>,
}

impl LocalUsageStore {
    /// The store on `db` (shared with the other embedded adapters), creating its table.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(HOURS).map_err(db_err)?;
        txn.open_table(KEY_HOURS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db, sync: None })
    }

    /// Commits usage records lazily, made durable by `sync` (see [`crate::sync`]).
    pub fn with_lazy_sync(mut self, sync: Arc<LazySync>) -> Self {
        self.sync = Some(sync);
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, Option<&LazySync>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (db, sync) = (self.db.clone(), self.sync.clone());
        tokio::task::spawn_blocking(move || f(&db, sync.as_deref()))
            .await
            .map_err(db_err)?
    }
}

#[async_trait]
impl UsageStore for LocalUsageStore {
    async fn record(&self, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        let event = event.clone();
        self.blocking(move |db, sync| {
            let txn = db.begin_write().map_err(db_err)?;
            let (conn, hour, model) = (
                event.connection_id.as_str(),
                event.hour(),
                event.model.as_str(),
            );
            if let Some(api_key) = event.api_key_id.as_deref() {
                let mut hours = txn.open_table(KEY_HOURS).map_err(db_err)?;
                let key = (conn, hour, model, api_key);
                let mut counters = match hours.get(key).map_err(db_err)? {
                    Some(v) => decode(v.value())?,
                    None => UsageCounters::default(),
                };
                counters.add_event(&event);
                let bytes = serde_json::to_vec(&counters).map_err(db_err)?;
                hours.insert(key, bytes.as_slice()).map_err(db_err)?;
            } else {
                let mut hours = txn.open_table(HOURS).map_err(db_err)?;
                let key = (conn, hour, model);
                let mut counters = match hours.get(key).map_err(db_err)? {
                    Some(v) => decode(v.value())?,
                    None => UsageCounters::default(),
                };
                counters.add_event(&event);
                let bytes = serde_json::to_vec(&counters).map_err(db_err)?;
                hours.insert(key, bytes.as_slice()).map_err(db_err)?;
            }
            commit(txn, sync).map_err(db_err)
        })
        .await
    }

    async fn hours(&self, connection_id: &str, lo: i64, hi: i64) -> Result<Vec<UsageBucket>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let conn = connection_id.to_owned();
        self.blocking(move |db, _| {
            let txn = db.begin_read().map_err(db_err)?;
            let mut out = Vec::new();
            // `(conn, hi, "")` sorts before every model of hour `hi`: an exclusive end.
            let hours = txn.open_table(HOURS).map_err(db_err)?;
            for item in hours
                .range((conn.as_str(), lo, "")..(conn.as_str(), hi, ""))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                let (_, hour, model) = k.value();
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
                out.push(bucket);
            }
            Ok(out)
        })
        .await
    }
}
