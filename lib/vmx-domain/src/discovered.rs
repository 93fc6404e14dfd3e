//! Writing the rate limits learned from provider responses
//! (`Connection.discovered_capacity.models[model]`).
//!
//! Discovered capacity is written by the inference path, concurrently with admin updates of
//! the same connection, so it is stored apart from the rest of the connection:
//! - recording a model's limits never changes the connection's `version` (an admin's
//!   `If-Match` keeps working) nor any admin-managed field;
//! - `ConnectionStore::replace` never changes discovered capacity: the `discovered_capacity`
//!   of the connection it is given is ignored (it is the copy the admin read, possibly
//!   stale), so an update cannot erase what was recorded meanwhile;
//! - `ConnectionStore::insert` stores the `discovered_capacity` it is given (normally empty);
//! - `ConnectionStore::get`, `get_by_name` and `list` return it merged into the connection;
//! - `ConnectionStore::delete` removes it with the connection.
//!
//! Every change of a limit is also kept as history ([`DiscoveredChange`]): the store works it
//! out against the entry it replaces (not against a cache, so two processes seeing the same
//! new limit record one change), keeps it for [`HISTORY_RETENTION_DAYS`] and returns it, so
//! the caller can tell a [`ChangeNotifier`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Result;
use crate::capacity::Period;
use crate::connection::{AwsConfig, DiscoveredLimit, DiscoveredModel};

/// The one write of discovered capacity, and its history. Implemented by each connection
/// store.
///
/// Invariants (checked by `vmx_conformance::discovered`):
/// - sets `discovered_capacity.models[model]` of the connection to `discovered`, unless the
///   stored entry's `updated_at` is later or equal (an older observation arriving late is
///   dropped, `Ok` with no change);
/// - leaves every other model, every other field and the `version` as they are;
/// - returns the limits that changed against the entry it replaced ([`diff_limits`]; the
///   first limits of a model are changes from nothing), each stamped with `discovered`'s
///   `updated_at` and `source`, and keeps them in the history;
/// - `Error::NotFound` when the connection does not exist (also when deleted concurrently:
///   nothing is left behind).
#[async_trait]
pub trait DiscoveredCapacityStore: Send + Sync {
    async fn record_discovered(
        &self,
        connection_id: &str,
        model: &str,
        discovered: &DiscoveredModel,
        source: ChangeSource,
    ) -> Result<Vec<DiscoveredChange>>;

    /// A connection's recorded changes, newest first: at most `limit`, only those of
    /// `model` when given, and only those after the change whose [`DiscoveredChange::key`]
    /// is `after` (the cursor of the previous page). Changes older than
    /// [`HISTORY_RETENTION_DAYS`] may be gone.
    async fn discovered_history(
        &self,
        connection_id: &str,
        model: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DiscoveredChange>>;
}

/// How long a change is kept: the DynamoDB items expire (TTL) this many days after the
/// change; the embedded store drops a connection's older changes when it records a new one.
pub const HISTORY_RETENTION_DAYS: i64 = 90;

/// What observed a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeSource {
    /// A provider response's rate-limit headers.
    Headers,
    /// The scheduled limit refresh (Service Quotas or a probe).
    Refresh,
}

/// One limit of one model that changed: `old` -> `new` (`None`: the limit did not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredChange {
    /// When the new limit was observed (the new entry's `updated_at`).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub model: String,
    pub period: Period,
    /// `requests`, `tokens`, `input-tokens` or `output-tokens`.
    pub metric: String,
    pub old: Option<u64>,
    pub new: Option<u64>,
    pub source: ChangeSource,
}

impl DiscoveredChange {
    /// The change's place in its connection's history: `<at: unix nanoseconds, 20 digits>#
    /// <model>#<period>#<metric>`, so keys sort by time (the DynamoDB sort key, the embedded
    /// table's key, and the page cursor).
    pub fn key(&self) -> String {
        format!(
            "{:020}#{}#{}#{}",
            self.at.unix_timestamp_nanos().max(0),
            self.model,
            self.period.as_str(),
            self.metric
        )
    }
}

/// The limits that differ between `old` and `new` (period, metric and limit; `remaining` and
/// `reset` are not limits), in (period, metric) order.
pub fn diff_limits(
    old: &[DiscoveredLimit],
    new: &[DiscoveredLimit],
) -> Vec<(Period, String, Option<u64>, Option<u64>)> {
    use std::collections::BTreeMap;
    let shape = |l: &[DiscoveredLimit]| -> BTreeMap<(Period, String), u64> {
        l.iter()
            .map(|x| ((x.period, x.metric.clone()), x.limit))
            .collect()
    };
    let (old, new) = (shape(old), shape(new));
    let mut keys: Vec<&(Period, String)> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (old.get(k).copied(), new.get(k).copied());
            (o != n).then(|| (k.0, k.1.clone(), o, n))
        })
        .collect()
}

