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

impl UsageWindow {
    pub fn limit(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
        }
    }
}

/// What a ledger is asked for the usage view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRequest {
    pub connection_id: String,
    pub windows: Vec<UsageWindow>,
    /// How many source IPs to list per source-ip window (at most [`MAX_TOP_IPS`]).
    pub top_n: usize,
    pub now: OffsetDateTime,
    /// The prioritization pools, the default one last ([`Prioritization::shares`]); empty
    /// without pools. Connection-wide windows with a limit then show each pool's use.
    pub pools: Vec<PoolShare>,
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
            pools: Vec::new(),
        }
    }

    /// The same request, showing the use of each pool of `definition` in the windows pools
    /// apply to ([`Self::is_pooled`]).
    pub fn with_pools(mut self, definition: &Prioritization) -> Self {
        self.pools = definition.shares();
        self
    }

    /// Whether `w` is split by pool: pools are defined and `w` is a connection-wide window
    /// with a request or token limit.
    pub fn is_pooled(&self, w: &UsageWindow) -> bool {
        !self.pools.is_empty()
            && w.dimension.is_none()
            && (w.requests.is_some() || w.tokens.is_some())
    }

    /// The pools' use of window `w` (empty when it is not split by pool). `read(pool,
    /// window_key)` gives a pool's counters in a window, `None` when the pool has no request
    /// counter there; a pool is active when it has one in `w` or in the window before it
    /// (as admission sees it, see [`crate::prioritization`]).
    pub fn pool_usage(
        &self,
        w: &UsageWindow,
        mut read: impl FnMut(&str, &str) -> crate::Result<Option<Counters>>,
    ) -> crate::Result<Vec<PoolUsage>> {
        if !self.is_pooled(w) {
            return Ok(Vec::new());
        }
        let prev = previous_window_key(w.period, self.now);
        let mut out = Vec::with_capacity(self.pools.len());
        for share in &self.pools {
            let current = read(&share.name, &w.window.key)?;
            let active = current.is_some()
                || match &prev {
                    Some(prev) => read(&share.name, prev)?.is_some(),
                    None => false,
                };
            out.push(PoolUsage {
                share: share.clone(),
                used: current.unwrap_or_default(),
                active,
            });
        }
        Ok(out)
    }
}

/// One prioritization pool's use of a connection-wide window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub share: PoolShare,
    /// Its counters in the window.
    pub used: Counters,
    /// It has a counter in this window or in the previous one of the same period.
    pub active: bool,
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
    /// Connection-wide windows with pools ([`UsageRequest::pool_usage`]): each pool's use,
    /// in the order of [`UsageRequest::pools`]; empty otherwise.
    pub pools: Vec<PoolUsage>,
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

/// One metric of a pool in a window: its minimum and maximum in the window's units, its use,
/// its allocation (use plus what it may still add: the `poolAllocation` of a 429) and what it
/// may still add (`remaining`). Without a limit for the metric only `used` is known.
fn pool_metric_view(w: &WindowUsage, pool: &PoolUsage, metric: Metric) -> Value {
    let used = pool.used.get(metric);
    let Some(limit) = w.window.limit(metric) else {
        return json!({"min": null, "max": null, "used": used, "allocation": null, "remaining": null});
    };
    let shares: Vec<PoolShare> = w.pools.iter().map(|p| p.share.clone()).collect();
    let Some(admission) = PoolAdmission::among(&shares, &pool.share.name) else {
        return json!({"min": null, "max": null, "used": used, "allocation": null, "remaining": null});
    };
    let others = admission
        .others
        .iter()
        .map(|q| {
            w.pools
                .iter()
                .find(|p| p.share.name == q.name)
                .map(|p| OtherPool {
                    active: p.active,
                    used: p.used,
                })
                .unwrap_or_default()
        })
        .collect();
    let snapshot = PoolWindow {
        own: pool.used,
        others,
    };
    let room = admission.room(metric, limit, w.used.get(metric), &snapshot);
    json!({
        "min": PoolShare::share(pool.share.min, limit),
        "max": room.ceiling,
        "used": used,
        "allocation": room.allocation,
        "remaining": room.room,
    })
}

fn pool_view(w: &WindowUsage, pool: &PoolUsage) -> Value {
    let s = &pool.share;
    json!({
        "name": s.name,
        "rank": (s.name != DEFAULT_POOL).then_some(s.rank),
        "minReservation": s.min,
        "maxReservation": s.max,
        "active": pool.active,
        "requests": pool_metric_view(w, pool, Metric::Requests),
        "tokens": pool_metric_view(w, pool, Metric::Tokens),
    })
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
    ///    "tokens": {"limit": null, "used": 1200},
    ///    "pools": [{"name": "web", "rank": 1, "minReservation": 40, "maxReservation": 100,
    ///      "active": true,
    ///      "requests": {"min": 40, "max": 100, "used": 3, "allocation": 97, "remaining": 94},
    ///      "tokens": {"min": null, "max": null, "used": 1200, "allocation": null,
    ///                 "remaining": null}}, ...]},
    ///   {"period": "hour", "scope": "source-ip", ..., "sourceIpCount": 2,
    ///    "topSourceIps": [{"ip": "203.0.113.7", "requests": {...}, "tokens": {...}}]}
    /// ]}
    /// ```
    ///
    /// `resetAt` and `resetInSecs` are null for lifetime windows. `pools` is there for the
    /// connection-wide windows when prioritization pools are defined
    /// ([`UsageRequest::is_pooled`]), one entry per pool, `default` last (its `rank` is null:
    /// it ranks after every pool): `min` and `max` are its reservations in the window's units,
    /// `allocation` is what it has used plus what it may still add (the `poolAllocation` a
    /// 429 would report now), `remaining` what it may still add; all three null for a metric
    /// the window does not limit.
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
                    if !w.pools.is_empty() {
                        let pools = w.pools.iter().map(|p| pool_view(w, p)).collect();
                        o.insert("pools".into(), Value::Array(pools));
                    }
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
