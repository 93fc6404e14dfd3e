//! The connection store on redb. Each operation is one write transaction, so name
//! uniqueness, versioned updates and deletes are atomic exactly as the DynamoDB adapter's
//! conditional transactions are.
//!
//! Discovered capacity lives in the connection's JSON like everything else; `replace` keeps
//! the stored one and `record_discovered` changes only it, each inside one serializable write
//! transaction, so neither can erase the other. The history of discovered-limit changes is
//! written in the same transaction as the limits, so it holds every change exactly once; a
//! connection's changes older than `HISTORY_RETENTION_DAYS` are dropped when it records a
//! new one, and all of them when it is deleted.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use vmx_domain::connection::{Connection, DiscoveredModel};
use vmx_domain::discovered::{
    ChangeSource, DiscoveredCapacityStore, DiscoveredChange, HISTORY_RETENTION_DAYS, changes,
    validate_model,
};
use vmx_domain::ports::ConnectionStore;
use vmx_domain::{Error, Result};

/// id -> JSON of the stored connection (secrets only as envelopes).
const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections");
/// name -> id.
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("connection_names");
/// (connection id, `DiscoveredChange::key`) -> JSON of the change.
const HISTORY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("discovered_history");

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded store: {e}"))
}

/// Opens (or creates) the database file `vmx.redb` in `dir`.
pub fn open_database(dir: &Path) -> Result<Arc<Database>> {
    std::fs::create_dir_all(dir).map_err(|e| db_err(format!("create {}: {e}", dir.display())))?;
    let db = Database::create(dir.join("vmx.redb")).map_err(db_err)?;
    Ok(Arc::new(db))
}

#[derive(Clone)]
pub struct LocalStore {
    db: Arc<Database>,
}

impl LocalStore {
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(CONNECTIONS).map_err(db_err)?;
        txn.open_table(NAMES).map_err(db_err)?;
        txn.open_table(HISTORY).map_err(db_err)?;
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
}

fn encode(c: &Connection) -> Result<Vec<u8>> {
    serde_json::to_vec(c).map_err(db_err)
}

fn decode(bytes: &[u8]) -> Result<Connection> {
    serde_json::from_slice(bytes).map_err(|e| db_err(format!("corrupt connection record: {e}")))
}

