//! The update and condition expressions of an admission: which item holds which windows,
//! the counter attribute names, and the one `UpdateItem` expression per item.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use vmx_domain::admission::{
    AdmitRequest, Counters, Metric, PlannedWindow, Scope, previous_window_key, window_key_end,
};
use vmx_domain::prioritization::{OtherBound, OtherPool, PoolWindow, pool_counter_stale};

use super::{DynamoLedger, Item, TTL_GRACE_SECS};
use crate::table::{CAP_SK, TTL_ATTRIBUTE, ip_sk};

/// One item of an admission and the windows (indices into the request) it holds.
pub(super) struct ItemPlan {
    pub(super) sk: String,
    pub(super) windows: Vec<usize>,
}

impl DynamoLedger {
    /// The update of one item for a charge of one request and `charge` tokens. `None` when
    /// a tokens limit is below the charge (no counter state can admit it).
    ///
    /// With pools, the connection item's update also charges the caller's pool counters,
    /// and its conditions are the pool bounds of `pools` (the snapshot the charge was
    /// decided on, see [`vmx_domain::prioritization::PoolBounds`]): the total at most `limit - held_back - charge`, the
    /// pool's own counter at most `ceiling - charge`, every pool seen idle still without a
    /// counter, every pool seen active at least what the snapshot relied on.
    pub(super) fn update(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plan: &ItemPlan,
        charge: u64,
        pools: &[PoolWindow],
    ) -> Option<UpdateSpec> {
        let mut spec = UpdateSpec::new(&plan.sk);
        let mut add = Vec::new();
        let mut conditions = Vec::new();
        let mut current = BTreeSet::new();
        let mut lifetime = false;
        let mut latest_end = i64::MIN;
        spec.value(":one", AttributeValue::N("1".to_owned()));
        spec.value(":c", AttributeValue::N(charge.to_string()));
        for (n, &i) in plan.windows.iter().enumerate() {
            let w = request.windows.get(i)?;
            let (r, t) = (
                counter_name('r', &w.window.key),
                counter_name('t', &w.window.key),
            );
            spec.name(&format!("#r{n}"), &r);
            spec.name(&format!("#t{n}"), &t);
            add.push(format!("#r{n} :one, #t{n} :c"));
            let pool = match (&request.pools, w.scope) {
                (Some(p), Scope::Connection) => Some(p),
                _ => None,
            };
            let idle = PoolWindow::default();
            let snapshot = pools.get(i).unwrap_or(&idle);
            let mut held = [0u64; 2];
            if let Some(p) = pool {
                for (x, metric, limit, chg) in [
                    ('r', Metric::Requests, w.requests, 1),
                    ('t', Metric::Tokens, w.tokens, charge),
                ] {
                    let own = format!("#p{x}{n}");
                    spec.name(&own, &pool_counter_name(x, &w.window.key, &p.pool.name));
                    let Some(limit) = limit else { continue };
                    let b = p.bounds(metric, limit, snapshot);
                    held[usize::from(x == 't')] = b.held_back;
                    let mut own_max = b.ceiling.checked_sub(chg)?;
                    if let Some(m) = b.own_at_most {
                        own_max = own_max.min(m);
                    }
                    spec.value(&format!(":p{x}{n}"), number(own_max));
                    conditions.push(format!(
                        "(attribute_not_exists({own}) OR {own} <= :p{x}{n})"
                    ));
                    for (k, (q, bound)) in p.others.iter().zip(&b.others).enumerate() {
                        let name = format!("#o{x}{n}_{k}");
                        match bound {
                            // Checked once per window, on the requests counter.
                            OtherBound::Idle => {}
                            OtherBound::AtLeast(0) => {}
                            OtherBound::AtLeast(v) => {
                                spec.name(&name, &pool_counter_name(x, &w.window.key, &q.name));
                                spec.value(&format!(":o{x}{n}_{k}"), number(*v));
                                conditions.push(format!("{name} >= :o{x}{n}_{k}"));
                            }
                        }
                    }
                }
                add.push(format!("#pr{n} :one, #pt{n} :c"));
                let seen_idle = p
                    .others
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| snapshot.others.get(*k).is_none_or(|o| !o.active));
                for (k, q) in seen_idle {
                    let name = format!("#i{n}_{k}");
                    spec.name(&name, &pool_counter_name('r', &w.window.key, &q.name));
                    conditions.push(format!("attribute_not_exists({name})"));
                }
            }
            if let Some(limit) = w.requests {
                let max_before = limit.checked_sub(1)?.checked_sub(held[0])?;
                spec.value(&format!(":r{n}"), number(max_before));
                conditions.push(format!("(attribute_not_exists(#r{n}) OR #r{n} <= :r{n})"));
            }
            if let Some(limit) = w.tokens {
                let max_before = limit.checked_sub(charge)?.checked_sub(held[1])?;
                spec.value(&format!(":t{n}"), number(max_before));
                conditions.push(format!("(attribute_not_exists(#t{n}) OR #t{n} <= :t{n})"));
            }
            current.insert(r);
            current.insert(t);
            match w.window.end {
                None => lifetime = true,
                Some(end) => latest_end = latest_end.max(end),
            }
        }
        let mut remove: BTreeSet<String> = self.take_stale(pk, &plan.sk);
        for &i in &plan.windows {
            let Some(w) = request.windows.get(i) else {
                continue;
            };
            if let Some(prev) = w.previous_key(request.now) {
                remove.insert(counter_name('r', &prev));
                remove.insert(counter_name('t', &prev));
            }
        }
        spec.name("#exp", TTL_ATTRIBUTE);
        let mut expr = format!("ADD {}", add.join(", "));
        let mut placeholders = Vec::new();
        if lifetime {
            placeholders.push("#exp".to_owned());
        } else {
            spec.value(":exp", number_i(latest_end.saturating_add(TTL_GRACE_SECS)));
            expr.push_str(" SET #exp = :exp");
        }
        for (n, name) in remove.difference(&current).enumerate() {
            let p = format!("#s{n}");
            spec.name(&p, name);
            placeholders.push(p);
        }
        if !placeholders.is_empty() {
            expr.push_str(" REMOVE ");
            expr.push_str(&placeholders.join(", "));
        }
        spec.expression = expr;
        spec.condition = (!conditions.is_empty()).then(|| conditions.join(" AND "));
        Some(spec)
    }
}

