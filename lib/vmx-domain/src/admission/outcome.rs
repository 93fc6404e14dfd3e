//! What the caller is told: the admitted request's `x-ratelimit-*` headers, and the
//! rejection's 429 body and headers.

use super::*;

/// An admitted request: its reservation (to reconcile after the call) and the counters of
/// its windows after the charge (for the `x-ratelimit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub reservation: Reservation,
    pub windows: Vec<WindowState>,
    /// When the admission happened.
    pub at: OffsetDateTime,
    /// The connection's configuration version as the admission's write left it, where the
    /// ledger keeps one ([`crate::ports::CapacityLedger::bump_config_version`]); `None`
    /// otherwise (one process, or an admission that wrote no connection item).
    pub config_version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowState {
    pub window: PlannedWindow,
    pub used: Counters,
}

/// Limit, remaining and reset of the tightest window of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headroom {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window ends; `None` for lifetime.
    pub reset_secs: Option<u64>,
}

impl Admitted {
    /// The tightest window limiting `metric`: the least remaining; on a tie, the one that
    /// resets last. `None` when no window limits it.
    pub fn headroom(&self, metric: Metric) -> Option<Headroom> {
        self.windows
            .iter()
            .filter_map(|s| {
                let limit = s.window.limit(metric)?;
                Some(Headroom {
                    limit,
                    remaining: limit.saturating_sub(s.used.get(metric)),
                    reset_secs: s.window.reset_secs(self.at),
                })
            })
            .min_by_key(|h| {
                (
                    h.remaining,
                    std::cmp::Reverse(h.reset_secs.unwrap_or(u64::MAX)),
                )
            })
    }

