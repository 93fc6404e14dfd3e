//! The inference gateway: routes a request to its connection, enforces capacity, calls the
//! provider, and accounts for what happened (reconciliation, usage, discovered limits).
//!
//! Hot-path cost: connections and their decrypted credentials are cached per process for
//! `connection_cache_ttl` (a rotated key or changed capacity takes effect within it; locally
//! an admin update invalidates the cache at once), so a warm request makes no store read
//! and no key-service call for them. Admission is one ledger write before the provider call.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use vmx_domain::admission::{self, Adjustment, Admission, Admitted, Reservation, TokenEstimate};
use vmx_domain::clock::Clock;
use vmx_domain::connection::{Connection, ProviderConfig};
use vmx_domain::inference::{ChatProvider, ChatRequest, Credentials};
use vmx_domain::ports::CapacityLedger;
use vmx_domain::provider::ProviderKind;
use vmx_domain::{Error, Result};

use crate::error::ApiError;
use crate::service::ConnectionService;

/// A connection ready for inference: its record and decrypted credentials.
pub struct Resolved {
    pub connection: Connection,
    pub credentials: Credentials,
}

/// Tunables of the gateway (from `Config`).
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub connection_cache_ttl: Duration,
    pub default_output_tokens: u64,
    pub max_messages: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            connection_cache_ttl: Duration::from_secs(30),
            default_output_tokens: admission::DEFAULT_OUTPUT_RESERVATION,
            max_messages: 2048,
        }
    }
}

pub struct Gateway {
    pub connections: Arc<ConnectionService>,
    pub ledger: Arc<dyn CapacityLedger>,
    providers: HashMap<ProviderKind, Arc<dyn ChatProvider>>,
    pub clock: Arc<dyn Clock>,
    pub options: GatewayOptions,
    cache: Mutex<HashMap<String, (Arc<Resolved>, Instant)>>,
}

/// `<connection>/<model>`, split at the first `/`.
pub fn split_model(model: &str) -> Option<(&str, &str)> {
    let (conn, rest) = model.split_once('/')?;
    (!conn.is_empty() && !rest.is_empty()).then_some((conn, rest))
}

/// The caller's own output limit, if the body states one.
pub fn requested_max_output(body: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .filter(|n| *n > 0)
}

impl Gateway {
    pub fn new(
        connections: Arc<ConnectionService>,
        ledger: Arc<dyn CapacityLedger>,
        providers: HashMap<ProviderKind, Arc<dyn ChatProvider>>,
        clock: Arc<dyn Clock>,
        options: GatewayOptions,
    ) -> Self {
        Self {
            connections,
            ledger,
            providers,
            clock,
            options,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn provider(&self, kind: ProviderKind) -> Result<Arc<dyn ChatProvider>, ApiError> {
        self.providers.get(&kind).cloned().ok_or_else(|| {
            ApiError::bad_request(
                "model",
                format!("model: provider '{kind}' is not available through this API"),
            )
        })
    }

    /// Drops every cached connection (after an admin change in this process).
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The connection named (or with the id) `key`, with decrypted credentials.
    pub async fn resolve(&self, key: &str) -> Result<Arc<Resolved>, ApiError> {
        let ttl = self.options.connection_cache_ttl;
        if let Ok(cache) = self.cache.lock()
            && let Some((r, at)) = cache.get(key)
            && at.elapsed() < ttl
        {
            return Ok(r.clone());
        }
        let store = self.connections.store();
        let found = match store.get_by_name(key).await? {
            Some(c) => Some(c),
            None if looks_like_id(key) => store.get(key).await?,
            None => None,
        };
        let connection = found.ok_or_else(|| ApiError::ModelNotFound {
            message: format!("no connection named '{key}'"),
        })?;
        let credentials = match &connection.config {
            ProviderConfig::ApiKey { .. } => match self.connections.api_key(&connection).await? {
                Some(k) => Credentials::ApiKey(k),
                None => return Err(Error::internal("api key missing").into()),
            },
            ProviderConfig::Aws(_) => {
                return Err(ApiError::bad_request(
                    "model",
                    format!(
                        "model: connection '{}' uses provider '{}', which this endpoint does not serve yet",
                        connection.name, connection.provider
                    ),
                ));
            }
        };
        let resolved = Arc::new(Resolved {
            connection,
            credentials,
        });
        if ttl > Duration::ZERO
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(key.to_owned(), (resolved.clone(), Instant::now()));
        }
        Ok(resolved)
    }

    /// Admits a request into the connection's capacity windows.
    pub async fn admit(
        &self,
        connection: &Connection,
        body: &Map<String, Value>,
        source_ip: IpAddr,
    ) -> Result<Admitted, ApiError> {
        let prompt = admission::estimate_request_tokens(&Value::Object(body.clone()));
        let estimate = TokenEstimate::new(
            prompt,
            requested_max_output(body),
            self.options.default_output_tokens,
        );
        let request = admission::plan(
            &connection.id,
            &connection.name,
            &connection.capacity,
            source_ip,
            estimate,
            self.clock.now(),
        )
        .map_err(ApiError::Capacity)?;
        match self.ledger.admit(&request).await? {
            Admission::Admitted(a) => Ok(a),
            Admission::Rejected(r) => Err(ApiError::Capacity(r)),
        }
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

fn looks_like_id(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
