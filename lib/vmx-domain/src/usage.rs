//! Usage statistics: per connection, model and API key, hourly buckets of requests, errors by
//! class, tokens, latency and time to first token. Days are rolled up from hours when read.
//!
//! Cost rule: recording one inference is one write ([`UsageStore::record`]); stores keep the
//! hourly buckets only, so a query for days reads the hours and sums them ([`roll_up`]). The
//! API key is part of the bucket's key, not a second write: a connection used by `k` keys in
//! an hour has up to `k` buckets per model for it, which a query reads (and, unless grouped
//! by key, sums: [`UsageGroup`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::{Error, Result};

/// How long stores keep an hourly bucket (DynamoDB: TTL on `expiresAt`).
pub const RETENTION_DAYS: i64 = 400;
/// Longest model id a bucket is kept for (longer ones are refused by [`UsageEvent::validate`]).
pub const MODEL_MAX_BYTES: usize = 512;
/// Widest range of one query, per granularity.
pub const MAX_HOURLY_RANGE: Duration = Duration::days(31);
pub const MAX_DAILY_RANGE: Duration = Duration::days(RETENTION_DAYS);

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Why a request failed, as counted in [`UsageCounters::errors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The provider answered 429.
    RateLimited,
    /// vmx refused the request: a capacity window of the connection was full.
    CapacityExceeded,
    /// The provider rejected the connection's credentials (401/403).
    Auth,
    /// The provider rejected the request (400, 404, 422...).
    BadRequest,
    /// The provider failed (5xx, malformed response, stream cut).
    Upstream,
    Timeout,
    /// The provider could not be reached.
    Network,
    Other,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::RateLimited,
        ErrorClass::CapacityExceeded,
        ErrorClass::Auth,
        ErrorClass::BadRequest,
        ErrorClass::Upstream,
        ErrorClass::Timeout,
        ErrorClass::Network,
        ErrorClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::CapacityExceeded => "capacity_exceeded",
            Self::Auth => "auth",
            Self::BadRequest => "bad_request",
            Self::Upstream => "upstream",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One finished (or failed) inference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub connection_id: String,
    /// The provider model id.
    pub model: String,
    /// When the request was received; picks the hourly bucket.
    pub at: OffsetDateTime,
    /// `None` for a success.
    pub error: Option<ErrorClass>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Time from receiving the request to the end of the response.
    pub latency_ms: u64,
    /// Time to the first token of a stream (`None` when there was none, or not streamed).
    pub ttft_ms: Option<u64>,
    /// The gateway API key that made the request (`None`: the local admin token).
    pub api_key_id: Option<String>,
}

impl UsageEvent {
    /// A success or failure with no tokens, for tests and simple callers.
    pub fn new(connection_id: &str, model: &str, at: OffsetDateTime) -> Self {
        Self {
            connection_id: connection_id.to_owned(),
            model: model.to_owned(),
            at,
            error: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            latency_ms: 0,
            ttft_ms: None,
            api_key_id: None,
        }
    }

    /// What every store checks before writing.
    pub fn validate(&self) -> Result<()> {
        if self.connection_id.is_empty() {
            return Err(Error::invalid("connectionId", "must not be empty"));
        }
        if self
            .api_key_id
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 64 || k.contains(['#', '@']))
        {
            return Err(Error::invalid(
                "apiKeyId",
                "must be 1-64 characters without '#' or '@'",
            ));
        }
        if self.model.len() > MODEL_MAX_BYTES {
            return Err(Error::invalid(
                "model",
                format!("must be at most {MODEL_MAX_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// Start of the event's hourly bucket, epoch seconds.
    pub fn hour(&self) -> i64 {
        floor_to(self.at.unix_timestamp(), HOUR)
    }
}

/// The counters of one bucket. Sums and counts add up; maxima take the larger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCounters {
    /// Every request, failed ones included.
    pub requests: u64,
    /// Failed requests by class (classes with no failure are absent).
    #[serde(default)]
    pub errors: BTreeMap<ErrorClass, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub latency_ms_sum: u64,
    pub latency_ms_max: u64,
    /// Sum, maximum and number of the requests that had a time to first token.
    pub ttft_ms_sum: u64,
    pub ttft_ms_max: u64,
    pub ttft_count: u64,
}

impl UsageCounters {
    pub fn add_event(&mut self, e: &UsageEvent) {
        self.requests = self.requests.saturating_add(1);
        if let Some(class) = e.error {
            let n = self.errors.entry(class).or_insert(0);
            *n = n.saturating_add(1);
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(e.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(e.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(e.cached_tokens);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(e.latency_ms);
        self.latency_ms_max = self.latency_ms_max.max(e.latency_ms);
        if let Some(t) = e.ttft_ms {
            self.ttft_ms_sum = self.ttft_ms_sum.saturating_add(t);
            self.ttft_ms_max = self.ttft_ms_max.max(t);
            self.ttft_count = self.ttft_count.saturating_add(1);
        }
    }

    pub fn merge(&mut self, o: &UsageCounters) {
        self.requests = self.requests.saturating_add(o.requests);
        for (class, n) in &o.errors {
            let v = self.errors.entry(*class).or_insert(0);
            *v = v.saturating_add(*n);
        }
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(o.cached_tokens);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(o.latency_ms_sum);
        self.latency_ms_max = self.latency_ms_max.max(o.latency_ms_max);
        self.ttft_ms_sum = self.ttft_ms_sum.saturating_add(o.ttft_ms_sum);
        self.ttft_ms_max = self.ttft_ms_max.max(o.ttft_ms_max);
        self.ttft_count = self.ttft_count.saturating_add(o.ttft_count);
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().fold(0u64, |a, n| a.saturating_add(*n))
    }
}

/// One bucket of a query result: an hour or a day (UTC) of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageBucket {
    /// Start of the hour or day, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub model: String,
    /// The API key of the bucket: set by stores on hourly buckets of keyed requests, and in
    /// views grouped by [`UsageGroup::ApiKey`]; absent for the admin token's requests and
    /// in views grouped by model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(flatten)]
    pub counters: UsageCounters,
}

impl UsageBucket {
    /// The bucket of the hour starting at `hour` (epoch seconds).
    pub fn hourly(hour: i64, model: String, counters: UsageCounters) -> Self {
        Self {
            start: epoch(hour),
            model,
            api_key_id: None,
            counters,
        }
    }
}

/// What the buckets of a usage view are per (besides the hour or day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageGroup {
    /// One bucket per model, every key's requests summed (the default).
    #[default]
    Model,
    /// One bucket per model and API key.
    ApiKey,
}

impl UsageGroup {
    /// The `groupBy` query parameter: `model` (default) or `apiKey`.
    pub fn parse(v: Option<&str>) -> Result<Self> {
        match v {
            None | Some("model") => Ok(Self::Model),
            Some("apiKey") => Ok(Self::ApiKey),
            Some(_) => Err(Error::invalid("groupBy", "must be model or apiKey")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

fn floor_to(t: i64, step: i64) -> i64 {
    t.div_euclid(step) * step
}

fn ceil_to(t: i64, step: i64) -> i64 {
    let f = floor_to(t, step);
    if f == t { t } else { f.saturating_add(step) }
}

fn epoch(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The hourly buckets a query reads: every hour `h` (epoch seconds of its start) with
/// `lo <= h < hi`, where `[lo, hi)` is `[from, to)` widened to whole buckets of
/// `granularity`. So a query returns every bucket that overlaps `[from, to)`, whole.
pub fn hour_bounds(
    from: OffsetDateTime,
    to: OffsetDateTime,
    granularity: Granularity,
) -> (i64, i64) {
    let step = granularity.seconds();
    (
        floor_to(from.unix_timestamp(), step),
        ceil_to(to.unix_timestamp(), step),
    )
}

/// Sums hourly buckets into buckets of `granularity`, one per model (every key summed),
/// sorted by start, then model: [`roll_up_by`] with [`UsageGroup::Model`].
pub fn roll_up(hours: Vec<UsageBucket>, granularity: Granularity) -> Vec<UsageBucket> {
    roll_up_by(hours, granularity, UsageGroup::Model)
}

/// Sums hourly buckets into buckets of `granularity` per `group`, sorted by start, then
/// model, then key (the admin token's first).
pub fn roll_up_by(
    hours: Vec<UsageBucket>,
    granularity: Granularity,
    group: UsageGroup,
) -> Vec<UsageBucket> {
    let step = granularity.seconds();
    let mut out: BTreeMap<(i64, String, Option<String>), UsageCounters> = BTreeMap::new();
    for b in hours {
        let start = floor_to(b.start.unix_timestamp(), step);
        let key = match group {
            UsageGroup::Model => None,
            UsageGroup::ApiKey => b.api_key_id,
        };
        out.entry((start, b.model, key))
            .or_default()
            .merge(&b.counters);
    }
    out.into_iter()
        .map(|((start, model, api_key_id), counters)| UsageBucket {
            start: epoch(start),
            model,
            api_key_id,
            counters,
        })
        .collect()
}

/// A validated `GET /v1/connections/{id}/usage` query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub granularity: Granularity,
}

impl UsageRange {
    /// Validates the query parameters (each optional): `granularity` `hour` (default) or
    /// `day`; `to` (default now) and `from` (default: 24 hours, or 30 days for `day`,
    /// before `to`) as RFC 3339 date-times; `from` before `to`; at most 31 days of hours or
    /// 400 days of days. Errors name the parameter.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        granularity: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let granularity = match granularity {
            None | Some("hour") => Granularity::Hour,
            Some("day") => Granularity::Day,
            Some(_) => return Err(Error::invalid("granularity", "must be hour or day")),
        };
        let time = |field: &str, v: &str| {
            // `checked_to_offset`: a time past year 9999 in UTC is an error, not a panic.
            OffsetDateTime::parse(v, &Rfc3339)
                .ok()
                .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
                .ok_or_else(|| {
                    Error::invalid(
                        field,
                        "must be an RFC 3339 date-time such as 2025-01-31T00:00:00Z",
                    )
                })
        };
        let to = match to {
            Some(v) => time("to", v)?,
            None => now,
        };
        let from = match from {
            Some(v) => time("from", v)?,
            None => match granularity {
                Granularity::Hour => to - Duration::hours(24),
                Granularity::Day => to - Duration::days(30),
            },
        };
        if from >= to {
            return Err(Error::invalid("from", "must be before to"));
        }
        let max = match granularity {
            Granularity::Hour => MAX_HOURLY_RANGE,
            Granularity::Day => MAX_DAILY_RANGE,
        };
        if to - from > max {
            return Err(Error::invalid(
                "from",
                format!(
                    "the range may span at most {} days with granularity {}",
                    max.whole_days(),
                    granularity.as_str()
                ),
            ));
        }
        Ok(Self {
            from,
            to,
            granularity,
        })
    }
}

/// Where usage statistics live.
///
/// Invariants every adapter keeps (the conformance suite `vmx_conformance::usage` checks
/// them):
/// - `record` is one atomic write per event, whatever its API key (DynamoDB: one `UpdateItem` with `ADD`, plus a
///   conditional second one only when the event sets a new maximum of its bucket); no
///   counter is ever lost to concurrent records;
/// - `hours` returns the hourly buckets of `connection_id` with `lo <= start < hi`, each
///   with its API key (`None` for the admin token's), in any order; `query` (provided)
///   returns the buckets that overlap `[from, to)`, whole, at `granularity` (days are summed
///   from hours at read time, UTC) per [`UsageGroup`], sorted by start, then model, then key;
///   buckets without any request do not appear;
/// - usage outlives its connection: deleting a connection keeps its statistics (they expire
///   after [`RETENTION_DAYS`] in DynamoDB).
#[async_trait]
pub trait UsageStore: Send + Sync {
    async fn record(&self, event: &UsageEvent) -> Result<()>;

    /// The hourly buckets of `connection_id` whose hour starts in `[lo, hi)` (epoch seconds).
    async fn hours(&self, connection_id: &str, lo: i64, hi: i64) -> Result<Vec<UsageBucket>>;

    /// The buckets one model each (every key summed) that overlap `[from, to)`.
    async fn query(
        &self,
        connection_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
    ) -> Result<Vec<UsageBucket>> {
        self.query_by(connection_id, from, to, granularity, UsageGroup::Model)
            .await
    }

    /// The buckets per `group` that overlap `[from, to)`.
    async fn query_by(
        &self,
        connection_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
        group: UsageGroup,
    ) -> Result<Vec<UsageBucket>> {
        let (lo, hi) = hour_bounds(from, to, granularity);
        if lo >= hi || connection_id.is_empty() {
            return Ok(Vec::new());
        }
        let hours = self.hours(connection_id, lo, hi).await?;
        Ok(roll_up_by(hours, granularity, group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    #[test]
    fn error_classes_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
        assert_eq!(ErrorClass::parse("nope"), None);
    }

    #[test]
    fn counters_add_and_merge() {
        let mut e = UsageEvent::new("c", "m", at("2025-01-01T10:59:59Z"));
        e.prompt_tokens = 10;
        e.completion_tokens = 5;
        e.cached_tokens = 2;
        e.latency_ms = 100;
        e.ttft_ms = Some(40);
        let mut a = UsageCounters::default();
        a.add_event(&e);
        e.error = Some(ErrorClass::Timeout);
        e.latency_ms = 300;
        e.ttft_ms = None;
        a.add_event(&e);
        assert_eq!(a.requests, 2);
        assert_eq!(a.error_count(), 1);
        assert_eq!(a.errors.get(&ErrorClass::Timeout), Some(&1));
        assert_eq!(
            (a.prompt_tokens, a.completion_tokens, a.cached_tokens),
            (20, 10, 4)
        );
        assert_eq!((a.latency_ms_sum, a.latency_ms_max), (400, 300));
        assert_eq!((a.ttft_ms_sum, a.ttft_ms_max, a.ttft_count), (40, 40, 1));
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.requests, 4);
        assert_eq!(b.latency_ms_max, 300);
        assert_eq!(b.errors.get(&ErrorClass::Timeout), Some(&2));
        assert_eq!(e.hour(), at("2025-01-01T10:00:00Z").unix_timestamp());
    }

    #[test]
    fn bounds_widen_to_whole_buckets() {
        let (lo, hi) = hour_bounds(
            at("2025-01-01T10:30:00Z"),
            at("2025-01-01T12:00:00Z"),
            Granularity::Hour,
        );
        assert_eq!(lo, at("2025-01-01T10:00:00Z").unix_timestamp());
        assert_eq!(hi, at("2025-01-01T12:00:00Z").unix_timestamp());
        let (lo, hi) = hour_bounds(
            at("2025-01-01T10:30:00Z"),
            at("2025-01-02T00:00:01Z"),
            Granularity::Day,
        );
        assert_eq!(lo, at("2025-01-01T00:00:00Z").unix_timestamp());
        assert_eq!(hi, at("2025-01-03T00:00:00Z").unix_timestamp());
    }

    #[test]
    fn roll_up_sums_hours_into_days_sorted() {
        let c = UsageCounters {
            requests: 1,
            latency_ms_max: 7,
            ..Default::default()
        };
        let mk = |t: &str, m: &str, c: &UsageCounters| UsageBucket {
            api_key_id: None,
            start: at(t),
            model: m.to_owned(),
            counters: c.clone(),
        };
        let hours = vec![
            mk("2025-01-02T01:00:00Z", "b", &c),
            mk("2025-01-01T23:00:00Z", "b", &c),
            mk("2025-01-01T01:00:00Z", "b", &c),
            mk("2025-01-01T05:00:00Z", "a", &c),
        ];
        let days = roll_up(hours.clone(), Granularity::Day);
        let got: Vec<(String, &str, u64)> = days
            .iter()
            .map(|b| (b.start.to_string(), b.model.as_str(), b.counters.requests))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(days[0].start, at("2025-01-01T00:00:00Z"));
        assert_eq!(
            (days[0].model.as_str(), days[0].counters.requests),
            ("a", 1)
        );
        assert_eq!(
            (days[1].model.as_str(), days[1].counters.requests),
            ("b", 2)
        );
        assert_eq!(days[2].start, at("2025-01-02T00:00:00Z"));
        let same = roll_up(hours, Granularity::Hour);
        assert_eq!(same.len(), 4);
        assert!(same.windows(2).all(|w| w[0].start <= w[1].start));
    }

    #[test]
    fn bucket_json_shape() {
        let mut c = UsageCounters::default();
        c.errors.insert(ErrorClass::RateLimited, 2);
        let b = UsageBucket::hourly(3600, "gpt".to_owned(), c);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["start"], "1970-01-01T01:00:00Z");
        assert_eq!(v["errors"]["rate_limited"], 2);
        assert_eq!(v["latencyMsMax"], 0);
        let back: UsageBucket = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn range_parameters_are_validated() {
        let now = at("2025-06-01T12:00:00Z");
        let d = UsageRange::parse(None, None, None, now).unwrap();
        assert_eq!(
            (d.from, d.to, d.granularity),
            (now - Duration::hours(24), now, Granularity::Hour)
        );
        let d = UsageRange::parse(None, None, Some("day"), now).unwrap();
        assert_eq!(d.from, now - Duration::days(30));
        let field = |r: Result<UsageRange>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => format!("{other:?}"),
        };
        assert_eq!(
            field(UsageRange::parse(None, None, Some("week"), now)),
            "granularity"
        );
        assert_eq!(field(UsageRange::parse(Some("x"), None, None, now)), "from");
        assert_eq!(field(UsageRange::parse(None, Some("x"), None, now)), "to");
        assert_eq!(
            field(UsageRange::parse(
                Some("2025-06-02T00:00:00Z"),
                None,
                None,
                now
            )),
            "from"
        );
        assert_eq!(
            field(UsageRange::parse(
                Some("2025-01-01T00:00:00Z"),
                None,
                None,
                now
            )),
            "from"
        );
        assert!(UsageRange::parse(Some("2025-01-01T00:00:00Z"), None, Some("day"), now).is_ok());
    }
}
