//! Admission: what one request must fit in, and what the caller is told.
//!
//! # Semantics
//!
//! Every *enabled* capacity entry of a connection is a window (see [`crate::capacity`]).
//! Entries without a dimension are connection-wide; `dimension: "source-ip"` entries keep one
//! counter per caller IP (the IP is canonicalised: `::ffff:1.2.3.4` counts as `1.2.3.4`).
//! Every window counts both requests and tokens, whichever of the two it limits, so that the
//! usage view can show both.
//!
//! A request is admitted only if every applicable window has room, and admission charges one
//! request and a token reservation to all of them atomically: all or nothing.
//!
//! # The token reservation
//!
//! The reservation is `prompt + output`, where `prompt` is the estimate of
//! [`estimate_request_tokens`] (or [`estimate_prompt_tokens`]) and `output` is the request's
//! own output limit (`max_tokens`, `max_completion_tokens`, ...) or, when it gives none, a
//! configurable default ([`DEFAULT_OUTPUT_RESERVATION`]). `max_tokens` is never required.
//!
//! A window with a tokens limit `T` and `used` tokens admits the request iff
//! `used + prompt <= T`: only the prompt must fit. The output part is then capped at what
//! the tightest token window has left:
//!
//! ```text
//! output = min(max_output, min over token windows of (T - used - prompt))
//! ```
//!
//! so a connection whose token limit is smaller than the default output reservation is never
//! locked out. A prompt larger than `T` itself can never fit; [`plan`] rejects it before any
//! counter is touched, with a message that says so ([`RejectionKind::NeverFits`]).
//!
//! The cap depends on the counters, so it must be computed from the same state the charge
//! is applied to. [`AdmitRequest::decide`] is that computation, over one consistent
//! snapshot of the counters:
//! - the embedded ledger reads the counters and writes the charge in one serializable write
//!   transaction;
//! - the DynamoDB ledger is optimistic: it first charges [`AdmitRequest::optimistic_charge`]
//!   (the cap computed as if the windows were empty) with a condition per window
//!   (`used <= limit - charge`). That is the one write of the common case. When a token
//!   condition fails, the failure returns the item as it was (`ALL_OLD`); `decide` on those
//!   values gives either the rejection or a smaller, exact charge, which is retried with
//!   the same conditions. The condition makes each attempt atomic, so no interleaving can
//!   overshoot a limit.
//!
//! After the provider call, the reservation is reconciled to the reported usage
//! ([`Reservation::reconcile`]), or refunded when the call failed ([`Reservation::failed`]).
//! Admission is the only step that checks limits: a reconciliation that reports more tokens
//! than reserved can take a counter past its limit, and later requests are then rejected
//! until the window ends. Counters therefore equal the true totals once every admitted
//! request is reconciled.
//!
//! # Which window a rejection names
//!
//! When several windows are full, the rejection names the one that stays full longest
//! (lifetime first, then the latest end; requests before tokens on a tie), so its
//! `Retry-After` is never too early. `Retry-After` is the number of seconds until that
//! window ends; a lifetime window has none, since its cap is permanent until raised.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::capacity::{CapacityEntry, Dimension, Period, Window};
use crate::connection::rfc3339;

/// Output tokens reserved for a request that does not state its own output limit.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;
/// Tokens counted per chat message on top of its text (role, separators).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;
/// Tokens counted once per request for the priming of the reply.
pub const REPLY_PRIMING_TOKENS: u64 = 3;
/// Tokens counted for one image or other binary attachment, whatever its size.
pub const ATTACHMENT_TOKENS: u64 = 1600;
/// Most source IPs a usage view lists per source-ip window.
pub const MAX_TOP_IPS: usize = 100;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Requests,
    Tokens,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// Whose counter a window is: the connection's, or one source IP's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "ip", rename_all = "kebab-case")]
pub enum Scope {
    Connection,
    SourceIp(IpAddr),
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::SourceIp(_) => "source-ip",
        }
    }

    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Connection => None,
            Self::SourceIp(ip) => Some(ip),
        }
    }
}

/// The form of an IP that counters are keyed by: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Request and token counters of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub tokens: u64,
}

impl Counters {
    pub fn get(self, metric: Metric) -> u64 {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
        }
    }
}

