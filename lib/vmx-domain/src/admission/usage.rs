//! The usage view: what a ledger is asked and answers, and its JSON.

use super::windows::secs_until;
use super::*;

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
