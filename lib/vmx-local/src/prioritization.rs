//! [`PrioritizationStore`] on redb: the pool definition as one JSON record, for the API key
//! store (same database).

use async_trait::async_trait;
use redb::{ReadableDatabase, TableDefinition};
use vmx_domain::prioritization::{Prioritization, PrioritizationStore};
use vmx_domain::{Error, Result};

use crate::api_keys::LocalApiKeyStore;

/// `"pools"` -> JSON of the definition.
const PRIORITIZATION: TableDefinition<&str, &[u8]> = TableDefinition::new("prioritization");
const KEY: &str = "pools";

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded prioritization store: {e}"))
}

#[async_trait]
impl PrioritizationStore for LocalApiKeyStore {
    async fn prioritization(&self) -> Result<Prioritization> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(db_err)?;
            let table = match txn.open_table(PRIORITIZATION) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Ok(Prioritization::default());
                }
                Err(e) => return Err(db_err(e)),
            };
            match table.get(KEY).map_err(db_err)? {
                None => Ok(Prioritization::default()),
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|_| db_err("corrupt prioritization definition")),
            }
        })
        .await
        .map_err(db_err)?
    }

    async fn put_prioritization(&self, definition: &Prioritization) -> Result<()> {
        let doc = serde_json::to_vec(definition).map_err(db_err)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut table = txn.open_table(PRIORITIZATION).map_err(db_err)?;
                table.insert(KEY, doc.as_slice()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
        .map_err(db_err)?
    }
}