/// The changes of recording `new` for `model` over `previous` (what each store returns).
pub fn changes(
    model: &str,
    previous: Option<&DiscoveredModel>,
    new: &DiscoveredModel,
    source: ChangeSource,
) -> Vec<DiscoveredChange> {
    let old = previous.map(|p| p.capacity.as_slice()).unwrap_or_default();
    diff_limits(old, &new.capacity)
        .into_iter()
        .map(|(period, metric, old, new_limit)| DiscoveredChange {
            at: new.updated_at,
            model: model.to_owned(),
            period,
            metric,
            old,
            new: new_limit,
            source,
        })
        .collect()
}

/// Who hears of discovered-capacity changes (EventBridge in AWS, nobody locally).
#[async_trait]
pub trait ChangeNotifier: Send + Sync {
    /// Tells of `changes` of the connection `connection_id` named `connection_name`. A
    /// failure is the caller's to log: it never fails the request that observed the change.
    async fn discovered_changed(
        &self,
        connection_id: &str,
        connection_name: &str,
        changes: &[DiscoveredChange],
    ) -> Result<()>;
}

/// The notifier of a process nobody listens to (the local server).
pub struct NoNotifier;

#[async_trait]
impl ChangeNotifier for NoNotifier {
    async fn discovered_changed(&self, _: &str, _: &str, _: &[DiscoveredChange]) -> Result<()> {
        Ok(())
    }
}

/// Where the limit refresh reads a Bedrock model's limits: the account's Service Quotas for
/// the model in the connection's region, read through the connection's assumed role.
#[async_trait]
pub trait QuotaSource: Send + Sync {
    /// The on-demand (or, for an inference profile id, cross-Region) limits of `model`. The
    /// error is a message fit to store as the model's `errorMessage` (no AWS principal, no
    /// secret).
    async fn model_limits(
        &self,
        config: &AwsConfig,
        model: &str,
    ) -> std::result::Result<Vec<DiscoveredLimit>, String>;
}

/// Longest model id discovered capacity is kept for.
pub const MODEL_MAX_BYTES: usize = 512;

/// What every store checks before recording: a model id of 1 to [`MODEL_MAX_BYTES`] bytes.
pub fn validate_model(model: &str) -> Result<()> {
    if model.is_empty() || model.len() > MODEL_MAX_BYTES {
        return Err(crate::Error::invalid(
            "model",
            format!("must be 1-{MODEL_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(period: Period, metric: &str, limit: u64) -> DiscoveredLimit {
        DiscoveredLimit {
            period,
            metric: metric.into(),
            limit,
            remaining: Some(1),
            reset: None,
        }
    }

    #[test]
    fn diff_names_changed_added_and_removed_limits_only() {
        let old = [
            limit(Period::Minute, "requests", 100),
            limit(Period::Minute, "tokens", 1000),
            limit(Period::Day, "requests", 5),
        ];
        let mut same_tokens = limit(Period::Minute, "tokens", 1000);
        same_tokens.remaining = Some(999);
        let new = [
            same_tokens,
            limit(Period::Minute, "requests", 200),
            limit(Period::Day, "tokens", 7),
        ];
        assert_eq!(
            diff_limits(&old, &new),
            vec![
                (Period::Minute, "requests".to_owned(), Some(100), Some(200)),
                (Period::Day, "requests".to_owned(), Some(5), None),
                (Period::Day, "tokens".to_owned(), None, Some(7)),
            ]
        );
        assert!(diff_limits(&old, &old).is_empty());
    }

    #[test]
    fn keys_sort_by_time_and_name_the_limit() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let new = DiscoveredModel {
            updated_at: at,
            changed_at: Some(at),
            capacity: vec![limit(Period::Minute, "requests", 10)],
            error_message: None,
        };
        let first = changes("gpt-4o", None, &new, ChangeSource::Headers);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].old, None);
        assert_eq!(
            first[0].key(),
            "01700000000000000000#gpt-4o#minute#requests"
        );
        let later = DiscoveredChange {
            at: at + time::Duration::nanoseconds(1),
            ..first[0].clone()
        };
        assert!(later.key() > first[0].key());
        let json = serde_json::to_value(&first[0]).unwrap_or_default();
        assert_eq!(json["source"], "headers");
        assert_eq!(json["old"], serde_json::Value::Null);
        assert_eq!(json["new"], 10);
    }
}
