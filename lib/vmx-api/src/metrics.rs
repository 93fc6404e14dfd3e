//! Metrics of inference, with one set of names and dimensions for every sink.
//!
//! What is measured, per inference request that reached a connection
//! ([`crate::accounting::Accounting`] reports it once, when the call ends):
//!
//! | name | unit | dimensions |
//! | --- | --- | --- |
//! | `requests` | Count | `connection`, `provider`; `connection`, `model`; none |
//! | `prompt_tokens`, `completion_tokens` | Count | as `requests` |
//! | `latency_ms` | Milliseconds | as `requests` |
//! | `ttft_ms` (streams that produced content) | Milliseconds | as `requests` |
//! | `utilization_percent` (admitted requests) | Percent | `connection`, `provider`; none |
//! | `errors` | Count | `connection`, `provider`, `error_class`; `provider`, `error_class`; `error_class` |
//! | `throttled` (429s) | Count | `connection`, `limit_kind`; `limit_kind`; none |
//!
//! `utilization_percent` is the fullest window of the admission: the largest used/limit of
//! every window and metric (requests, tokens) the request was charged to, after the charge.
//! `error_class` is the usage statistics' class (`rate_limited`, `capacity_exceeded`, `auth`,
//! `bad_request`, `upstream`, `timeout`, `network`, `other`); failures of vmx's own backing
//! services, which happen before a connection's call, are reported with only `error_class`:
//! `dynamodb`, `kms`, `unavailable`, `internal` ([`backing_error_class`]). `limit_kind` names
//! the window that refused (`requests_per_minute`, `tokens_per_day`, `tokens_lifetime`...) or
//! `provider` for the provider's own 429.
//!
//! `connection` is the connection's id (stable across renames). `model` is bounded so that a
//! caller cannot create series at will: a model in the connection's `allowedModels` keeps its
//! name; without `allowedModels`, the first [`MODELS_PER_CONNECTION`] distinct models a
//! process sees per connection keep theirs; every other model is `other`.
//!
//! Sinks: [`Metrics::emf`] writes one CloudWatch Embedded Metric Format line per request to
//! stdout (the Lambda functions: CloudWatch Logs extracts the metrics, no API call);
//! [`Metrics::prometheus`] keeps counters and histograms in memory for `GET /metrics` (the
//! local server), where counters are named `vmx_<name>_total` and the rest `vmx_<name>`, with
//! the same labels. The binaries choose the sink; this module knows neither Lambda nor AWS.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use vmx_domain::Error as DomainError;
use vmx_domain::admission::{Admitted, Metric, Rejection};
use vmx_domain::capacity::Period;

/// The CloudWatch namespace of the EMF metrics, and the Prometheus name prefix.
pub const NAMESPACE: &str = "vmx";

/// Distinct models per connection that keep their name when the connection has no
/// `allowedModels`.
pub const MODELS_PER_CONNECTION: usize = 20;

/// The longest model name kept in a dimension; a longer one is `other`.
const MODEL_MAX_CHARS: usize = 128;

pub const REQUESTS: &str = "requests";
pub const ERRORS: &str = "errors";
pub const THROTTLED: &str = "throttled";
pub const PROMPT_TOKENS: &str = "prompt_tokens";
pub const COMPLETION_TOKENS: &str = "completion_tokens";
pub const LATENCY_MS: &str = "latency_ms";
pub const TTFT_MS: &str = "ttft_ms";
pub const UTILIZATION_PERCENT: &str = "utilization_percent";

/// Every metric with its EMF unit (template checks read this table).
pub const METRICS: [(&str, &str); 8] = [
    (REQUESTS, "Count"),
    (ERRORS, "Count"),
    (THROTTLED, "Count"),
    (PROMPT_TOKENS, "Count"),
    (COMPLETION_TOKENS, "Count"),
    (LATENCY_MS, "Milliseconds"),
    (TTFT_MS, "Milliseconds"),
    (UTILIZATION_PERCENT, "Percent"),
];

pub const CONNECTION: &str = "connection";
pub const PROVIDER: &str = "provider";
pub const MODEL: &str = "model";
pub const ERROR_CLASS: &str = "error_class";
pub const LIMIT_KIND: &str = "limit_kind";

