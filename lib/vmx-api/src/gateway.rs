//! The inference gateway: routes a request to its connection, enforces capacity, calls the
//! provider, and accounts for what happened (reconciliation, usage, discovered limits).
//!
//! Hot-path cost: API keys, connections and their decrypted credentials, and the
//! prioritization pools are cached per process for `connection_cache_ttl`, so a warm
//! request makes no store read and no key-service call for them. Admission is one ledger
//! write before the provider call; its output reservation is the output limit the provider
//! is then sent ([`Gateway::admit`]).
//!
//! Admin changes reach warm instances through that same write (propagation): every change
//! of a connection (rotation, `PATCH`, `DELETE`), of an API key (revocation, `PATCH`) and of
//! the prioritization pools raises the configuration version of the connections concerned
//! ([`CapacityLedger::bump_config_version`]); the admission returns the version, and one
//! that differs from the version the cached connection first saw refunds the admission,
//! drops the cached connection, every cached key lookup and the pools, and the route runs
//! the request again from the key lookup ([`crate::routes::admit_current`]). A connection loaded anew
//! for a key whose lookup came from the cache re-reads the key first (a revocation may have
//! raised only the versions of connections this process had not loaded). Locally the admin
//! change clears the one process's caches at once. A connection whose admissions write no
//! connection item (only source-ip windows, or no window at all) still takes up to
//! `connection_cache_ttl`.
//!
//! Floods of unknown credentials: a token that cannot be a key (shape or checksum,
//! [`vmx_domain::api_key::key_shape`]) is refused without a lookup; a key or connection
//! that the store does not hold is remembered as unknown for `unknown_cache_ttl`, in a
//! cache of its own, so neither kind of flood evicts a cached key or connection in use
//! (the caches are in [`cache`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use serde_json::{Map, Value};
use vmx_domain::admission::{self, Adjustment, Admission, Admitted, Reservation, TokenEstimate};
use vmx_domain::api_key::{ApiKeyRecord, ApiKeyStore, hash_key, key_shape};
use vmx_domain::capacity::Period;
use vmx_domain::clock::Clock;
use vmx_domain::connection::{Connection, DiscoveredLimit, DiscoveredModel, ProviderConfig};
use vmx_domain::discovered::{ChangeNotifier, ChangeSource, DiscoveredCapacityStore, NoNotifier};
use vmx_domain::inference::{
    ChatProvider, ChatRequest, Credentials, MessagesProvider, ProviderError,
};
use vmx_domain::output::{self, Route};
use vmx_domain::ports::CapacityLedger;
use vmx_domain::prioritization::Prioritization;
use vmx_domain::provider::ProviderKind;
use vmx_domain::usage::{ErrorClass, UsageEvent, UsageStore};
use vmx_domain::{Error, Result};

use crate::error::ApiError;
use crate::service::ConnectionService;

pub mod cache;
use cache::TtlCache;

/// A connection ready for inference: its record and decrypted credentials.
pub struct Resolved {
    pub connection: Connection,
    pub credentials: Credentials,
    /// The configuration version the first admission after loading returned
    /// ([`UNKNOWN_VERSION`] until then); an admission returning another one finds this
    /// entry stale ([`Gateway::admit`]).
    config_version: AtomicU64,
}

/// [`Resolved::config_version`] before any admission returned one.
const UNKNOWN_VERSION: u64 = u64::MAX;

impl Resolved {
    pub fn new(connection: Connection, credentials: Credentials) -> Self {
        Self {
            connection,
            credentials,
            config_version: AtomicU64::new(UNKNOWN_VERSION),
        }
    }

    /// Whether `version`, returned by an admission, is the one this entry was loaded with:
    /// the first version returned after loading is taken as that one.
    fn current(&self, version: u64) -> bool {
        match self.config_version.compare_exchange(
            UNKNOWN_VERSION,
            version,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(seen) => seen == version,
        }
    }
}

/// Tunables of the gateway (from `Config`).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub connection_cache_ttl: Duration,
    pub default_output_tokens: u64,
    pub max_messages: usize,
    /// Run after-response work (reconciliation, usage, discovered limits) in a background
    /// task (a long-lived server) or before the response completes (Lambda, where a frozen
    /// environment could lose a background task).
    pub background_accounting: bool,
    /// IPv6 callers share a `source-ip` window per network of this many bits
    /// (`VMX_IPV6_PREFIX_LEN`, default 64).
    pub ipv6_prefix_len: u8,
    /// Sizes of the key and connection caches and of the unknown-credential caches.
    pub caches: CacheOptions,
    /// Background accounting tasks allowed to wait at once; past it the work runs before
    /// the response completes, which holds the request (and its in-flight slot) until done.
    pub max_pending_accounting: usize,
    /// Where each inference's metrics go (the binary chooses: EMF in Lambda, Prometheus
    /// locally; off by default).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Bounds of the gateway's caches (`Config`: `VMX_API_KEY_CACHE_SIZE`,