/// One window an admission must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWindow {
    pub period: Period,
    pub scope: Scope,
    pub window: Window,
    /// Requests limit, if the entry sets one.
    pub requests: Option<u64>,
    /// Tokens limit, if the entry sets one.
    pub tokens: Option<u64>,
}

impl PlannedWindow {
    pub fn limit(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
        }
    }

    /// Seconds until the window ends (at least 1), `None` for lifetime.
    pub fn reset_secs(&self, now: OffsetDateTime) -> Option<u64> {
        self.window.end.map(|end| secs_until(end, now))
    }
}

fn secs_until(end: i64, now: OffsetDateTime) -> u64 {
    u64::try_from(end.saturating_sub(now.unix_timestamp()))
        .unwrap_or(0)
        .max(1)
}

/// The token estimate of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenEstimate {
    /// Estimated prompt tokens: must fit in every token window.
    pub prompt: u64,
    /// Most output tokens to reserve; capped at what the windows have left.
    pub max_output: u64,
}

impl TokenEstimate {
    /// `requested_max_output` is the request's own output limit, if it states one;
    /// `default_output` is reserved otherwise (see [`DEFAULT_OUTPUT_RESERVATION`]).
    pub fn new(prompt: u64, requested_max_output: Option<u64>, default_output: u64) -> Self {
        Self {
            prompt,
            max_output: requested_max_output.unwrap_or(default_output),
        }
    }
}

/// What the ledger must do: charge one request and a token reservation to every window, or
/// none. Built by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitRequest {
    pub connection_id: String,
    /// For messages only.
    pub connection_name: String,
    /// The applicable enabled windows: connection-wide ones first, then source-ip ones.
    pub windows: Vec<PlannedWindow>,
    pub estimate: TokenEstimate,
    pub now: OffsetDateTime,
}

/// What the ledger decided for one snapshot of counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Charge one request and `tokens` tokens to every window.
    Charge {
        tokens: u64,
    },
    Reject(Rejection),
}

/// Builds the admission of a request on a connection with `entries`, from `source_ip`.
///
/// Disabled entries are ignored. A prompt that exceeds a tokens limit on its own is
/// rejected here (it can never fit), before any counter is touched. With no enabled entry
/// the request has no window and the ledger admits it without a write.
pub fn plan(
    connection_id: &str,
    connection_name: &str,
    entries: &[CapacityEntry],
    source_ip: IpAddr,
    estimate: TokenEstimate,
    now: OffsetDateTime,
) -> Result<AdmitRequest, Rejection> {
    let ip = canonical_ip(source_ip);
    let mut windows: Vec<PlannedWindow> = entries
        .iter()
        .filter(|e| e.enabled && (e.requests.is_some() || e.tokens.is_some()))
        .map(|e| PlannedWindow {
            period: e.period,
            scope: match e.dimension {
                None => Scope::Connection,
                Some(Dimension::SourceIp) => Scope::SourceIp(ip),
            },
            window: e.period.window(now),
            requests: e.requests,
            tokens: e.tokens,
        })
        .collect();
    windows.sort_by_key(|w| (w.scope != Scope::Connection, w.period));
    let request = AdmitRequest {
        connection_id: connection_id.to_owned(),
        connection_name: connection_name.to_owned(),
        windows,
        estimate,
        now,
    };
    // The window that can never hold the prompt and stays so longest.
    let never = request
        .windows
        .iter()
        .enumerate()
        .filter(|(_, w)| w.tokens.is_some_and(|t| estimate.prompt > t))
        .max_by_key(|(i, w)| (w.window.end.unwrap_or(i64::MAX), std::cmp::Reverse(*i)));
    if let Some((i, _)) = never {
        let mut r = request.rejection(i, Metric::Tokens);
        r.kind = RejectionKind::NeverFits {
            prompt_tokens: estimate.prompt,
        };
        r.retry_after_secs = None;
        return Err(r);
    }
    Ok(request)
}

impl AdmitRequest {
    /// True when no window applies: nothing to count.
    pub fn is_unlimited(&self) -> bool {
        self.windows.is_empty()
    }