#[async_trait]
impl ConnectionStore for LocalStore {
    async fn insert(&self, connection: &Connection) -> Result<()> {
        let doc = encode(connection)?;
        let (id, name) = (connection.id.clone(), connection.name.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut names = txn.open_table(NAMES).map_err(db_err)?;
                if names.get(name.as_str()).map_err(db_err)?.is_some() {
                    return Err(Error::NameTaken(name));
                }
                let mut conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
                if conns.get(id.as_str()).map_err(db_err)?.is_some() {
                    return Err(Error::internal("connection id collision"));
                }
                names.insert(name.as_str(), id.as_str()).map_err(db_err)?;
                conns.insert(id.as_str(), doc.as_slice()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Connection>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
            let found = conns.get(id.as_str()).map_err(db_err)?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn get_by_name(&self, name: &str) -> Result<Option<Connection>> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let names = txn.open_table(NAMES).map_err(db_err)?;
            let Some(id) = names.get(name.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            let conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
            let found = conns.get(id.value()).map_err(db_err)?;
            found.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<Connection>> {
        let after = after.map(str::to_owned);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
            let lower = match after.as_deref() {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for item in conns
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

    async fn replace(
        &self,
        _previous: &Connection,
        next: &Connection,
        expected_version: u64,
    ) -> Result<()> {
        // The stored name is read inside the transaction, so `_previous` is not needed here.
        let mut next = next.clone();
        let (id, new_name) = (next.id.clone(), next.name.clone());
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
                let current = match conns.get(id.as_str()).map_err(db_err)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::NotFound { what: "connection" }),
                };
                if current.version != expected_version {
                    return Err(Error::VersionConflict {
                        current: current.version,
                    });
                }
                // Discovered capacity is not the admin's to change (see
                // `vmx_domain::discovered`): the stored one stays.
                next.discovered_capacity = current.discovered_capacity;
                let doc = encode(&next)?;
                if current.name != new_name {
                    let mut names = txn.open_table(NAMES).map_err(db_err)?;
                    if names.get(new_name.as_str()).map_err(db_err)?.is_some() {
                        return Err(Error::NameTaken(new_name));
                    }
                    names.remove(current.name.as_str()).map_err(db_err)?;
                    names
                        .insert(new_name.as_str(), id.as_str())
                        .map_err(db_err)?;
                }
                conns.insert(id.as_str(), doc.as_slice()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
                let Some(current) = conns
                    .remove(id.as_str())
                    .map_err(db_err)?
                    .map(|v| decode(v.value()))
                    .transpose()?
                else {
                    return Err(Error::NotFound { what: "connection" });
                };
                let mut names = txn.open_table(NAMES).map_err(db_err)?;
                names.remove(current.name.as_str()).map_err(db_err)?;
                let mut history = txn.open_table(HISTORY).map_err(db_err)?;
                history
                    .retain_in((id.as_str(), "")..(id.as_str(), "~"), |_, _| false)
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }
}

#[async_trait]
impl DiscoveredCapacityStore for LocalStore {
    async fn record_discovered(
        &self,
        connection_id: &str,
        model: &str,
        discovered: &DiscoveredModel,
        source: ChangeSource,
    ) -> Result<Vec<DiscoveredChange>> {
        validate_model(model)?;
        let (id, model, discovered) = (
            connection_id.to_owned(),
            model.to_owned(),
            discovered.clone(),
        );
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let changed = {
                let mut conns = txn.open_table(CONNECTIONS).map_err(db_err)?;
                let mut current = match conns.get(id.as_str()).map_err(db_err)? {
                    Some(v) => decode(v.value())?,
                    None => return Err(Error::NotFound { what: "connection" }),
                };
                let models = &mut current.discovered_capacity.models;
                let previous = models.get(&model);
                if previous.is_some_and(|stored| stored.updated_at >= discovered.updated_at) {
                    // A late observation: what is stored is as new or newer.
                    return Ok(Vec::new());
                }
                let changed = changes(&model, previous, &discovered, source);
                models.insert(model, discovered);
                let doc = encode(&current)?;
                conns.insert(id.as_str(), doc.as_slice()).map_err(db_err)?;
                if let Some(first) = changed.first() {
                    let mut history = txn.open_table(HISTORY).map_err(db_err)?;
                    for change in &changed {
                        let json = serde_json::to_vec(change).map_err(db_err)?;
                        history
                            .insert((id.as_str(), change.key().as_str()), json.as_slice())
                            .map_err(db_err)?;
                    }
                    // Keys start with the time, so older changes sort before this prefix.
                    let oldest_kept = first.at - time::Duration::days(HISTORY_RETENTION_DAYS);
                    let cutoff = format!("{:020}", oldest_kept.unix_timestamp_nanos().max(0));
                    history
                        .retain_in((id.as_str(), "")..(id.as_str(), cutoff.as_str()), |_, _| {
                            false
                        })
                        .map_err(db_err)?;
                }
                changed
            };
            txn.commit().map_err(db_err)?;
            Ok(changed)
        })
        .await
    }

    async fn discovered_history(
        &self,
        connection_id: &str,
        model: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DiscoveredChange>> {
        let (id, model, after) = (
            connection_id.to_owned(),
            model.map(str::to_owned),
            after.map(str::to_owned),
        );
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let history = txn.open_table(HISTORY).map_err(db_err)?;
            let upper = match after.as_deref() {
                Some(a) => Bound::Excluded((id.as_str(), a)),
                None => Bound::Excluded((id.as_str(), "~")),
            };
            let lower = Bound::Included((id.as_str(), ""));
            let mut out = Vec::new();
            for item in history
                .range::<(&str, &str)>((lower, upper))
                .map_err(db_err)?
                .rev()
            {
                if out.len() >= limit {
                    break;
                }
                let (_, v) = item.map_err(db_err)?;
                let change: DiscoveredChange = serde_json::from_slice(v.value())
                    .map_err(|e| db_err(format!("corrupt history record: {e}")))?;
                if model.as_deref().is_none_or(|m| m == change.model) {
                    out.push(change);
                }
            }
            Ok(out)
        })
        .await
    }
}