/// `VMX_CONNECTION_CACHE_SIZE`, `VMX_UNKNOWN_CACHE_SIZE`, `VMX_UNKNOWN_CACHE_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// API keys found (by hash).
    pub keys: usize,
    /// Resolved connections (by the id or name a request gave).
    pub connections: usize,
    /// Keys and connection names the store does not hold, each kind in a cache this large.
    pub unknown: usize,
    /// How long an unknown key or connection name is answered as unknown without a lookup.
    pub unknown_ttl: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            keys: crate::config::DEFAULT_API_KEY_CACHE_SIZE,
            connections: crate::config::DEFAULT_CONNECTION_CACHE_SIZE,
            unknown: crate::config::DEFAULT_UNKNOWN_CACHE_SIZE,
            unknown_ttl: crate::config::DEFAULT_UNKNOWN_CACHE_TTL,
        }
    }
}

impl CacheOptions {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            keys: config.api_key_cache_size,
            connections: config.connection_cache_size,
            unknown: config.unknown_cache_size,
            unknown_ttl: config.unknown_cache_ttl,
        }
    }
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            connection_cache_ttl: Duration::from_secs(30),
            default_output_tokens: admission::DEFAULT_OUTPUT_RESERVATION,
            max_messages: 2048,
            background_accounting: false,
            ipv6_prefix_len: crate::config::DEFAULT_IPV6_PREFIX_LEN,
            caches: CacheOptions::default(),
            max_pending_accounting: crate::config::DEFAULT_MAX_PENDING_ACCOUNTING,
            metrics: Arc::default(),
        }
    }
}

/// What `GET /v1/models` lists of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub id: String,
    pub name: String,
    pub provider: ProviderKind,
    pub created_at: OffsetDateTime,
    pub allowed_models: Vec<String>,
}

/// Most connections the model catalog reads.
pub const CATALOG_SCAN_LIMIT: usize = 1000;

/// What identifies a set of provider limits: (period, metric, limit) sorted.
type LimitShape = Vec<(Period, String, u64)>;

/// The ports the gateway works with, built once per process.
pub struct GatewayPorts {
    pub connections: Arc<ConnectionService>,
    pub ledger: Arc<dyn CapacityLedger>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub usage: Arc<dyn UsageStore>,
    pub discovered: Arc<dyn DiscoveredCapacityStore>,
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
}

/// The provider adapters of a process.
#[derive(Default, Clone)]
pub struct Providers {
    /// OpenAI Chat Completions, every provider.
    pub chat: HashMap<ProviderKind, Arc<dyn ChatProvider>>,
    /// Anthropic Messages passthrough (`anthropic`, `aws-bedrock-invoke`).
    pub messages: HashMap<ProviderKind, Arc<dyn MessagesProvider>>,
}

impl Providers {
    /// Adds the adapter of `kind` that a binary built (replacing any of that kind): `chat`
    /// serves `/v1/chat/completions`, `messages` `/v1/messages` when the provider speaks
    /// the Anthropic Messages API.
    pub fn add(
        &mut self,
        kind: ProviderKind,
        chat: Arc<dyn ChatProvider>,
        messages: Option<Arc<dyn MessagesProvider>>,
    ) {
        self.chat.insert(kind, chat);
        match messages {
            Some(m) => self.messages.insert(kind, m),
            None => self.messages.remove(&kind),
        };
    }
}

/// One adapter as a binary registers it: its kind, chat adapter and Messages adapter if any.
pub type ProviderEntry = (
    ProviderKind,
    Arc<dyn ChatProvider>,
    Option<Arc<dyn MessagesProvider>>,
);

impl Extend<ProviderEntry> for Providers {
    /// [`Providers::add`] for each entry.
    fn extend<I: IntoIterator<Item = ProviderEntry>>(&mut self, entries: I) {
        for (kind, chat, messages) in entries {
            self.add(kind, chat, messages);
        }
    }
}