    /// Decides on one consistent snapshot of the counters (`used[i]` for `windows[i]`;
    /// missing entries count as zero). See the module documentation.
    pub fn decide(&self, used: &[Counters]) -> Decision {
        let at = |i: usize| used.get(i).copied().unwrap_or_default();
        let prompt = self.estimate.prompt;
        let mut tripped: Option<(usize, Metric)> = None;
        let mut output = self.estimate.max_output;
        for (i, w) in self.windows.iter().enumerate() {
            let u = at(i);
            let mut trip = |metric: Metric| {
                let better = match tripped {
                    None => true,
                    Some((j, _)) => {
                        let end = |k: usize| {
                            self.windows
                                .get(k)
                                .map_or(i64::MIN, |w| w.window.end.unwrap_or(i64::MAX))
                        };
                        end(i) > end(j)
                    }
                };
                if better {
                    tripped = Some((i, metric));
                }
            };
            if w.requests.is_some_and(|r| u.requests.saturating_add(1) > r) {
                trip(Metric::Requests);
            }
            if let Some(t) = w.tokens {
                match t.checked_sub(u.tokens.saturating_add(prompt)) {
                    None => trip(Metric::Tokens),
                    Some(room) => output = output.min(room),
                }
            }
        }
        match tripped {
            Some((i, metric)) => Decision::Reject(self.rejection(i, metric)),
            None => Decision::Charge {
                tokens: prompt.saturating_add(output),
            },
        }
    }

    /// The charge to try first when the counters are not known: [`Self::decide`] as if every
    /// window were empty. `None` when even that is rejected (which [`plan`] already rules
    /// out).
    pub fn optimistic_charge(&self) -> Option<u64> {
        match self.decide(&[]) {
            Decision::Charge { tokens } => Some(tokens),
            Decision::Reject(_) => None,
        }
    }

    /// The rejection naming `windows[index]` and `metric`.
    pub fn rejection(&self, index: usize, metric: Metric) -> Rejection {
        let (period, scope, limit, retry) = match self.windows.get(index) {
            Some(w) => (
                w.period,
                w.scope,
                w.limit(metric).unwrap_or(0),
                w.reset_secs(self.now),
            ),
            None => (Period::Lifetime, Scope::Connection, 0, None),
        };
        Rejection {
            connection_name: self.connection_name.clone(),
            period,
            metric,
            limit,
            scope,
            retry_after_secs: retry,
            kind: RejectionKind::Exhausted,
        }
    }

    /// The admission result after charging one request and `tokens` tokens; `after[i]` are
    /// the counters of `windows[i]` after the charge (as the ledger read them back).
    pub fn admitted(&self, tokens: u64, after: Vec<Counters>) -> Admitted {
        let prompt = self.estimate.prompt.min(tokens);
        let windows = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| WindowState {
                window: w.clone(),
                used: after.get(i).copied().unwrap_or_default(),
            })
            .collect();
        Admitted {
            reservation: Reservation {
                connection_id: self.connection_id.clone(),
                windows: self
                    .windows
                    .iter()
                    .map(|w| ReservedWindow {
                        scope: w.scope,
                        key: w.window.key.clone(),
                        end: w.window.end,
                    })
                    .collect(),
                prompt_tokens: prompt,
                output_tokens: tokens - prompt,
            },
            windows,
            at: self.now,
        }
    }
}

/// The outcome of an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(Admitted),
    Rejected(Rejection),
}

/// An admitted request: its reservation (to reconcile after the call) and the counters of
/// its windows after the charge (for the `x-ratelimit-*` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub reservation: Reservation,
    pub windows: Vec<WindowState>,
    /// When the admission happened.
    pub at: OffsetDateTime,
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

/// The windows one admission charged, to reconcile or refund after the provider call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub connection_id: String,
    pub windows: Vec<ReservedWindow>,
    /// Tokens charged for the prompt estimate.
    pub prompt_tokens: u64,
    /// Tokens charged for the output (capped at what the windows had left).
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedWindow {
    #[serde(flatten)]
    pub scope: Scope,
    /// The window key ([`Window::key`]).
    pub key: String,
    /// Unix seconds; `None` for lifetime.
    pub end: Option<i64>,
}

impl ReservedWindow {
    /// Whether the window is still current at `now`; adjustments skip ended windows (their
    /// counters are never read again).
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.end.is_none_or(|end| now.unix_timestamp() < end)
    }
}