/// What one inference request did, as [`Metrics::record`] takes it.
#[derive(Debug, Clone, Default)]
pub struct Inference<'a> {
    pub connection_id: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    /// The connection's `allowedModels`, which bound the `model` dimension.
    pub allowed_models: Option<&'a [String]>,
    /// The class of a failed request ([`vmx_domain::usage::ErrorClass::as_str`]).
    pub error_class: Option<&'static str>,
    /// Which limit answered 429 ([`limit_kind`], or `provider`).
    pub limit_kind: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    /// [`utilization_percent`] of the admission, when the request was admitted.
    pub utilization_percent: Option<f64>,
    /// The request's id, written into the EMF line as a property (not a dimension).
    pub request_id: Option<&'a str>,
}

/// The `limit_kind` of a capacity rejection: `<metric>_per_<period>`, `<metric>_lifetime`.
pub fn limit_kind(r: &Rejection) -> String {
    match r.period {
        Period::Lifetime => format!("{}_lifetime", r.metric.as_str()),
        p => format!("{}_per_{}", r.metric.as_str(), p.as_str()),
    }
}

/// The fullest window of an admission, in percent (after its charge); `None` when no window
/// limits the request.
pub fn utilization_percent(admitted: &Admitted) -> Option<f64> {
    admitted
        .windows
        .iter()
        .flat_map(|w| {
            [Metric::Requests, Metric::Tokens]
                .into_iter()
                .filter_map(move |m| {
                    let limit = w.window.limit(m)?;
                    (limit > 0).then(|| w.used.get(m) as f64 * 100.0 / limit as f64)
                })
        })
        .reduce(f64::max)
}

/// The `error_class` of a failure of vmx's own backing services: `dynamodb` and `kms` from
/// the operation the AWS adapters name first in the error's detail (`DynamoDB UpdateItem:
/// ...`, `KMS Decrypt: ...`; a decryption failure is `kms`), else `unavailable` or
/// `internal`. `None` for errors that are the caller's (validation, not found, conflicts).
pub fn backing_error_class(e: &DomainError) -> Option<&'static str> {
    let service = |detail: &str| {
        if detail.starts_with("DynamoDB") {
            Some("dynamodb")
        } else if detail.starts_with("KMS") {
            Some("kms")
        } else {
            None
        }
    };
    match e {
        DomainError::Crypto { .. } => Some("kms"),
        DomainError::Unavailable { detail, .. } => service(detail).or(Some("unavailable")),
        DomainError::Internal { detail } => service(detail).or(Some("internal")),
        _ => None,
    }
}

/// Where EMF lines go (stdout in Lambda; a test's buffer).
pub type EmfWriter = Box<dyn Fn(&str) + Send + Sync>;

enum Sink {
    Off,
    Emf(EmfWriter),
    Prometheus(Box<Prometheus>),
}

/// The metrics of a process: a sink and the per-connection model bound. Built once at start.
pub struct Metrics {
    sink: Sink,
    /// Models seen per connection without `allowedModels` (at most
    /// [`MODELS_PER_CONNECTION`] each).
    models: Mutex<HashMap<String, HashSet<String>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sink = match self.sink {
            Sink::Off => "off",
            Sink::Emf(_) => "emf",
            Sink::Prometheus(_) => "prometheus",
        };
        f.debug_struct("Metrics").field("sink", &sink).finish()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::off()
    }
}

impl Metrics {
    fn with(sink: Sink) -> Self {
        Self {
            sink,
            models: Mutex::new(HashMap::new()),
        }
    }

    /// Records nothing.
    pub fn off() -> Self {
        Self::with(Sink::Off)
    }