pub struct Gateway {
    pub connections: Arc<ConnectionService>,
    pub ledger: Arc<dyn CapacityLedger>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub usage: Arc<dyn UsageStore>,
    pub discovered: Arc<dyn DiscoveredCapacityStore>,
    providers: Providers,
    pub clock: Arc<dyn Clock>,
    pub options: GatewayOptions,
    /// Resolved connections by the id or name a request gave.
    cache: TtlCache<String, Arc<Resolved>>,
    /// Ids and names no connection had when last looked up.
    unknown_connections: TtlCache<String, ()>,
    /// The connections `GET /v1/models` lists (one entry).
    catalog: TtlCache<(), Arc<Vec<CatalogEntry>>>,
    /// API keys found, by hash.
    keys: TtlCache<String, ApiKeyRecord>,
    /// Hashes of keys the store did not hold when last looked up.
    unknown_keys: TtlCache<String, ()>,
    /// Background accounting tasks pending ([`GatewayOptions::max_pending_accounting`]).
    accounting_slots: Arc<tokio::sync::Semaphore>,
    /// The provider limits last written per (connection, model), so unchanged limits are
    /// never written again.
    known_limits: Mutex<HashMap<(String, String), LimitShape>>,
    /// When this process last wrote each key's `lastUsedAt` ([`Gateway::note_key_used`]).
    key_use_marks: Mutex<HashMap<String, OffsetDateTime>>,
    /// Told of discovered-capacity changes ([`Gateway::with_notifier`]; nobody by default).
    notifier: Arc<dyn ChangeNotifier>,
    /// The prioritization pools (one entry, reused for `connection_cache_ttl`; see
    /// [`Self::pools`]).
    pools: TtlCache<(), Arc<Prioritization>>,
}

/// How often one process writes a key's `lastUsedAt` at most (and how stale it may be).
pub const LAST_USED_INTERVAL: time::Duration = time::Duration::minutes(1);

/// `<connection>/<model>`, split at the first `/`.
pub fn split_model(model: &str) -> Option<(&str, &str)> {
    let (conn, rest) = model.split_once('/')?;
    (!conn.is_empty() && !rest.is_empty()).then_some((conn, rest))
}

impl Gateway {
    pub fn new(ports: GatewayPorts, options: GatewayOptions) -> Self {
        let (ttl, c) = (options.connection_cache_ttl, options.caches);
        Self {
            cache: TtlCache::new(c.connections, ttl),
            unknown_connections: TtlCache::new(c.unknown, c.unknown_ttl),
            catalog: TtlCache::new(1, ttl),
            pools: TtlCache::new(1, ttl),
            keys: TtlCache::new(c.keys, ttl),
            unknown_keys: TtlCache::new(c.unknown, c.unknown_ttl),
            accounting_slots: Arc::new(tokio::sync::Semaphore::new(options.max_pending_accounting)),
            connections: ports.connections,
            ledger: ports.ledger,
            api_keys: ports.api_keys,
            usage: ports.usage,
            discovered: ports.discovered,
            providers: ports.providers,
            clock: ports.clock,
            options,
            known_limits: Mutex::new(HashMap::new()),
            key_use_marks: Mutex::new(HashMap::new()),
            notifier: Arc::new(NoNotifier),
        }
    }

    /// The gateway telling `notifier` of discovered-capacity changes (EventBridge in AWS).
    pub fn with_notifier(mut self, notifier: Arc<dyn ChangeNotifier>) -> Self {
        self.notifier = notifier;
        self
    }

    pub(crate) fn notifier(&self) -> &dyn ChangeNotifier {
        self.notifier.as_ref()
    }

    /// The API key record for a presented key, if it exists (revoked or expired included:
    /// the caller checks). A token that cannot be a key ([`key_shape`]) is `None` without a
    /// lookup. Records found are cached for `connection_cache_ttl` (a revocation reaches
    /// other warm instances sooner, at their next admission: see the module docs; at once
    /// in this process); a key not found is
    /// answered as unknown for `unknown_cache_ttl` without another lookup.
    pub async fn find_key(&self, key: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(self.lookup_key(key).await?.map(|(record, _)| record))
    }

    /// [`Self::find_key`], telling whether the record came from this process's cache.
    pub async fn lookup_key(&self, key: &str) -> Result<Option<(ApiKeyRecord, bool)>> {
        if key_shape(key).is_none() {
            return Ok(None);
        }
        self.lookup_key_hash(hash_key(key)).await
    }