/// A change to apply to the windows of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Adjustment {
    /// Added to every token counter; negative to give tokens back.
    pub token_delta: i64,
    /// Whether to give the request back (decrement every request counter by one).
    pub refund_request: bool,
}

impl Adjustment {
    pub fn is_noop(self) -> bool {
        self.token_delta == 0 && !self.refund_request
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Reservation {
    /// Tokens charged by the admission.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.output_tokens)
    }

    /// After a call: bring the counters to the provider's reported total (prompt plus
    /// completion tokens). The delta may be negative.
    pub fn reconcile(&self, actual_tokens: u64) -> Adjustment {
        Adjustment {
            token_delta: signed(actual_tokens).saturating_sub(signed(self.tokens())),
            refund_request: false,
        }
    }

    /// After a failed call: refund the whole reservation, request included.
    pub fn refund(&self) -> Adjustment {
        Adjustment {
            token_delta: -signed(self.tokens()),
            refund_request: true,
        }
    }

    /// After a call that failed part-way: when no tokens were produced (the provider
    /// refused or never answered), everything is refunded; otherwise the request stays
    /// counted and the tokens are reconciled to `tokens_used`.
    pub fn failed(&self, tokens_used: u64) -> Adjustment {
        if tokens_used == 0 {
            self.refund()
        } else {
            self.reconcile(tokens_used)
        }
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
}

impl Rejection {
    /// The `error.code` of the response body.
    pub const CODE: &'static str = "capacity_exceeded";

    /// E.g. `connection 'prod-openai' reached its limit of 100 requests per minute`.
    pub fn message(&self) -> String {
        let name = &self.connection_name;
        let (limit, metric) = (self.limit, self.metric.as_str());
        let ip = match self.scope {
            Scope::Connection => String::new(),
            Scope::SourceIp(ip) => format!(" for source IP {ip}"),
        };
        let lifetime = self.period == Period::Lifetime;
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
    /// `"sourceIp"` to `limit`, a prompt that never fits adds `"estimatedPromptTokens"`.
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

// ---------------------------------------------------------------------------------------
// Window keys

/// The end (Unix seconds) of the window named `key` ([`Window::key`]): `Some(None)` for
/// lifetime, `None` when the key is not a window key. Ledgers use it to recognise counters
/// of ended windows and remove them.
pub fn window_key_end(key: &str) -> Option<Option<i64>> {
    if key == "L" {
        return Some(None);
    }
    let mut chars = key.chars();
    let tag = chars.next()?;
    let idx: i64 = chars.as_str().parse().ok()?;
    let fixed = |len: i64| idx.checked_add(1)?.checked_mul(len);
    let end = match tag {
        'm' => fixed(60)?,
        'h' => fixed(3_600)?,
        'd' => fixed(86_400)?,
        'w' => idx.checked_mul(7)?.checked_add(4)?.checked_mul(86_400)?,
        'M' => {
            let next = idx.checked_add(1)?;
            let year = i32::try_from(next.div_euclid(12)).ok()?;
            let month = time::Month::try_from(u8::try_from(next.rem_euclid(12) + 1).ok()?).ok()?;
            time::Date::from_calendar_date(year, month, 1)
                .ok()?
                .with_time(time::Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp()
        }
        _ => return None,
    };
    Some(Some(end))
}

/// The key of the window of `period` just before the one containing `now`; `None` for
/// lifetime.
pub fn previous_window_key(period: Period, now: OffsetDateTime) -> Option<String> {
    let current = period.window(now);
    current.end?;
    let before = OffsetDateTime::from_unix_timestamp(current.start - 1).ok()?;
    Some(period.window(before).key)
}

// ---------------------------------------------------------------------------------------
// Usage

/// One enabled window of a connection, for the usage view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWindow {
    pub period: Period,
    pub dimension: Option<Dimension>,
    pub window: Window,
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
}

/// What a ledger is asked for the usage view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRequest {
    pub connection_id: String,
    pub windows: Vec<UsageWindow>,
    /// How many source IPs to list per source-ip window (at most [`MAX_TOP_IPS`]).
    pub top_n: usize,
    pub now: OffsetDateTime,
}

impl UsageRequest {
    /// The enabled windows of `entries` at `now`.
    pub fn new(
        connection_id: &str,
        entries: &[CapacityEntry],
        top_n: usize,
        now: OffsetDateTime,
    ) -> Self {
        let mut windows: Vec<UsageWindow> = entries
            .iter()
            .filter(|e| e.enabled)
            .map(|e| UsageWindow {
                period: e.period,
                dimension: e.dimension,
                window: e.period.window(now),
                requests: e.requests,
                tokens: e.tokens,
            })
            .collect();
        windows.sort_by_key(|w| (w.dimension.is_some(), w.period));
        Self {
            connection_id: connection_id.to_owned(),
            windows,
            top_n: top_n.min(MAX_TOP_IPS),
            now,
        }
    }
}

/// Counters of one source IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpUsage {
    pub ip: String,
    pub used: Counters,
}

/// Usage of one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowUsage {
    pub window: UsageWindow,
    /// The connection's counters (connection-wide windows; zero for source-ip windows).
    pub used: Counters,
    /// Source-ip windows: the busiest IPs, at most `top_n` (see [`top_ips`]).
    pub top_ips: Vec<IpUsage>,
    /// Source-ip windows: how many IPs have a counter in this window.
    pub ip_count: u64,
}

/// What a ledger answers for the usage view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityUsage {
    pub connection_id: String,
    pub at: OffsetDateTime,
    pub windows: Vec<WindowUsage>,
}

