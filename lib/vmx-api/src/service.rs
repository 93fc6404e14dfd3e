//! The connections application service: create, read, update (with credential rotation)
//! and delete, on top of the store and secret-sealer ports.

use std::sync::Arc;

use serde_json::Value;
use vmx_domain::clock::Clock;
use vmx_domain::connection::{
    ConfigInput, Connection, ConnectionPatch, NewConnection, ProviderConfig, SecretInput,
    has_id_form, patched_config,
};
use vmx_domain::ports::{ConnectionStore, SecretSealer};
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::{SealContext, SecretString};
use vmx_domain::{Error, Result};

pub const API_KEY_FIELD: &str = "apiKey";

/// One page of connections and the id to continue after.
pub struct Page {
    pub items: Vec<Connection>,
    pub next_after: Option<String>,
}

/// Which connections a list returns: of one provider, and/or whose name contains `name`
/// (case-insensitive).
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub provider: Option<ProviderKind>,
    /// Lower-cased.
    name: Option<String>,
}

impl ListFilter {
    pub fn new(provider: Option<ProviderKind>, name: Option<&str>) -> Self {
        Self {
            provider,
            name: name.map(str::to_lowercase).filter(|n| !n.is_empty()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.provider.is_none() && self.name.is_none()
    }

    pub fn matches(&self, c: &Connection) -> bool {
        self.provider.is_none_or(|p| p == c.provider)
            && self
                .name
                .as_deref()
                .is_none_or(|n| c.name.to_lowercase().contains(n))
    }
}

/// Connections read per store call while filtering a list.
const SCAN_PAGE: usize = 100;

pub struct ConnectionService {
    store: Arc<dyn ConnectionStore>,
    sealer: Arc<dyn SecretSealer>,
    clock: Arc<dyn Clock>,
}

/// How many times an update without an explicit version is retried on a concurrent change.
const UNVERSIONED_RETRIES: usize = 3;

impl ConnectionService {
    pub fn new(
        store: Arc<dyn ConnectionStore>,
        sealer: Arc<dyn SecretSealer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            sealer,
            clock,
        }
    }

    /// The connection a caller names by id or name, in one lookup order everywhere
    /// (inference routing, API-key scopes): a key with the form of an id ([`has_id_form`])
    /// is looked up as an id first, then, and any other key only, as a name. Names never
    /// have the form of an id, so the name lookup of an id-form key finds only a connection
    /// named before that rule.
    pub async fn find(&self, id_or_name: &str) -> Result<Option<Connection>> {
        if has_id_form(id_or_name)
            && let Some(c) = self.store.get(id_or_name).await?
        {
            return Ok(Some(c));
        }
        self.store.get_by_name(id_or_name).await
    }

    pub fn store(&self) -> &Arc<dyn ConnectionStore> {
        &self.store
    }

    pub async fn create(&self, body: &Value) -> Result<Connection> {
        let input = NewConnection::parse(body)?;
        let id = uuid::Uuid::now_v7().to_string();
        let config = self.config_from_input(&id, input.config, None).await?;
        let now = self.clock.now();
        let connection = Connection {
            id,
            name: input.name,
            description: input.description,
            provider: input.provider,
            config,
            capacity: input.capacity,
            allowed_models: input.allowed_models,
            discovered_capacity: Default::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        self.store.insert(&connection).await?;
        Ok(connection)
    }

    pub async fn get(&self, id: &str) -> Result<Connection> {
        self.store
            .get(id)
            .await?
            .ok_or(Error::NotFound { what: "connection" })
    }

    pub async fn list(&self, limit: usize, after: Option<&str>) -> Result<Page> {
        let mut items = self.store.list(limit + 1, after).await?;
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// A page of the connections that `filter` selects, in id order. Reads the store in
    /// pages until `limit` matches are found or the connections run out.
    pub async fn list_filtered(
        &self,
        limit: usize,
        after: Option<&str>,
        filter: &ListFilter,
    ) -> Result<Page> {
        if filter.is_empty() {
            return self.list(limit, after).await;
        }
        let mut items = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let batch = self.store.list(SCAN_PAGE, cursor.as_deref()).await?;
            let exhausted = batch.len() < SCAN_PAGE;
            cursor = batch.last().map(|c| c.id.clone());
            for c in batch {
                if filter.matches(&c) {
                    items.push(c);
                    if items.len() > limit {
                        break;
                    }
                }
            }
            if items.len() > limit || exhausted || cursor.is_none() {
                break;
            }
        }
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    /// Applies a partial update. With `if_match` (or a `version` in the body) the update
    /// fails with a conflict unless that is the stored version; without one, a concurrent
    /// change is retried on the fresh copy.
    pub async fn update(
        &self,
        id: &str,
        body: &Value,
        if_match: Option<u64>,
    ) -> Result<Connection> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get(id).await?;
            let patch = ConnectionPatch::parse(body, current.provider)?;
            let expected = if_match.or(patch.version);
            if expected.is_some_and(|v| v != current.version) {
                return Err(Error::VersionConflict {
                    current: current.version,
                });
            }
            let next = self.apply(&current, patch).await?;
            match self.store.replace(&current, &next, current.version).await {
                Err(Error::VersionConflict { .. })
                    if expected.is_none() && attempt < UNVERSIONED_RETRIES => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok(next),
            }
        }
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.store.delete(id).await
    }

    /// The plaintext API key of a connection, for a provider call. Never log or return it.
    pub async fn api_key(&self, connection: &Connection) -> Result<Option<SecretString>> {
        match &connection.config {
            ProviderConfig::ApiKey { api_key } => {
                let ctx = SealContext {
                    connection_id: &connection.id,
                    field: API_KEY_FIELD,
                };
                self.sealer.open(api_key, &ctx).await.map(Some)
            }
            ProviderConfig::Aws(_) => Ok(None),
        }
    }

    async fn apply(&self, current: &Connection, patch: ConnectionPatch) -> Result<Connection> {
        let mut next = current.clone();
        if let Some(name) = patch.name {
            next.name = name;
        }
        if let Some(description) = patch.description {
            next.description = description;
        }
        if let Some(capacity) = patch.capacity {
            next.capacity = capacity;
        }
        if let Some(models) = patch.allowed_models {
            next.allowed_models = models;
        }
        if let Some(config_patch) = patch.config {
            let input = patched_config(current.provider, &current.config, &config_patch)?;
            next.config = self
                .config_from_input(&current.id, input, Some(&current.config))
                .await?;
        }
        next.version = current.version + 1;
        next.updated_at = self.clock.now();
        Ok(next)
    }

    /// Turns validated config input into stored config: a new secret is sealed (rotation),
    /// a kept one reuses the stored envelope.
    async fn config_from_input(
        &self,
        id: &str,
        input: ConfigInput,
        stored: Option<&ProviderConfig>,
    ) -> Result<ProviderConfig> {
        match input {
            ConfigInput::ApiKey(SecretInput::New(secret)) => {
                let ctx = SealContext {
                    connection_id: id,
                    field: API_KEY_FIELD,
                };
                let api_key = self.sealer.seal(&secret, &ctx).await?;
                Ok(ProviderConfig::ApiKey { api_key })
            }
            ConfigInput::ApiKey(SecretInput::Keep) => match stored {
                Some(cfg @ ProviderConfig::ApiKey { .. }) => Ok(cfg.clone()),
                _ => Err(Error::invalid("config.apiKey", "is required")),
            },
            ConfigInput::Aws {
                mut config,
                external_id_given,
            } => {
                if !external_id_given && config.external_id.is_empty() {
                    config.external_id = generate_external_id()?;
                }
                Ok(ProviderConfig::Aws(config))
            }
        }
    }
}

/// `vmx-` and 32 hex digits: what the customer puts into the role's trust policy.
fn generate_external_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("random source: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("vmx-{hex}"))
}