/// An update expression with its names and values.
pub(super) struct UpdateSpec {
    pub(super) sk: String,
    pub(super) expression: String,
    pub(super) condition: Option<String>,
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

impl UpdateSpec {
    pub(super) fn new(sk: &str) -> Self {
        Self {
            sk: sk.to_owned(),
            expression: String::new(),
            condition: None,
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }

    pub(super) fn name(&mut self, placeholder: &str, name: &str) {
        self.names.insert(placeholder.to_owned(), name.to_owned());
    }

    pub(super) fn value(&mut self, placeholder: &str, value: AttributeValue) {
        self.values.insert(placeholder.to_owned(), value);
    }
}

fn number(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn number_i(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn counter_name(metric: char, window_key: &str) -> String {
    format!("{metric}_{window_key}")
}

/// A pool's counter on the connection item: `r_<windowKey>@<pool>` or `t_...`.
pub(super) fn pool_counter_name(metric: char, window_key: &str, pool: &str) -> String {
    format!("{metric}_{window_key}@{pool}")
}

/// `r_<key>` or `t_<key>` of a window that ended at or before `now`; a pool counter
/// (`r_<key>@<pool>`) once the window after its own ended (see
/// [`vmx_domain::prioritization`]: it says whether the pool was active in the previous
/// window).
pub(super) fn is_stale_counter(name: &str, now: i64) -> bool {
    let Some(key) = name.strip_prefix("r_").or_else(|| name.strip_prefix("t_")) else {
        return false;
    };
    if let Some((key, _pool)) = key.split_once('@') {
        return pool_counter_stale(key, now);
    }
    matches!(window_key_end(key), Some(Some(end)) if end <= now)
}

/// The pool counters of `request`'s connection-wide windows on the connection `item`
/// (`pools[i]` for `windows[i]`); empty without pools.
pub(super) fn pool_windows_of(request: &AdmitRequest, item: &Item) -> Vec<PoolWindow> {
    let Some(p) = &request.pools else {
        return Vec::new();
    };
    let get = |key: &str, pool: &str| Counters {
        requests: read_u64(item, &pool_counter_name('r', key, pool)),
        tokens: read_u64(item, &pool_counter_name('t', key, pool)),
    };
    request
        .windows
        .iter()
        .map(|w| {
            if w.scope != Scope::Connection {
                return PoolWindow::default();
            }
            let key = &w.window.key;
            let prev = previous_window_key(w.period, request.now);
            let others = p
                .others
                .iter()
                .map(|q| {
                    let has = |k: &str| item.contains_key(&pool_counter_name('r', k, &q.name));
                    OtherPool {
                        active: has(key) || prev.as_deref().is_some_and(has),
                        used: get(key, &q.name),
                    }
                })
                .collect();
            PoolWindow {
                own: get(key, &p.pool.name),
                others,
            }
        })
        .collect()
}

/// The attribute of the connection item holding the connection's configuration version
/// ([`vmx_domain::ports::CapacityLedger::bump_config_version`]).
pub const ATTR_CONFIG_VERSION: &str = "cv";

/// The configuration version a connection item holds (0 when it has none).
pub(super) fn config_version_of(item: &Item) -> u64 {
    read_u64(item, ATTR_CONFIG_VERSION)
}

pub(super) fn read_u64(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<i128>()
            .map(|v| u64::try_from(v.max(0)).unwrap_or(u64::MAX))
            .unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn counters_of(item: &Item, window_key: &str) -> Counters {
    Counters {
        requests: read_u64(item, &counter_name('r', window_key)),
        tokens: read_u64(item, &counter_name('t', window_key)),
    }
}

pub(super) fn sk_of(scope: Scope) -> String {
    match scope {
        // An API key's counters live on the connection item, next to the pools' (their
        // window key names the key, `<windowKey>~<keyId>`): one conditional write still
        // covers every window of the common case.
        Scope::Connection | Scope::ApiKey => CAP_SK.to_owned(),
        Scope::SourceIp(ip) => ip_sk(ip),
    }
}

/// The items of an admission, connection-wide first.
pub(super) fn item_plans(windows: &[PlannedWindow]) -> Vec<ItemPlan> {
    let mut plans: Vec<ItemPlan> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let sk = sk_of(w.scope);
        match plans.iter_mut().find(|p| p.sk == sk) {
            Some(p) => p.windows.push(i),
            None => plans.push(ItemPlan {
                sk,
                windows: vec![i],
            }),
        }
    }
    plans.sort_by_key(|p| p.sk != CAP_SK);
    plans
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use time::macros::datetime;
    use vmx_domain::admission::{TokenEstimate, plan};
    use vmx_domain::capacity::Dimension;
    use vmx_domain::capacity::{CapacityEntry, Period};

    fn entry(period: Period, requests: Option<u64>, tokens: Option<u64>) -> CapacityEntry {
        CapacityEntry {
            period,
            requests,
            tokens,
            enabled: true,
            dimension: None,
        }
    }

    #[test]
    fn one_update_holds_every_connection_window() {
        let now = datetime!(2026-11-25 13:45:30 UTC);
        let mut ip_entry = entry(Period::Hour, Some(10), None);
        ip_entry.dimension = Some(Dimension::SourceIp);
        let entries = [
            entry(Period::Minute, Some(100), Some(1000)),
            entry(Period::Day, Some(5000), None),
            ip_entry,
        ];
        let ip = "203.0.113.7".parse().expect("ip");
        let req = plan(
            "c1",
            "n",
            &entries,
            ip,
            TokenEstimate {
                prompt: 10,
                max_output: 20,
            },
            now,
        )
        .expect("plan");
        let plans = item_plans(&req.windows);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].sk, "CAP");
        assert_eq!(plans[0].windows, vec![0, 1]);
        assert_eq!(plans[1].sk, "IP#203.0.113.7");
        let client = Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let ledger = DynamoLedger::new(client, "t");
        let spec = ledger
            .update(&req, "CAP#c1", &plans[0], 30, &[])
            .expect("spec");
        assert_eq!(
            spec.expression,
            "ADD #r0 :one, #t0 :c, #r1 :one, #t1 :c SET #exp = :exp REMOVE #s0, #s1, #s2, #s3"
        );
        assert_eq!(
            spec.condition.as_deref(),
            Some(
                "(attribute_not_exists(#r0) OR #r0 <= :r0) AND (attribute_not_exists(#t0) OR #t0 <= :t0) \
                 AND (attribute_not_exists(#r1) OR #r1 <= :r1)"
            )
        );
        let minute = Period::Minute.window(now);
        assert_eq!(spec.names.get("#r0"), Some(&format!("r_{}", minute.key)));
        assert_eq!(spec.values.get(":t0"), Some(&number(970)));
        assert_eq!(spec.values.get(":r1"), Some(&number(4999)));
        let day_end = Period::Day.window(now).end.expect("end");
        assert_eq!(
            spec.values.get(":exp"),
            Some(&number_i(day_end + TTL_GRACE_SECS))
        );
        let prev = previous_window_key(Period::Minute, now).expect("prev");
        assert!(spec.names.values().any(|n| *n == format!("t_{prev}")));
        // A charge above a tokens limit can never be admitted.
        assert!(
            ledger
                .update(&req, "CAP#c1", &plans[0], 1001, &[])
                .is_none()
        );
    }

    #[test]
    fn stale_counter_names() {
        assert!(is_stale_counter("r_m0", 60));
        assert!(is_stale_counter("t_m0", 60));
        assert!(!is_stale_counter("t_m1", 60));
        assert!(
            is_stale_counter("r_m0~0190-key", 60),
            "an API key's counter"
        );
        assert!(!is_stale_counter("t_m1~0190-key", 60));
        assert!(!is_stale_counter("r_L~0190-key", i64::MAX));
        assert!(!is_stale_counter("r_L", i64::MAX));
        assert!(!is_stale_counter("expiresAt", i64::MAX));
        assert!(!is_stale_counter("pk", i64::MAX));
    }
}