    /// [`Self::lookup_key`] of a key known by its hash.
    pub async fn lookup_key_hash(&self, hash: String) -> Result<Option<(ApiKeyRecord, bool)>> {
        if let Some(r) = self.keys.get(&hash) {
            return Ok(Some((r, true)));
        }
        if self.unknown_keys.get(&hash).is_some() {
            return Ok(None);
        }
        let found = self
            .keys
            .get_or_load(&hash, async {
                // Another caller's lookup of this key may have found nothing meanwhile.
                if self.unknown_keys.get(&hash).is_some() {
                    return Ok(None);
                }
                let found = self.api_keys.find_by_hash(&hash).await?;
                if found.is_none() {
                    self.unknown_keys.insert(hash.clone(), ());
                }
                Ok(found)
            })
            .await?;
        Ok(found.map(|r| (r, false)))
    }

    /// Keeps the key's `lastUsedAt` within [`LAST_USED_INTERVAL`] of its last use without a
    /// write per request: nothing is written when the record (as this process read it) or
    /// this process's own last write is less than that old, so a key costs at most one
    /// [`ApiKeyStore::mark_used`] a minute per process (run like the other after-response
    /// work, see [`GatewayOptions::background_accounting`]); a failure is logged.
    pub async fn note_key_used(self: &Arc<Self>, key: &ApiKeyRecord) {
        let now = self.clock.now();
        let fresh = |at: OffsetDateTime| now - at < LAST_USED_INTERVAL;
        if key.last_used_at.is_some_and(fresh) {
            return;
        }
        let due = match self.key_use_marks.lock() {
            Ok(mut marks) if !marks.get(&key.id).copied().is_some_and(fresh) => {
                if marks.len() > 10_000 {
                    marks.clear();
                }
                marks.insert(key.id.clone(), now);
                true
            }
            _ => false,
        };
        if !due {
            return;
        }
        let (gateway, id) = (self.clone(), key.id.clone());
        self.account(async move {
            if let Err(e) = gateway.api_keys.mark_used(&id, now).await {
                tracing::warn!(error = %e, api_key_id = %id, "lastUsedAt not written");
            }
        })
        .await;
    }

    /// Forgets every cached API key lookup (found or unknown).
    pub fn invalidate_keys(&self) {
        self.keys.clear();
        self.unknown_keys.clear();
    }

    /// Forgets the cached lookup of the key with this id (after a revocation or deletion).
    pub fn invalidate_key(&self, id: &str) {
        self.keys.remove_where(|r| r.id == id);
    }

    /// Tells every instance that the connection changed (rotation, `PATCH`, `DELETE`):
    /// raises its configuration version, which the next admission on it returns (see the
    /// module docs). One ledger write; a no-op locally.
    pub async fn announce_change(&self, connection_id: &str) -> Result<()> {
        self.ledger.bump_config_version(connection_id).await
    }

    /// Tells every instance that the key changed (revoked, or its own capacity replaced):
    /// raises the configuration version of each connection it reaches (every connection
    /// when it is not scoped; at most 16 writes at a time), so that an instance holding the
    /// key's lookup reads it again at its next admission on any of them. Locally, where the
    /// ledger keeps no version, nothing is read or written.
    pub async fn announce_key_change(&self, key: &ApiKeyRecord) -> Result<()> {
        if !self.ledger.keeps_config_version() {
            return Ok(());
        }
        let ids = self.connections_of_key(key).await?;
        self.announce_each(ids).await
    }

    /// Tells every instance that the prioritization pools changed: raises the configuration
    /// version of every connection (a listing and one write per connection, 16 at a time),
    /// so that an instance drops its cached pools at its next admission on any of them.
    /// Locally, where the ledger keeps no version, nothing is read or written.
    pub async fn announce_pools_change(&self) -> Result<()> {
        if !self.ledger.keeps_config_version() {
            return Ok(());
        }
        let ids = self.all_connection_ids().await?;
        self.announce_each(ids).await
    }