    /// One EMF JSON line per request on stdout, written whole under the stdout lock so it
    /// never interleaves with a log line.
    pub fn emf() -> Self {
        Self::emf_to(Box::new(|line: &str| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
        }))
    }

    /// EMF lines handed to `writer` (without the newline).
    pub fn emf_to(writer: EmfWriter) -> Self {
        Self::with(Sink::Emf(writer))
    }

    /// In-memory counters and histograms for [`Self::prometheus_text`].
    pub fn prometheus() -> Self {
        Self::with(Sink::Prometheus(Box::new(Prometheus::new())))
    }

    /// The Prometheus (OpenMetrics) text exposition; `None` when this process has another
    /// sink.
    pub fn prometheus_text(&self) -> Option<String> {
        match &self.sink {
            Sink::Prometheus(p) => {
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &p.registry).ok()?;
                Some(out)
            }
            _ => None,
        }
    }

    /// The `model` dimension of `model` on a connection (see the module docs).
    fn model_label(&self, i: &Inference<'_>) -> String {
        let model = i.model;
        if model.is_empty() || model.chars().count() > MODEL_MAX_CHARS {
            return "other".to_owned();
        }
        if let Some(allowed) = i.allowed_models {
            return if allowed.iter().any(|m| m == model) {
                model.to_owned()
            } else {
                "other".to_owned()
            };
        }
        let Ok(mut seen) = self.models.lock() else {
            return "other".to_owned();
        };
        if seen.len() > 10_000 && !seen.contains_key(i.connection_id) {
            return "other".to_owned();
        }
        let models = seen.entry(i.connection_id.to_owned()).or_default();
        if models.contains(model) || models.len() < MODELS_PER_CONNECTION {
            models.insert(model.to_owned());
            model.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// Records one inference request in the sink.
    pub fn record(&self, i: &Inference<'_>) {
        if matches!(self.sink, Sink::Off) {
            return;
        }
        let model = self.model_label(i);
        match &self.sink {
            Sink::Off => {}
            Sink::Emf(write) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let line = emf_inference(i, &model, u64::try_from(now).unwrap_or(0));
                write(&line.to_string());
            }
            Sink::Prometheus(p) => p.record(i, &model),
        }
    }

    /// Records a failure of a backing service ([`backing_error_class`]): `errors` with only
    /// `error_class` (the Prometheus labels `connection` and `provider` are empty).
    pub fn record_backing_error(&self, class: &'static str) {
        match &self.sink {
            Sink::Off => {}
            Sink::Emf(write) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                let mut root = Map::new();
                root.insert(ERROR_CLASS.to_owned(), json!(class));
                root.insert(ERRORS.to_owned(), json!(1));
                root.insert(
                    "_aws".to_owned(),
                    json!({
                        "Timestamp": u64::try_from(now).unwrap_or(0),
                        "CloudWatchMetrics": [directive(&[&[ERROR_CLASS]], &[ERRORS])],
                    }),
                );
                write(&Value::Object(root).to_string());
            }
            Sink::Prometheus(p) => {
                p.errors
                    .get_or_create(&vec![
                        (CONNECTION, String::new()),
                        (PROVIDER, String::new()),
                        (ERROR_CLASS, class.to_owned()),
                    ])
                    .inc();
            }
        }
    }
}

/// The EMF unit of a metric name.
fn unit(name: &str) -> &'static str {
    METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| *u)
        .unwrap_or("None")
}