/// The `n` busiest IPs of a window, the most used first: ordered by the larger of their
/// requests and tokens shares of the window's limits, then by IP.
pub fn top_ips(mut ips: Vec<IpUsage>, window: &UsageWindow, n: usize) -> Vec<IpUsage> {
    let share = |u: &IpUsage| -> u128 {
        let part = |used: u64, limit: Option<u64>| match limit {
            Some(l) if l > 0 => u128::from(used) * 1_000_000 / u128::from(l),
            _ => 0,
        };
        part(u.used.requests, window.requests).max(part(u.used.tokens, window.tokens))
    };
    ips.sort_by(|a, b| {
        share(b)
            .cmp(&share(a))
            .then(b.used.requests.cmp(&a.used.requests))
            .then(b.used.tokens.cmp(&a.used.tokens))
            .then(a.ip.cmp(&b.ip))
    });
    ips.truncate(n);
    ips
}

fn metric_view(limit: Option<u64>, used: u64) -> Value {
    match limit {
        Some(l) => json!({"limit": l, "used": used, "remaining": l.saturating_sub(used)}),
        None => json!({"limit": null, "used": used}),
    }
}

impl CapacityUsage {
    /// The body of `GET /v1/connections/{id}/capacity`:
    ///
    /// ```json
    /// {"connectionId": "...", "at": "2026-11-25T13:45:30Z", "windows": [
    ///   {"period": "minute", "scope": "connection",
    ///    "windowStart": "2026-11-25T13:45:00Z", "resetAt": "2026-11-25T13:46:00Z",
    ///    "resetInSecs": 30,
    ///    "requests": {"limit": 100, "used": 3, "remaining": 97},
    ///    "tokens": {"limit": null, "used": 1200}},
    ///   {"period": "hour", "scope": "source-ip", ..., "sourceIpCount": 2,
    ///    "topSourceIps": [{"ip": "203.0.113.7", "requests": {...}, "tokens": {...}}]}
    /// ]}
    /// ```
    ///
    /// `resetAt` and `resetInSecs` are null for lifetime windows.
    pub fn view(&self) -> Value {
        let windows: Vec<Value> = self
            .windows
            .iter()
            .map(|w| {
                let u = &w.window;
                let mut o = Map::new();
                o.insert("period".into(), json!(u.period.as_str()));
                o.insert(
                    "scope".into(),
                    json!(u.dimension.map_or("connection", Dimension::as_str)),
                );
                o.insert(
                    "windowStart".into(),
                    match u.window.end {
                        Some(_) => json!(unix_rfc3339(u.window.start)),
                        None => Value::Null,
                    },
                );
                o.insert("resetAt".into(), json!(u.window.end.map(unix_rfc3339)));
                o.insert(
                    "resetInSecs".into(),
                    json!(u.window.end.map(|e| secs_until(e, self.at))),
                );
                if u.dimension.is_none() {
                    o.insert("requests".into(), metric_view(u.requests, w.used.requests));
                    o.insert("tokens".into(), metric_view(u.tokens, w.used.tokens));
                } else {
                    o.insert(
                        "limits".into(),
                        json!({"requests": u.requests, "tokens": u.tokens}),
                    );
                    o.insert("sourceIpCount".into(), json!(w.ip_count));
                    let top: Vec<Value> = w
                        .top_ips
                        .iter()
                        .map(|ip| {
                            json!({
                                "ip": ip.ip,
                                "requests": metric_view(u.requests, ip.used.requests),
                                "tokens": metric_view(u.tokens, ip.used.tokens),
                            })
                        })
                        .collect();
                    o.insert("topSourceIps".into(), Value::Array(top));
                }
                Value::Object(o)
            })
            .collect();
        json!({
            "connectionId": self.connection_id,
            "at": rfc3339(self.at),
            "windows": windows,
        })
    }
}

