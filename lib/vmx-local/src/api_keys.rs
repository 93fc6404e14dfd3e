//! Gateway API keys on redb: the record (JSON) by id, and an index from the key's hash to
//! the id. Each write is one write transaction, so the two tables never disagree; a lookup by
//! hash is two point reads in one read transaction.

use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use time::OffsetDateTime;
use vmx_domain::api_key::{ApiKeyRecord, ApiKeyStore};
use vmx_domain::capacity::CapacityEntry;
use vmx_domain::{Error, Result};

/// id -> JSON of the record (the key's hash, never the key).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
/// hash (hex) -> id.
const HASHES: TableDefinition<&str, &str> = TableDefinition::new("api_key_hashes");

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded api key store: {e}"))
}

fn encode(k: &ApiKeyRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(k).map_err(db_err)
}

fn decode(bytes: &[u8]) -> Result<ApiKeyRecord> {
    serde_json::from_slice(bytes).map_err(|e| {
        db_err(format!(
            "corrupt api key record at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

#[derive(Clone)]
pub struct LocalApiKeyStore {
    pub(crate) db: Arc<Database>,
}

impl LocalApiKeyStore {
    /// The store on `db` (shared with the other embedded adapters), creating its tables.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(KEYS).map_err(db_err)?;
        txn.open_table(HASHES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
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

    /// Reads the record `id`, lets `change` edit it, and writes it back if it changed.
    async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ApiKeyRecord) + Send + 'static,
    ) -> Result<ApiKeyRecord> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let record = {
                let mut keys = txn.open_table(KEYS).map_err(db_err)?;
                let current = match keys.get(id.as_str()).map_err(db_err)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::NotFound { what: "API key" }),
                };
                let mut next = current.clone();
                change(&mut next);
                if next == current {
                    return Ok(current);
                }
                keys.insert(id.as_str(), encode(&next)?.as_slice())
                    .map_err(db_err)?;
                next
            };
            txn.commit().map_err(db_err)?;
            Ok(record)
        })
        .await
    }
}

#[async_trait]
impl ApiKeyStore for LocalApiKeyStore {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()> {
        let doc = encode(key)?;
        let (id, hash) = (key.id.clone(), key.hash.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut keys = txn.open_table(KEYS).map_err(db_err)?;
                let mut hashes = txn.open_table(HASHES).map_err(db_err)?;
                if keys.get(id.as_str()).map_err(db_err)?.is_some() {
                    return Err(Error::internal(format!("API key id {id} already exists")));
                }
                if hashes.get(hash.as_str()).map_err(db_err)?.is_some() {
                    return Err(Error::internal("API key hash already exists"));
                }
                keys.insert(id.as_str(), doc.as_slice()).map_err(db_err)?;
                hashes.insert(hash.as_str(), id.as_str()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let keys = txn.open_table(KEYS).map_err(db_err)?;
            let found = keys.get(id.as_str()).map_err(db_err)?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let hash = hash.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let hashes = txn.open_table(HASHES).map_err(db_err)?;
            let Some(id) = hashes.get(hash.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            let keys = txn.open_table(KEYS).map_err(db_err)?;
            let found = keys.get(id.value()).map_err(db_err)?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let after = after.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let keys = txn.open_table(KEYS).map_err(db_err)?;
            let lower = match after.as_deref() {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for item in keys
                .range::<&str>((lower, Bound::Unbounded))
                .map_err(db_err)?
                .take(limit)
            {
                let (_, v) = item.map_err(db_err)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn revoke(&self, id: &str, at: OffsetDateTime) -> Result<ApiKeyRecord> {
        self.update(id, move |k| {
            if k.revoked_at.is_none() {
                k.revoked_at = Some(at);
            }
        })
        .await
    }

    async fn set_capacity(&self, id: &str, capacity: Vec<CapacityEntry>) -> Result<ApiKeyRecord> {
        self.update(id, move |k| k.capacity = capacity).await
    }

    async fn mark_used(&self, id: &str, at: OffsetDateTime) -> Result<()> {
        self.update(id, move |k| {
            if k.last_used_at.is_none_or(|t| t < at) {
                k.last_used_at = Some(at);
            }
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut keys = txn.open_table(KEYS).map_err(db_err)?;
                let Some(current) = keys
                    .remove(id.as_str())
                    .map_err(db_err)?
                    .map(|v| decode(v.value()))
                    .transpose()?
                else {
                    return Err(Error::NotFound { what: "API key" });
                };
                let mut hashes = txn.open_table(HASHES).map_err(db_err)?;
                hashes.remove(current.hash.as_str()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }
}
