//! Limit refresh: the scheduled sweep that keeps every connection's `discoveredCapacity`
//! current when traffic alone does not.
//!
//! - API-key providers: an opt-in probe per allowed model (`VMX_REFRESH_PROBE=true`; off by
//!   default because a probe can cost tokens). A model whose limits were seen within
//!   `fresh_for` (real traffic writes them) is skipped.
//! - Bedrock: the account's Service Quotas for the model, read through the connection's
//!   assumed role, when a [`QuotaSource`] is configured.
//! - Counters: each connection's ended-window counters that no admission removed (idle
//!   connections, IPs that never came back) and, once the connection has no lifetime entry,
//!   its lifetime counters are swept ([`vmx_domain::ports::CapacityLedger::sweep`]), so the
//!   counter storage TTL does not cover stays bounded.
//! - Limits that changed are kept in the history and told to the notifier like those of
//!   response headers, with source `refresh` (`Gateway::record_discovered`).
//! - A failure is recorded as the model's `errorMessage`; one connection's failure never stops
//!   the run. The run pages through connections with bounded concurrency, stops starting work
//!   when its deadline nears, and returns the cursor to resume from on the next run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use vmx_domain::connection::{Connection, DiscoveredLimit, DiscoveredModel};
use vmx_domain::discovered::ChangeSource;
pub use vmx_domain::discovered::QuotaSource;
use vmx_domain::provider::AuthKind;

use crate::error::ApiError;
use crate::gateway::Gateway;

#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Probe API-key providers (costs a small call per model).
    pub probe_api_key_providers: bool,
    /// Limits seen more recently than this are not refreshed.
    pub fresh_for: Duration,
    /// Connections refreshed at once.
    pub concurrency: usize,
    /// Connections read per page.
    pub page: usize,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        Self {
            probe_api_key_providers: false,
            fresh_for: Duration::from_secs(3600),
            concurrency: 4,
            page: 50,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    pub connections: usize,
    pub refreshed: usize,
    pub skipped_fresh: usize,
    pub skipped_no_models: usize,
    pub skipped_probe_disabled: usize,
    pub failed: usize,
    /// Counters of ended windows (or of removed lifetime entries) removed.
    pub counters_swept: u64,
    /// Connections whose counter sweep failed (logged; retried next run).
    pub sweep_failed: usize,
    /// Where the next run starts; `None` when this run reached the end.
    pub resume_after: Option<String>,
}

#[derive(Default)]
struct Outcome {
    refreshed: usize,
    skipped_fresh: usize,
    skipped_no_models: usize,
    skipped_probe_disabled: usize,
    failed: usize,
    counters_swept: u64,
    sweep_failed: usize,
}

pub struct Refresher {
    pub gateway: Arc<Gateway>,
    pub quotas: Option<Arc<dyn QuotaSource>>,
    pub options: RefreshOptions,
}

impl Refresher {
    /// Refreshes connections after `start_after` until the end or until `deadline` nears.
    pub async fn run(
        &self,
        start_after: Option<String>,
        deadline: Instant,
    ) -> Result<RefreshReport, ApiError> {
        let mut report = RefreshReport::default();
        let mut after = start_after;
        loop {
            if Instant::now() >= deadline {
                report.resume_after = after;
                return Ok(report);
            }
            let page = self
                .gateway
                .connections
                .list(self.options.page, after.as_deref())
                .await?;
            let outcomes: Vec<Outcome> = futures_util::stream::iter(page.items.iter())
                .map(|c| self.refresh_connection(c))
                .buffer_unordered(self.options.concurrency.max(1))
                .collect()
                .await;
            report.connections += page.items.len();
            for o in outcomes {
                report.refreshed += o.refreshed;
                report.skipped_fresh += o.skipped_fresh;
                report.skipped_no_models += o.skipped_no_models;
                report.skipped_probe_disabled += o.skipped_probe_disabled;
                report.failed += o.failed;
                report.counters_swept += o.counters_swept;
                report.sweep_failed += o.sweep_failed;
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }

    async fn refresh_connection(&self, c: &Connection) -> Outcome {
        let mut out = Outcome::default();
        let keep_lifetime = c
            .capacity
            .iter()
            .any(|e| e.period == vmx_domain::capacity::Period::Lifetime);
        let now = self.gateway.clock.now();
        match self.gateway.ledger.sweep(&c.id, keep_lifetime, now).await {
            Ok(n) => out.counters_swept = n,
            Err(e) => {
                out.sweep_failed = 1;
                tracing::warn!(connection_id = %c.id, error = %e, "counter sweep failed");
            }
        }
        let models: Vec<&String> = c.allowed_models.iter().flatten().collect();
        if models.is_empty() {
            out.skipped_no_models += 1;
            return out;
        }
        let is_iam = c.provider.auth() == AuthKind::IamRole;
        if !is_iam && !self.options.probe_api_key_providers {
            out.skipped_probe_disabled += 1;
            return out;
        }
        for model in models {
            let previous = c.discovered_capacity.models.get(model.as_str());
            let fresh = previous.is_some_and(|p| {
                p.error_message.is_none()
                    && (now - p.updated_at).whole_seconds()
                        < i64::try_from(self.options.fresh_for.as_secs()).unwrap_or(i64::MAX)
            });
            if fresh {
                out.skipped_fresh += 1;
                continue;
            }
            let result = if is_iam {
                self.bedrock_limits(c, model).await
            } else {
                self.probe(c, model).await
            };
            let entry = match result {
                Ok(limits) => {
                    out.refreshed += 1;
                    DiscoveredModel {
                        updated_at: now,
                        changed_at: Some(DiscoveredModel::changed_at_after(previous, &limits, now)),
                        capacity: limits,
                        error_message: None,
                    }
                }
                Err(message) => {
                    out.failed += 1;
                    tracing::warn!(connection_id = %c.id, %model, error = %message, "limit refresh failed");
                    DiscoveredModel {
                        updated_at: now,
                        // The limits are kept as they were.
                        changed_at: previous.map(|p| p.changed_at.unwrap_or(p.updated_at)),
                        capacity: previous.map(|p| p.capacity.clone()).unwrap_or_default(),
                        error_message: Some(message),
                    }
                }
            };
            self.gateway
                .record_discovered(c, model, &entry, ChangeSource::Refresh)
                .await;
        }
        out
    }

    /// Probe through the provider adapter; the message is safe to store (adapters scrub
    /// the key from anything a provider says).
    async fn probe(&self, c: &Connection, model: &str) -> Result<Vec<DiscoveredLimit>, String> {
        let provider = self.gateway.provider(c.provider).map_err(|e| message(&e))?;
        let credentials = self.gateway.credentials(c).await.map_err(|e| message(&e))?;
        provider
            .probe(&credentials, Some(model))
            .await
            .map(|p| p.limits)
            .map_err(|e| message(&ApiError::Provider(e)))
    }

    async fn bedrock_limits(
        &self,
        c: &Connection,
        model: &str,
    ) -> Result<Vec<DiscoveredLimit>, String> {
        let (Some(source), vmx_domain::connection::ProviderConfig::Aws(config)) =
            (&self.quotas, &c.config)
        else {
            return Err("no quota source is configured for Bedrock connections".into());
        };
        source.model_limits(config, model).await
    }
}

fn message(e: &ApiError) -> String {
    e.body()["error"]["message"]
        .as_str()
        .unwrap_or("refresh failed")
        .to_owned()
}