/// One MetricDirective: the namespace, its dimension sets and metric definitions.
fn directive(dimensions: &[&[&str]], metrics: &[&str]) -> Value {
    json!({
        "Namespace": NAMESPACE,
        "Dimensions": dimensions,
        "Metrics": metrics
            .iter()
            .map(|m| json!({"Name": m, "Unit": unit(m)}))
            .collect::<Vec<_>>(),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The EMF document of one inference request: the dimension values and metric values at the
/// root, one directive per group of metrics sharing dimension sets.
fn emf_inference(i: &Inference<'_>, model: &str, timestamp_ms: u64) -> Value {
    let mut root = Map::new();
    root.insert(CONNECTION.to_owned(), json!(i.connection_id));
    root.insert(PROVIDER.to_owned(), json!(i.provider));
    root.insert(MODEL.to_owned(), json!(model));
    if let Some(id) = i.request_id {
        root.insert("request_id".to_owned(), json!(id));
    }
    root.insert(REQUESTS.to_owned(), json!(1));
    root.insert(PROMPT_TOKENS.to_owned(), json!(i.prompt_tokens));
    root.insert(COMPLETION_TOKENS.to_owned(), json!(i.completion_tokens));
    root.insert(LATENCY_MS.to_owned(), json!(millis(i.latency)));
    let mut per_request = vec![REQUESTS, PROMPT_TOKENS, COMPLETION_TOKENS, LATENCY_MS];
    if let Some(t) = i.ttft {
        root.insert(TTFT_MS.to_owned(), json!(millis(t)));
        per_request.push(TTFT_MS);
    }
    let mut directives = vec![directive(
        &[&[CONNECTION, PROVIDER], &[CONNECTION, MODEL], &[]],
        &per_request,
    )];
    if let Some(u) = i.utilization_percent {
        root.insert(UTILIZATION_PERCENT.to_owned(), json!(u));
        directives.push(directive(
            &[&[CONNECTION, PROVIDER], &[]],
            &[UTILIZATION_PERCENT],
        ));
    }
    if let Some(class) = i.error_class {
        root.insert(ERROR_CLASS.to_owned(), json!(class));
        root.insert(ERRORS.to_owned(), json!(1));
        directives.push(directive(
            &[
                &[CONNECTION, PROVIDER, ERROR_CLASS],
                &[PROVIDER, ERROR_CLASS],
                &[ERROR_CLASS],
            ],
            &[ERRORS],
        ));
    }
    if let Some(kind) = &i.limit_kind {
        root.insert(LIMIT_KIND.to_owned(), json!(kind));
        root.insert(THROTTLED.to_owned(), json!(1));
        directives.push(directive(
            &[&[CONNECTION, LIMIT_KIND], &[LIMIT_KIND], &[]],
            &[THROTTLED],
        ));
    }
    root.insert(
        "_aws".to_owned(),
        json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
    );
    Value::Object(root)
}

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The Prometheus sink: one family per metric, labelled as the EMF dimensions.
struct Prometheus {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    throttled: Family<Labels, Counter>,
    prompt_tokens: Family<Labels, Counter>,
    completion_tokens: Family<Labels, Counter>,
    latency_ms: HistogramFamily,
    ttft_ms: HistogramFamily,
    utilization_percent: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

fn millis_histogram() -> Histogram {
    // 5 ms to about 82 s.
    Histogram::new(exponential_buckets(5.0, 2.0, 15))
}

impl Prometheus {
    fn new() -> Self {
        let mut registry = Registry::with_prefix(NAMESPACE);
        let p = Self {
            requests: Family::default(),
            errors: Family::default(),
            throttled: Family::default(),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            latency_ms: Family::new_with_constructor(millis_histogram),
            ttft_ms: Family::new_with_constructor(millis_histogram),
            utilization_percent: Family::default(),
            registry: Registry::default(),
        };
        let help = |name: &str| match name {
            REQUESTS => "Inference requests that reached a connection",
            ERRORS => "Failed requests by error class",
            THROTTLED => "Requests answered 429, by the limit that refused them",
            PROMPT_TOKENS => "Prompt tokens the provider reported",
            COMPLETION_TOKENS => "Completion tokens the provider reported",
            LATENCY_MS => "Time from the request's arrival to its end, in milliseconds",
            TTFT_MS => "Time to the first streamed content, in milliseconds",
            _ => "The fullest capacity window after the last admission, in percent",
        };
        registry.register(REQUESTS, help(REQUESTS), p.requests.clone());
        registry.register(ERRORS, help(ERRORS), p.errors.clone());
        registry.register(THROTTLED, help(THROTTLED), p.throttled.clone());
        registry.register(PROMPT_TOKENS, help(PROMPT_TOKENS), p.prompt_tokens.clone());
        registry.register(
            COMPLETION_TOKENS,
            help(COMPLETION_TOKENS),
            p.completion_tokens.clone(),
        );
        registry.register(LATENCY_MS, help(LATENCY_MS), p.latency_ms.clone());
        registry.register(TTFT_MS, help(TTFT_MS), p.ttft_ms.clone());
        registry.register(
            UTILIZATION_PERCENT,
            help(UTILIZATION_PERCENT),
            p.utilization_percent.clone(),
        );
        Self { registry, ..p }
    }

    fn record(&self, i: &Inference<'_>, model: &str) {
        let conn = || (CONNECTION, i.connection_id.to_owned());
        let provider = || (PROVIDER, i.provider.to_owned());
        let by_model: Labels = vec![conn(), provider(), (MODEL, model.to_owned())];
        self.requests.get_or_create(&by_model).inc();
        self.prompt_tokens
            .get_or_create(&by_model)
            .inc_by(i.prompt_tokens);
        self.completion_tokens
            .get_or_create(&by_model)
            .inc_by(i.completion_tokens);
        self.latency_ms
            .get_or_create(&by_model)
            .observe(millis(i.latency) as f64);
        if let Some(t) = i.ttft {
            self.ttft_ms
                .get_or_create(&by_model)
                .observe(millis(t) as f64);
        }
        if let Some(u) = i.utilization_percent {
            self.utilization_percent
                .get_or_create(&vec![conn(), provider()])
                .set(u);
        }
        if let Some(class) = i.error_class {
            self.errors
                .get_or_create(&vec![conn(), provider(), (ERROR_CLASS, class.to_owned())])
                .inc();
        }
        if let Some(kind) = &i.limit_kind {
            self.throttled
                .get_or_create(&vec![conn(), provider(), (LIMIT_KIND, kind.clone())])
                .inc();
        }
    }
}

/// Shared by the gateway and the routes.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests;