    /// OpenAI-style headers for the tightest window of each metric:
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`. The reset is a duration
    /// such as `1s`, `6m0s` or `1h2m3s`, and is left out for a lifetime window.
    pub fn rate_limit_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (metric, names) in [
            (
                Metric::Requests,
                [
                    "x-ratelimit-limit-requests",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ],
            ),
            (
                Metric::Tokens,
                [
                    "x-ratelimit-limit-tokens",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ],
            ),
        ] {
            if let Some(h) = self.headroom(metric) {
                let [limit, remaining, reset] = names;
                out.push((limit, h.limit.to_string()));
                out.push((remaining, h.remaining.to_string()));
                if let Some(secs) = h.reset_secs {
                    out.push((reset, openai_duration(secs)));
                }
            }
        }
        out
    }
}

/// A duration in OpenAI's header format: `45s`, `6m0s`, `1h2m3s`.
pub fn openai_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The window is full (for now, or for good if it is a lifetime window).
    Exhausted,
    /// The prompt alone is larger than the window's tokens limit: retrying never helps.
    NeverFits { prompt_tokens: u64 },
}

/// A rejected admission: which window and limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub connection_name: String,
    pub period: Period,
    pub metric: Metric,
    pub limit: u64,
    pub scope: Scope,
    /// Seconds until the window ends; `None` for lifetime and for a request that never fits.
    pub retry_after_secs: Option<u64>,
    pub kind: RejectionKind,
    /// The caller's prioritization pool, when pools are defined and the window is
    /// connection-wide.
    pub pool: Option<Box<PoolRejection>>,
    /// The caller's API key, when the tripped window is one of the key's own
    /// ([`Scope::ApiKey`]).
    pub api_key_id: Option<Box<str>>,
    /// The connection's configuration version as the failed write found it, where the
    /// ledger keeps one and read the connection item (see
    /// [`Admitted::config_version`]; `None` too past `u32::MAX`, which keeps this type
    /// small); never shown to the caller.
    pub config_version: Option<u32>,
}

/// The pool named by a rejection, and its allocation in the tripped window and metric
/// (what it had used plus what it could still add; see [`crate::prioritization`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRejection {
    pub name: String,
    pub allocation: u64,
}

impl Rejection {
    /// The `error.code` of the response body.
    pub const CODE: &'static str = "capacity_exceeded";

    /// E.g. `connection 'prod-openai' reached its limit of 100 requests per minute`; with a
    /// pool, `...; pool 'batch' is allocated 30 of them now`.
    pub fn message(&self) -> String {
        let base = self.base_message();
        match (&self.pool, self.kind) {
            (Some(p), RejectionKind::Exhausted) => format!(
                "{base}; prioritization pool '{}' is allocated {} {} of it now",
                p.name,
                p.allocation,
                self.metric.as_str()
            ),
            _ => base,
        }
    }

    fn base_message(&self) -> String {
        let name = &self.connection_name;
        let (limit, metric) = (self.limit, self.metric.as_str());
        let ip = match self.scope {
            Scope::Connection | Scope::ApiKey => String::new(),
            Scope::SourceIp(ip) => format!(" for source IP {ip}"),
        };
        let lifetime = self.period == Period::Lifetime;
        if self.scope == Scope::ApiKey {
            let key = self.api_key_id.as_deref().unwrap_or("?");
            let per = if lifetime {
                "in its lifetime".to_owned()
            } else {
                format!("per {}", self.period.as_str())
            };
            return match self.kind {
                RejectionKind::Exhausted => format!(
                    "API key '{key}' reached its own limit of {limit} {metric} {per} on \
                     connection '{name}' (a key's capacity applies per connection it uses)"
                ),
                RejectionKind::NeverFits { prompt_tokens } => format!(
                    "the request's prompt needs an estimated {prompt_tokens} tokens, more than \
                     API key '{key}' allows {per} (limit {limit} tokens), so it can never \
                     fit: shorten the prompt or raise the key's limit"
                ),
            };
        }
        match self.kind {
            RejectionKind::Exhausted if lifetime => format!(
                "connection '{name}' reached its lifetime limit of {limit} {metric}{ip}; \
                 this cap is permanent until the limit is raised"
            ),
            RejectionKind::Exhausted => format!(
                "connection '{name}' reached its limit of {limit} {metric} per {}{ip}",
                self.period.as_str()
            ),
            RejectionKind::NeverFits { prompt_tokens } => {
                let per = if lifetime {
                    "in its lifetime".to_owned()
                } else {
                    format!("per {}", self.period.as_str())
                };
                format!(
                    "the request's prompt needs an estimated {prompt_tokens} tokens, more than \
                     connection '{name}' allows {per}{ip} (limit {limit} tokens), so it can \
                     never fit: shorten the prompt or raise the limit"
                )
            }
        }
    }

    /// The response body:
    /// `{"error":{"code":"capacity_exceeded","message":...,"limit":{"period":"minute",
    /// "metric":"requests","limit":100,"scope":"connection"}}}`; a source-ip scope adds
    /// `"sourceIp"` to `limit`, an API key's own window (`"scope":"apiKey"`) adds
    /// `"apiKeyId"`, a pool adds `"pool"` and `"poolAllocation"`, a prompt that never fits adds `"estimatedPromptTokens"`.
    pub fn body(&self) -> Value {
        let mut limit = json!({
            "period": self.period.as_str(),
            "metric": self.metric.as_str(),
            "limit": self.limit,
            "scope": self.scope.as_str(),
        });
        if let (Some(ip), Value::Object(o)) = (self.scope.ip(), &mut limit) {
            o.insert("sourceIp".to_owned(), Value::String(ip.to_string()));
        }
        if let (Some(id), Value::Object(o)) = (&self.api_key_id, &mut limit) {
            o.insert("apiKeyId".to_owned(), Value::String(id.to_string()));
        }
        if let (Some(p), Value::Object(o)) = (&self.pool, &mut limit) {
            o.insert("pool".to_owned(), Value::String(p.name.clone()));
            o.insert("poolAllocation".to_owned(), json!(p.allocation));
        }
        let mut error = json!({
            "code": Self::CODE,
            "message": self.message(),
            "limit": limit,
        });
        if let (RejectionKind::NeverFits { prompt_tokens }, Value::Object(o)) =
            (self.kind, &mut error)
        {
            o.insert("estimatedPromptTokens".to_owned(), json!(prompt_tokens));
        }
        json!({ "error": error })
    }
}