    /// [`Self::announce_change`] of each of `ids`, at most 16 at a time.
    async fn announce_each(&self, ids: Vec<String>) -> Result<()> {
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(ids)
            .map(|id| async move { self.announce_change(&id).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Ids of every connection, listed 100 at a time.
    async fn all_connection_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.connections.list(100, after.as_deref()).await?;
            ids.extend(page.items.into_iter().map(|c| c.id));
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// Ids of the connections `key` reaches, sorted, each once: its scope (ids, or names in
    /// keys stored before scopes were resolved, looked up), or every connection for an
    /// unscoped key (listed 100 at a time).
    pub async fn connections_of_key(&self, key: &ApiKeyRecord) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        match &key.connections {
            Some(scope) => {
                for entry in scope {
                    if vmx_domain::connection::has_id_form(entry) {
                        ids.push(entry.clone());
                    } else if let Some(c) = self.connections.find(entry).await? {
                        ids.push(c.id);
                    }
                }
            }
            None => ids = self.all_connection_ids().await?,
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Forgets everything cached: keys, connections, the model catalog, the pools.
    pub fn clear(&self) {
        self.invalidate_keys();
        self.invalidate();
        self.invalidate_prioritization();
    }

    /// Runs after-response work in the background or inline (see [`GatewayOptions`]).
    /// In the background at most `max_pending_accounting` tasks wait at once; past that
    /// the work runs inline, so the caller's request holds its slot until it is done.
    pub async fn account(self: &Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        if self.options.background_accounting
            && let Ok(slot) = self.accounting_slots.clone().try_acquire_owned()
        {
            tokio::spawn(async move {
                work.await;
                drop(slot);
            });
        } else {
            work.await;
        }
    }

    /// Records one inference in the usage statistics; a failure is logged.
    pub async fn record_usage(&self, event: UsageEvent) {
        if let Err(e) = self.usage.record(&event).await {
            tracing::error!(error = %e, connection_id = %event.connection_id, "usage record lost");
        }
    }

    /// Stores the provider's rate limits for a model when they differ from the last ones
    /// written (limits only: remaining and reset change with every call and are stored
    /// with the next change).
    pub async fn record_limits(
        &self,
        connection: &Connection,
        model: &str,
        limits: &[DiscoveredLimit],
    ) {
        if limits.is_empty() {
            return;
        }
        let key = (connection.id.clone(), model.to_owned());
        let mut shape: LimitShape = limits
            .iter()
            .map(|l| (l.period, l.metric.clone(), l.limit))
            .collect();
        shape.sort();
        let known = self
            .known_limits
            .lock()
            .ok()
            .and_then(|k| k.get(&key).cloned())
            .or_else(|| {
                connection.discovered_capacity.models.get(model).map(|m| {
                    let mut v: Vec<_> = m
                        .capacity
                        .iter()
                        .map(|l| (l.period, l.metric.clone(), l.limit))
                        .collect();
                    v.sort();
                    v
                })
            });
        if known.as_ref() == Some(&shape) {
            return;
        }
        let now = self.clock.now();
        let entry = DiscoveredModel {
            updated_at: now,
            // Recorded only when the limits differ from the known ones.
            changed_at: Some(now),
            capacity: limits.to_vec(),
            error_message: None,
        };
        if self
            .record_discovered(connection, model, &entry, ChangeSource::Headers)
            .await
            && let Ok(mut k) = self.known_limits.lock()
        {
            if k.len() > 10_000 {
                k.clear();
            }
            k.insert(key, shape);
        }
    }

    pub fn provider(&self, kind: ProviderKind) -> Result<Arc<dyn ChatProvider>, ApiError> {
        self.providers.chat.get(&kind).cloned().ok_or_else(|| {
            ApiError::bad_request(
                "model",
                format!("model: provider '{kind}' is not available through this API"),
            )
        })
    }

    /// The Messages passthrough adapter of `kind`, if it speaks the Anthropic Messages API.
    pub fn messages_provider(&self, kind: ProviderKind) -> Option<Arc<dyn MessagesProvider>> {
        self.providers.messages.get(&kind).cloned()
    }

    /// Drops every cached connection, unknown name and the model catalog (after an admin
    /// change in this process).
    pub fn invalidate(&self) {
        self.cache.clear();
        self.unknown_connections.clear();
        self.catalog.clear();
    }

    /// Drops the cached connection with this id (under whichever id or name requests gave),
    /// the unknown names (it may have taken one) and the model catalog.
    pub fn invalidate_connection(&self, id: &str) {
        self.cache.remove_where(|r| r.connection.id == id);
        self.unknown_connections.clear();
        self.catalog.clear();
    }

    /// The connection with the id or name `key` ([`ConnectionService::find`]: id first),
    /// with decrypted credentials, when `allowed` lets the caller use it. `allowed` is asked
    /// before anything is decrypted (and of cached entries too), and a connection it refuses
    /// answers exactly as one that does not exist (the same 404, naming only `key`, what the
    /// caller sent), so a scoped key neither spends a key-service call nor learns which
    /// connections exist. A `key` no connection has is remembered for `unknown_cache_ttl`.
    pub async fn resolve(
        &self,
        key: &str,
        allowed: impl Fn(&Connection) -> bool,
    ) -> Result<Arc<Resolved>, ApiError> {
        Ok(self.resolve_loaded(key, allowed).await?.0)
    }

    /// [`Self::resolve`], telling whether this call loaded the connection from the store
    /// (`true`) or found it cached.
    pub async fn resolve_loaded(
        &self,
        key: &str,
        allowed: impl Fn(&Connection) -> bool,
    ) -> Result<(Arc<Resolved>, bool), ApiError> {
        let key = key.to_owned();
        let loaded = AtomicBool::new(false);
        if self.unknown_connections.get(&key).is_some() {
            return Err(no_connection(&key));
        }
        let resolved = self
            .cache
            .get_or_load(&key, async {
                if self.unknown_connections.get(&key).is_some() {
                    return Err(no_connection(&key));
                }
                let connection = match self.connections.find(&key).await? {
                    Some(c) if allowed(&c) => c,
                    Some(_) => return Err(no_connection(&key)),
                    None => {
                        self.unknown_connections.insert(key.clone(), ());
                        return Err(no_connection(&key));
                    }
                };
                let credentials = self.credentials(&connection).await?;
                loaded.store(true, Ordering::Relaxed);
                Ok(Some(Arc::new(Resolved::new(connection, credentials))))
            })
            .await?
            .ok_or_else(|| no_connection(&key))?;
        if allowed(&resolved.connection) {
            Ok((resolved, loaded.load(Ordering::Relaxed)))
        } else {
            Err(no_connection(&key))
        }
    }

    /// The connections `GET /v1/models` lists, in id order (at most [`CATALOG_SCAN_LIMIT`]),
    /// read once per `connection_cache_ttl` and shared by every caller (each filters it).
    pub async fn catalog(&self) -> Result<Arc<Vec<CatalogEntry>>, ApiError> {
        let loaded = self
            .catalog
            .get_or_load(&(), async {
                let mut entries = Vec::new();
                let mut after: Option<String> = None;
                let mut seen = 0;
                loop {
                    let page = self.connections.list(100, after.as_deref()).await?;
                    seen += page.items.len();
                    entries.extend(page.items.into_iter().map(|c| CatalogEntry {
                        id: c.id,
                        name: c.name,
                        provider: c.provider,
                        created_at: c.created_at,
                        allowed_models: c.allowed_models.unwrap_or_default(),
                    }));
                    match page.next_after {
                        Some(next) if seen < CATALOG_SCAN_LIMIT => after = Some(next),
                        _ => break,
                    }
                }
                Ok::<_, ApiError>(Some(Arc::new(entries)))
            })
            .await?;
        Ok(loaded.unwrap_or_default())
    }

    /// The prioritization pools, read from the store at most once per
    /// `connection_cache_ttl` per process and shared by every caller (a change reaches
    /// other warm instances at their next admission, [`Self::announce_pools_change`], and
    /// this process at once); concurrent misses make one read.
    pub async fn pools(&self) -> Result<Arc<Prioritization>> {
        let loaded = self
            .pools
            .get_or_load(&(), async {
                Ok::<_, Error>(Some(Arc::new(self.api_keys.prioritization().await?)))
            })
            .await?;
        Ok(loaded.unwrap_or_default())
    }

    /// Forgets the cached pools (after `PUT /v1/prioritization` in this process).
    pub fn invalidate_prioritization(&self) {
        self.pools.clear();
    }

    /// Forgets what an admission found stale: the connection, every key lookup (a key
    /// reaching it may have changed) and the pools.
    fn forget_stale(&self, connection_id: &str) {
        self.invalidate_connection(connection_id);
        self.invalidate_keys();
        self.invalidate_prioritization();
    }

    /// Decrypts what a provider call on `connection` authenticates with.
    pub async fn credentials(&self, connection: &Connection) -> Result<Credentials, ApiError> {
        match &connection.config {
            ProviderConfig::ApiKey { .. } => match self.connections.api_key(connection).await? {
                Some(k) => Ok(Credentials::ApiKey(k)),
                None => Err(Error::internal("api key missing").into()),
            },
            ProviderConfig::Aws(config) => Ok(Credentials::Aws {
                config: config.clone(),
            }),
        }
    }

    /// Checks a connection's stored credentials with the provider's cheapest call, and
    /// records any rate limits it saw. Never reads the connection cache.
    pub async fn test_connection(
        &self,
        connection: &Connection,
        model: Option<&str>,
    ) -> Result<Value, ApiError> {
        let provider = self.provider(connection.provider)?;
        let credentials = self.credentials(connection).await?;
        let model = model.or_else(|| {
            connection
                .allowed_models
                .as_ref()
                .and_then(|m| m.first())
                .map(String::as_str)
        });
        let started = Instant::now();
        let result = provider.probe(&credentials, model).await;
        if let (Ok(probe), Some(m)) = (&result, model) {
            self.record_limits(connection, m, &probe.limits).await;
        }
        Ok(probe_outcome(result, started, model))
    }

    /// Checks a configuration that is not saved (`POST /v1/connections/check`) with the
    /// provider's cheapest call; the same outcome as [`Self::test_connection`], nothing
    /// recorded. The key is used for this one call and never echoed.
    pub async fn check_config(
        &self,
        input: vmx_domain::connection::CheckInput,
    ) -> Result<Value, ApiError> {
        let provider = self
            .providers
            .chat
            .get(&input.provider)
            .cloned()
            .ok_or_else(|| {
                ApiError::bad_request(
                    "provider",
                    format!(
                        "provider: '{}' is not available on this server",
                        input.provider
                    ),
                )
            })?;
        let credentials = match input.config {
            vmx_domain::connection::ConfigInput::ApiKey(
                vmx_domain::connection::SecretInput::New(key),
            ) => Credentials::ApiKey(key),
            vmx_domain::connection::ConfigInput::ApiKey(
                vmx_domain::connection::SecretInput::Keep,
            ) => {
                return Err(ApiError::bad_request(
                    "config.apiKey",
                    "config.apiKey: is required",
                ));
            }
            vmx_domain::connection::ConfigInput::Aws { config, .. } => Credentials::Aws { config },
        };
        let model = input.model.as_deref();
        let started = Instant::now();
        let result = provider.probe(&credentials, model).await;
        Ok(probe_outcome(result, started, model))
    }
}

/// The outcome of a probe: `ok`, the latency, and the limits seen or the error class.
fn probe_outcome(
    result: std::result::Result<vmx_domain::inference::Probe, ProviderError>,
    started: Instant,
    model: Option<&str>,
) -> Value {
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(probe) => {
            serde_json::json!({
                "ok": true,
                "latencyMs": latency_ms,
                "call": probe.call,
                "model": model,
                "limits": probe.limits,
            })
        }
        Err(e) => {
            let class = probe_error_class(&e);
            let message = ApiError::Provider(e).body()["error"]["message"].clone();
            serde_json::json!({
                "ok": false,
                "latencyMs": latency_ms,
                "model": model,
                "error": {"class": class, "message": message},
            })
        }
    }
}

impl Gateway {
    /// Admits a request arriving on `route` into the connection's capacity windows; `key_id`
    /// (the caller's API key, `None` for the admin token) chooses its prioritization pool,
    /// and `key_capacity` (that key's own entries) adds the key's windows on this
    /// connection to the same admission (all or nothing).
    /// The output part of the reservation is what vmx will send as the output limit
    /// ([`vmx_domain::output::output_limit`]); once admitted, that limit, capped to what was
    /// reserved, is written into `body` whenever a token window applies (or the provider
    /// requires a limit), so the provider cannot produce more than was reserved. A limit or
    /// `n` stated wrongly is a 400 naming the field, before any counter is touched.
    ///
    /// `Ok(None)` (only when `check_version`): the admission (or a rejection by a failed
    /// write) returned a configuration version other than the one `resolved` first saw, so
    /// the connection, a key reaching it or the pools changed since it was cached. An
    /// admission is refunded (it was decided on the old configuration), the cached
    /// connection, every cached key lookup and the cached pools are dropped, and `body` is
    /// left as it was: the caller runs the request again on fresh data.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        resolved: &Resolved,
        route: Route,
        body: &mut Map<String, Value>,
        source_ip: IpAddr,
        key_id: Option<&str>,
        key_capacity: &[vmx_domain::capacity::CapacityEntry],
        check_version: bool,
    ) -> Result<Option<Admitted>, ApiError> {
        let connection = &resolved.connection;
        let kind = connection.provider;
        let limit = output::output_limit(kind, route, body, self.options.default_output_tokens)
            .map_err(|e| ApiError::bad_request(e.field, e.message))?;
        let stated = output::requested_output(kind, route, body)
            .map_err(|e| ApiError::bad_request(e.field, e.message))?
            .is_some();
        let prompt = admission::estimate_body_tokens(body);
        let estimate = TokenEstimate::for_output(prompt, limit);
        let request = admission::plan_keyed(
            &connection.id,
            &connection.name,
            &connection.capacity,
            crate::client_ip::window_ip(source_ip, self.options.ipv6_prefix_len),
            key_id.map(|id| admission::KeyCapacity {
                id,
                entries: key_capacity,
            }),
            estimate,
            self.clock.now(),
        )
        .map_err(ApiError::Capacity)?;
        let request = if request.is_unlimited() {
            request
        } else {
            request.with_pools(self.pools().await?.admission(key_id))
        };
        let admitted = match self.ledger.admit(&request).await? {
            Admission::Admitted(a) => a,
            Admission::Rejected(r) => {
                // Refused under limits that may have been raised since: nothing to give
                // back, run again on fresh data.
                if let Some(version) = r.config_version
                    && !resolved.current(u64::from(version))
                    && check_version
                {
                    self.forget_stale(&connection.id);
                    return Ok(None);
                }
                return Err(ApiError::Capacity(r));
            }
        };
        if let Some(version) = admitted.config_version
            && !resolved.current(version)
            && check_version
        {
            let reservation = &admitted.reservation;
            self.settle(reservation, reservation.refund()).await;
            self.forget_stale(&connection.id);
            return Ok(None);
        }
        let token_limited = admitted.windows.iter().any(|w| w.window.tokens.is_some());
        if token_limited || (!stated && output::requires_output_limit(kind)) {
            let sent = admitted.reservation.sendable_output(limit);
            output::set_output_limit(kind, route, body, sent.per_choice);
        }
        Ok(Some(admitted))
    }

    /// Applies a reconciliation or refund, retrying; a failure is logged, never silent.
    pub async fn settle(&self, reservation: &Reservation, adjustment: Adjustment) {
        if adjustment.is_noop() || reservation.windows.is_empty() {
            return;
        }
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=4 {
            match self
                .ledger
                .adjust(reservation, adjustment, self.clock.now())
                .await
            {
                Ok(()) => return,
                Err(e) if attempt < 4 => {
                    tracing::warn!(error = %e, attempt, connection_id = %reservation.connection_id, "capacity reconciliation failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        connection_id = %reservation.connection_id,
                        token_delta = adjustment.token_delta,
                        refund_request = adjustment.refund_request,
                        "capacity reconciliation lost after retries"
                    );
                }
            }
        }
    }

    /// Builds the provider request from a caller's body.
    pub fn provider_request(model: &str, mut body: Map<String, Value>) -> ChatRequest {
        body.insert("model".to_owned(), Value::String(model.to_owned()));
        ChatRequest {
            model: model.to_owned(),
            body,
        }
    }
}

/// The answer for a connection that does not exist or that the caller may not use (the
/// same for both): it names only what the caller sent.
pub(crate) fn no_connection(key: &str) -> ApiError {
    ApiError::ModelNotFound {
        message: format!("no connection '{key}' that this caller may use"),
    }
}

/// What a failed credentials check tells the user to look at.
pub fn probe_error_class(e: &ProviderError) -> &'static str {
    match e {
        // Bedrock: STS refused the role (401) or the role lacks Bedrock permissions (403).
        ProviderError::Unauthorized {
            status: 401,
            message,
        } if message.contains("trust policy") => "trust_policy",
        ProviderError::Unauthorized {
            status: 403,
            message,
        } if message.contains("bedrock:") => "bedrock_permissions",
        ProviderError::BadRequest {
            code: Some(code), ..
        } if matches!(
            code.as_str(),
            "model_not_enabled" | "guardrail_not_found" | "model_required"
        ) =>
        {
            match code.as_str() {
                "model_not_enabled" => "model_not_enabled",
                "guardrail_not_found" => "guardrail_not_found",
                _ => "model_required",
            }
        }
        ProviderError::Unauthorized { .. } => "credentials_rejected",
        ProviderError::Network(_) => "network",
        ProviderError::Timeout => "timeout",
        ProviderError::Upstream { .. } | ProviderError::Malformed(_) => "provider_outage",
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::BadRequest { .. } => "bad_request",
    }
}

/// The usage-statistics class of a failed request.
pub fn error_class(e: &ApiError) -> ErrorClass {
    match e {
        ApiError::Capacity(_) => ErrorClass::CapacityExceeded,
        ApiError::Provider(p) => match p {
            ProviderError::RateLimited { .. } => ErrorClass::RateLimited,
            ProviderError::Unauthorized { .. } => ErrorClass::Auth,
            ProviderError::BadRequest { .. } => ErrorClass::BadRequest,
            ProviderError::Upstream { .. } | ProviderError::Malformed(_) => ErrorClass::Upstream,
            ProviderError::Timeout => ErrorClass::Timeout,
            ProviderError::Network(_) => ErrorClass::Network,
        },
        ApiError::BadRequest { .. } | ApiError::PayloadTooLarge { .. } => ErrorClass::BadRequest,
        _ => ErrorClass::Other,
    }
}