fn unix_rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(rfc3339)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Prompt-token estimation

/// A fast estimate of the tokens of `text`: one token per 4 bytes, rounded up. Close for
/// English with BPE tokenizers; the reservation is reconciled to the real count after the
/// call, so the estimate only has to be cheap and not wildly low.
pub fn estimate_text_tokens(text: &str) -> u64 {
    u64::try_from(text.len()).unwrap_or(u64::MAX).div_ceil(4)
}

/// The estimate of a chat prompt given as the text of each message: the text tokens, plus
/// [`MESSAGE_OVERHEAD_TOKENS`] per message, plus [`REPLY_PRIMING_TOKENS`].
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages.into_iter().fold(REPLY_PRIMING_TOKENS, |acc, m| {
        acc.saturating_add(MESSAGE_OVERHEAD_TOKENS)
            .saturating_add(estimate_text_tokens(m))
    })
}

/// Fields of a request body that carry prompt content (OpenAI chat and responses,
/// Anthropic messages, Gemini).
const PROMPT_FIELDS: [&str; 9] = [
    "messages",
    "system",
    "tools",
    "functions",
    "input",
    "prompt",
    "instructions",
    "contents",
    "systemInstruction",
];

/// The estimate of a JSON request body: every string (and object key) under the prompt
/// fields, one token per 4 bytes; [`MESSAGE_OVERHEAD_TOKENS`] per element of `messages`
/// (or `contents`/`input` arrays); [`REPLY_PRIMING_TOKENS`] once. Images and other inline
/// attachments (data URLs, base64 sources, long base64 runs) count [`ATTACHMENT_TOKENS`]
/// each instead of their size.
pub fn estimate_request_tokens(body: &Value) -> u64 {
    let Value::Object(o) = body else {
        return REPLY_PRIMING_TOKENS;
    };
    let mut total = REPLY_PRIMING_TOKENS;
    for field in PROMPT_FIELDS {
        let Some(v) = o.get(field) else { continue };
        if let (Value::Array(items), "messages" | "contents" | "input") = (v, field) {
            total = total.saturating_add(
                MESSAGE_OVERHEAD_TOKENS.saturating_mul(u64::try_from(items.len()).unwrap_or(0)),
            );
        }
        total = total.saturating_add(value_tokens(v));
    }
    total
}

fn value_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => string_tokens(s),
        Value::Array(items) => items
            .iter()
            .fold(0u64, |acc, i| acc.saturating_add(value_tokens(i))),
        Value::Object(o) => {
            let base64_source = o.get("type").and_then(Value::as_str) == Some("base64");
            o.iter().fold(0u64, |acc, (k, v)| {
                let cost = if base64_source && k == "data" {
                    ATTACHMENT_TOKENS
                } else {
                    value_tokens(v)
                };
                acc.saturating_add(estimate_text_tokens(k))
                    .saturating_add(cost)
            })
        }
        Value::Number(_) | Value::Bool(_) => 1,
        Value::Null => 0,
    }
}

fn string_tokens(s: &str) -> u64 {
    let attachment = s.starts_with("data:")
        || (s.len() > 1024
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
    if attachment {
        ATTACHMENT_TOKENS
    } else {
        estimate_text_tokens(s)
    }
}

#[cfg(test)]
mod tests;
