//! Prioritization pools: who shares a connection's capacity, and how.
//!
//! # The definition
//!
//! One definition for the whole deployment (`PUT /v1/prioritization`): pools with a `name`,
//! a `rank` (lower is more important), the ids of the API keys they hold, and
//! `minReservation` / `maxReservation`, percentages (0-100) of each connection-wide request
//! and token limit. The minimums add up to at most 100, a key is in at most one pool, names
//! and ranks are unique. Keys in no pool (and the local admin token) form the pool
//! [`DEFAULT_POOL`]: minimum 0, maximum 100, ranked after every defined pool.
//!
//! # Semantics, per connection-wide window with limit `L` (requests and tokens alike)
//!
//! Pool `p` with counters `used_p` may add `c` iff
//! - `total + c <= L` (the connection's limit, as without pools);
//! - `used_p + c <= floor(max_p * L / 100)` (the pool's ceiling);
//! - `total + c <= L - sum over other ACTIVE pools q of max(0, floor(min_q * L / 100) - used_q)`
//!   (the unused minimums of active pools are protected);
//! - for requests only, when capacity is tight: `total + 1 <= L - 1 - reserved` unless `p` is
//!   still below its own minimum or no active pool of lower rank than `p` is below its own
//!   maximum (the last request of the shared headroom goes to the lowest-rank active pool
//!   that can still use it; this is what "lower rank wins ties" means here).
//!
//! A pool is *active* in a window when it has a counter in that window or in the previous
//! window of the same period. An idle pool's minimum is lent entirely: a pool alone on a
//! connection reaches its maximum (work-conserving). The bound: a pool that returns after a
//! full idle window finds at most `L - total` free, i.e. in the window in which it returns
//! others may already have used all of its minimum (at most `floor(min * L / 100)` of it
//! lent away, never more, since lending only ever uses capacity that was free); from its
//! first admission on (it is active from then on, in this window and the next one), its
//! unused minimum is protected again.
//!
//! Source-ip windows are not split by pool.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::{Counters, Metric};
use crate::json::{Obj, type_name};
use crate::{Error, Result};

/// The pool of keys in no defined pool.
pub const DEFAULT_POOL: &str = "default";
/// Most pools in one definition (each is a few counters on every connection's counter item).
pub const MAX_POOLS: usize = 10;
/// Longest pool name.
pub const MAX_POOL_NAME_LEN: usize = 32;
/// Most API keys one definition holds.
pub const MAX_POOL_KEYS: usize = 1000;

/// One pool of the definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool {
    pub name: String,
    pub rank: u32,
    pub api_keys: Vec<String>,
    pub min_reservation: u8,
    pub max_reservation: u8,
}

/// The whole definition, as stored and as `GET /v1/prioritization` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Prioritization {
    pub pools: Vec<Pool>,
}

/// A pool name: 1 to [`MAX_POOL_NAME_LEN`] characters of `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit (it is part of counter names).
pub fn valid_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_POOL_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn percent(o: &Obj<'_>, key: &str) -> Result<u8> {
    match o.get(key) {
        None => Err(Error::invalid(o.path(key), "is required")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= 100 => Ok(u8::try_from(v).unwrap_or(100)),
            _ => Err(Error::invalid(
                o.path(key),
                "must be an integer percentage from 0 to 100",
            )),
        },
        Some(other) => Err(Error::invalid(
            o.path(key),
            format!(
                "must be an integer percentage from 0 to 100, got {}",
                type_name(other)
            ),
        )),
    }
}

impl Prioritization {
    /// Validates a `PUT /v1/prioritization` body. `key_exists` says whether an API key id
    /// is known. Every error names the field at fault (`pools[1].apiKeys[0]`).
    pub fn parse(body: &Value, key_exists: impl Fn(&str) -> bool) -> Result<Self> {
        let o = Obj::new(body, "")?;
        o.deny_unknown(&["pools"])?;
        let list = o
            .array_opt("pools")?
            .ok_or_else(|| Error::invalid("pools", "is required"))?;
        if list.len() > MAX_POOLS {
            return Err(Error::invalid(
                "pools",
                format!("at most {MAX_POOLS} pools are allowed"),
            ));
        }
        let mut pools = Vec::with_capacity(list.len());
        let mut names = BTreeSet::new();
        let mut ranks = BTreeSet::new();
        let mut owner: BTreeMap<String, usize> = BTreeMap::new();
        let mut min_sum = 0u32;
        for (i, v) in list.iter().enumerate() {
            let p = Obj::new(v, &format!("pools[{i}]"))?;
            p.deny_unknown(&[
                "name",
                "rank",
                "apiKeys",
                "minReservation",
                "maxReservation",
            ])?;
            let name = p.str_req("name")?;
            if !valid_pool_name(name) {
                return Err(Error::invalid(
                    p.path("name"),
                    format!(
                        "must be 1 to {MAX_POOL_NAME_LEN} characters of a-z, 0-9, '-' and '_', \
                         starting with a letter or digit"
                    ),
                ));
            }
            if name == DEFAULT_POOL {
                return Err(Error::invalid(
                    p.path("name"),
                    "'default' is reserved for the keys in no pool",
                ));
            }
            if !names.insert(name) {
                return Err(Error::invalid(
                    p.path("name"),
                    format!("duplicate pool name '{name}'"),
                ));
            }
            let rank = match p.get("rank") {
                None => return Err(Error::invalid(p.path("rank"), "is required")),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|r| *r < u32::MAX)
                    .ok_or_else(|| {
                        Error::invalid(p.path("rank"), "must be a non-negative integer")
                    })?,
                Some(other) => {
                    return Err(Error::invalid(
                        p.path("rank"),
                        format!("must be a non-negative integer, got {}", type_name(other)),
                    ));
                }
            };
            if !ranks.insert(rank) {
                return Err(Error::invalid(
                    p.path("rank"),
                    format!("duplicate rank {rank}: every pool needs its own rank"),
                ));
            }
            let min = percent(&p, "minReservation")?;
            let max = percent(&p, "maxReservation")?;
            if max < min {
                return Err(Error::invalid(
                    p.path("maxReservation"),
                    format!("must be at least minReservation ({min})"),
                ));
            }
            if max == 0 {
                return Err(Error::invalid(
                    p.path("maxReservation"),
                    "must be greater than 0 (a pool with no capacity admits nothing)",
                ));
            }
            min_sum += u32::from(min);
            if min_sum > 100 {
                return Err(Error::invalid(
                    p.path("minReservation"),
                    format!("the minimums add up to {min_sum}; their sum must be at most 100"),
                ));
            }
            let keys = p
                .array_opt("apiKeys")?
                .ok_or_else(|| Error::invalid(p.path("apiKeys"), "is required"))?;
            let mut api_keys = Vec::with_capacity(keys.len());
            for (k, key) in keys.iter().enumerate() {
                let path = format!("pools[{i}].apiKeys[{k}]");
                let Value::String(id) = key else {
                    return Err(Error::invalid(
                        path,
                        format!("must be an API key id, got {}", type_name(key)),
                    ));
                };
                if let Some(other) = owner.get(id.as_str()) {
                    return Err(Error::invalid(
                        path,
                        format!(
                            "API key '{id}' is already in pools[{other}]; a key is in at most one pool"
                        ),
                    ));
                }
                if owner.len() >= MAX_POOL_KEYS {
                    return Err(Error::invalid(
                        path,
                        format!("at most {MAX_POOL_KEYS} API keys can be placed in pools"),
                    ));
                }
                if !key_exists(id) {
                    return Err(Error::invalid(path, format!("unknown API key id '{id}'")));
                }
                owner.insert(id.clone(), i);
                api_keys.push(id.clone());
            }
            pools.push(Pool {
                name: name.to_owned(),
                rank,
                api_keys,
                min_reservation: min,
                max_reservation: max,
            });
        }
        Ok(Self { pools })
    }

    /// Every API key id the definition holds.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.pools
            .iter()
            .flat_map(|p| p.api_keys.iter().map(String::as_str))
    }

    /// The pools admission works with, the default one last; empty when no pool is
    /// defined (then admission is exactly what it is without pools). The usage view lists
    /// them per window ([`crate::admission::UsageRequest::with_pools`]).
    pub fn shares(&self) -> Vec<PoolShare> {
        if self.pools.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<PoolShare> = self
            .pools
            .iter()
            .map(|p| PoolShare {
                name: p.name.clone(),
                rank: p.rank,
                min: p.min_reservation,
                max: p.max_reservation,
            })
            .collect();
        out.push(PoolShare::default_pool());
        out
    }

    /// What admission needs for a caller with API key `key_id` (`None`: the admin token):
    /// its pool and the other pools that can constrain it. `None` without pools.
    pub fn admission(&self, key_id: Option<&str>) -> Option<PoolAdmission> {
        if self.pools.is_empty() {
            return None;
        }
        let mine = key_id
            .and_then(|id| {
                self.pools
                    .iter()
                    .find(|p| p.api_keys.iter().any(|k| k == id))
            })
            .map_or(DEFAULT_POOL, |p| p.name.as_str());
        PoolAdmission::among(&self.shares(), mine)
    }
}

/// Where the definition lives: one record per deployment. Every API key store is one (the
/// definition is a partition of the keys), see [`crate::api_key::ApiKeyStore`].
#[async_trait]
pub trait PrioritizationStore: Send + Sync {
    /// The stored definition; empty (no pools) when none was ever stored.
    async fn prioritization(&self) -> Result<Prioritization>;
    /// Replaces the definition as a whole.
    async fn put_prioritization(&self, definition: &Prioritization) -> Result<()>;
}

/// One pool as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolShare {
    pub name: String,
    pub rank: u32,
    /// Percent of a limit protected while the pool is active.
    pub min: u8,
    /// Percent of a limit the pool never exceeds.
    pub max: u8,
}

impl PoolShare {
    pub fn default_pool() -> Self {
        Self {
            name: DEFAULT_POOL.to_owned(),
            rank: u32::MAX,
            min: 0,
            max: 100,
        }
    }

    /// `floor(percent * limit / 100)`.
    pub fn share(percent: u8, limit: u64) -> u64 {
        u64::try_from(u128::from(limit) * u128::from(percent) / 100).unwrap_or(u64::MAX)
    }
}

/// The caller's pool and the other pools that can constrain it (those with a minimum, and
/// those of lower rank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAdmission {
    pub pool: PoolShare,
    pub others: Vec<PoolShare>,
}

/// Another pool's state in one window, as the snapshot saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OtherPool {
    /// It has a counter in this window or in the previous one of the same period.
    pub active: bool,
    pub used: Counters,
}

/// The pool counters of one connection-wide window: the caller's pool's, and
/// `others[k]` for [`PoolAdmission::others`]`[k]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolWindow {
    pub own: Counters,
    pub others: Vec<OtherPool>,
}

/// How a pool's room in one window and metric was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRoom {
    /// What the pool may still add.
    pub room: u64,
    /// The pool's ceiling (`floor(max * L / 100)`).
    pub ceiling: u64,
    /// What other active pools' unused minimums hold back (plus the rank guard).
    pub held_back: u64,
    /// The pool's current allocation: what it has used plus what it may still add.
    pub allocation: u64,
}

impl PoolRoom {
    /// The room of a window not split by pool.
    pub fn unsplit(limit: u64, total: u64) -> Self {
        Self {
            room: limit.saturating_sub(total),
            ceiling: limit,
            held_back: 0,
            allocation: limit,
        }
    }
}

/// What a pool's room in one window and metric rests on, for a ledger that decides on a
/// snapshot and writes with conditions (DynamoDB): the room holds as long as the live
/// counters still meet these bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolBounds {
    /// The pool's ceiling: its own counter must stay at most `ceiling - charge`.
    pub ceiling: u64,
    /// Held back from the shared headroom: the total must stay at most
    /// `limit - held_back - charge`.
    pub held_back: u64,
    /// When the rank guard was waived because the pool is below its own minimum: its own
    /// counter must still be at most this before the charge.
    pub own_at_most: Option<u64>,
    /// Per [`PoolAdmission::others`]: what its live counter must still satisfy.
    pub others: Vec<OtherBound>,
}

/// A condition on another pool's live counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherBound {
    /// Seen idle: it must still have no counter in the window.
    Idle,
    /// Seen active: its counter must be at least this (0: no condition). Counters only
    /// grow, except by refunds, which a stale snapshot must not miss.
    AtLeast(u64),
}

impl PoolAdmission {
    /// What admission needs for pool `name` among `shares` ([`Prioritization::shares`]):
    /// the pool, and the other pools that can constrain it. `None` when it is not there.
    pub fn among(shares: &[PoolShare], name: &str) -> Option<Self> {
        let pool = shares.iter().find(|s| s.name == name)?.clone();
        let others = shares
            .iter()
            .filter(|s| s.name != pool.name && (s.min > 0 || s.rank < pool.rank))
            .cloned()
            .collect();
        Some(Self { pool, others })
    }

    /// The bounds of the pool's room under `limit` for `metric` (see [`PoolBounds`]).
    pub fn bounds(&self, metric: Metric, limit: u64, w: &PoolWindow) -> PoolBounds {
        let own = w.own.get(metric);
        let ceiling = PoolShare::share(self.pool.max, limit);
        let mut held_back = 0u64;
        let mut guard_for: Vec<usize> = Vec::new();
        let mut others = Vec::with_capacity(self.others.len());
        let idle = OtherPool::default();
        for (k, share) in self.others.iter().enumerate() {
            let state = w.others.get(k).unwrap_or(&idle);
            if !state.active {
                others.push(OtherBound::Idle);
                continue;
            }
            let used = state.used.get(metric);
            let min = PoolShare::share(share.min, limit);
            held_back = held_back.saturating_add(min.saturating_sub(used));
            let mut at_least = used.min(min);
            if metric == Metric::Requests && share.rank < self.pool.rank {
                let max = PoolShare::share(share.max, limit);
                if used < max {
                    guard_for.push(k);
                } else {
                    // At its maximum it cannot use the last request: no guard for it, as
                    // long as it stays there.
                    at_least = at_least.max(max);
                }
            }
            others.push(OtherBound::AtLeast(at_least));
        }
        let own_min = PoolShare::share(self.pool.min, limit);
        let mut own_at_most = None;
        if !guard_for.is_empty() {
            if own < own_min {
                own_at_most = Some(own_min - 1);
            } else {
                held_back = held_back.saturating_add(1);
            }
        }
        PoolBounds {
            ceiling,
            held_back,
            own_at_most,
            others,
        }
    }

    /// The pool's room under `limit` for `metric`, given the window's `total`.
    pub fn room(&self, metric: Metric, limit: u64, total: u64, w: &PoolWindow) -> PoolRoom {
        let own = w.own.get(metric);
        let b = self.bounds(metric, limit, w);
        let room = limit
            .saturating_sub(total)
            .min(b.ceiling.saturating_sub(own))
            .min(limit.saturating_sub(b.held_back).saturating_sub(total));
        PoolRoom {
            room,
            ceiling: b.ceiling,
            held_back: b.held_back,
            allocation: own.saturating_add(room).min(b.ceiling),
        }
    }
}

/// The key of the window after the one named `key` ([`crate::capacity::Window::key`]);
/// `None` for lifetime or a key that is not a window key.
pub fn next_window_key(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let tag = chars.next()?;
    if !matches!(tag, 'm' | 'h' | 'd' | 'w' | 'M') {
        return None;
    }
    let idx: i64 = chars.as_str().parse().ok()?;
    Some(format!("{tag}{}", idx.checked_add(1)?))
}

/// Whether a pool counter of window `key` is no longer needed at `now`: pool counters are
/// kept through the next window (they say whether the pool was active in the previous
/// window), and removed after it.
pub fn pool_counter_stale(key: &str, now: i64) -> bool {
    next_window_key(key)
        .and_then(|next| crate::admission::window_key_end(&next))
        .is_some_and(|end| end.is_some_and(|end| end <= now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(r: Result<Prioritization>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => format!("unexpected: {other:?}"),
        }
    }

    fn pool(name: &str, rank: u32, keys: &[&str], min: u8, max: u8) -> Value {
        json!({"name": name, "rank": rank, "apiKeys": keys, "minReservation": min, "maxReservation": max})
    }

    #[test]
    fn parse_names_the_field() {
        let known = |id: &str| id.starts_with('k');
        let ok = json!({"pools": [pool("web", 1, &["k1"], 30, 100), pool("batch", 2, &["k2", "k3"], 10, 50)]});
        let p = Prioritization::parse(&ok, known).expect("valid");
        assert_eq!(p.pools.len(), 2);
        assert_eq!(p.key_ids().count(), 3);
        let cases = [
            (json!({}), "pools"),
            (
                json!({"pools": [pool("web", 1, &["k1"], 60, 100), pool("b", 2, &[], 50, 50)]}),
                "pools[1].minReservation",
            ),
            (
                json!({"pools": [pool("web", 1, &["k1"], 0, 100), pool("b", 2, &["k1"], 0, 50)]}),
                "pools[1].apiKeys[0]",
            ),
            (
                json!({"pools": [pool("web", 1, &["x1"], 0, 100)]}),
                "pools[0].apiKeys[0]",
            ),
            (
                json!({"pools": [pool("web", 1, &[], 0, 100), pool("web", 2, &[], 0, 50)]}),
                "pools[1].name",
            ),
            (
                json!({"pools": [pool("web", 1, &[], 0, 100), pool("b", 1, &[], 0, 50)]}),
                "pools[1].rank",
            ),
            (
                json!({"pools": [pool("web", 1, &[], 0, 101)]}),
                "pools[0].maxReservation",
            ),
            (
                json!({"pools": [pool("web", 1, &[], 50, 40)]}),
                "pools[0].maxReservation",
            ),
            (
                json!({"pools": [pool("Web!", 1, &[], 0, 40)]}),
                "pools[0].name",
            ),
            (
                json!({"pools": [pool("default", 1, &[], 0, 40)]}),
                "pools[0].name",
            ),
            (
                json!({"pools": [{"name": "a", "rank": 1, "apiKeys": [], "minReservation": 0, "maxReservation": 9, "x": 1}]}),
                "pools[0].x",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(field(Prioritization::parse(&body, known)), want, "{body}");
        }
    }

    fn share(name: &str, rank: u32, min: u8, max: u8) -> PoolShare {
        PoolShare {
            name: name.to_owned(),
            rank,
            min,
            max,
        }
    }

    #[test]
    fn pool_counters_live_one_window_longer() {
        assert_eq!(next_window_key("m5").as_deref(), Some("m6"));
        assert_eq!(next_window_key("L"), None);
        // m0 ends at 60, m1 at 120: kept until 120.
        assert!(!pool_counter_stale("m0", 119));
        assert!(pool_counter_stale("m0", 120));
        assert!(!pool_counter_stale("L", i64::MAX));
    }

    #[test]
    fn room_protects_active_minimums_and_lends_idle_ones() {
        let adm = PoolAdmission {
            pool: share("batch", 2, 0, 80),
            others: vec![share("web", 1, 40, 100)],
        };
        let idle = PoolWindow {
            own: Counters::default(),
            others: vec![OtherPool::default()],
        };
        // Web idle: batch may take its maximum.
        assert_eq!(adm.room(Metric::Tokens, 100, 0, &idle).room, 80);
        // Web active with 10 used: 30 of its minimum is held back.
        let active = PoolWindow {
            own: Counters {
                requests: 50,
                tokens: 50,
            },
            others: vec![OtherPool {
                active: true,
                used: Counters {
                    requests: 10,
                    tokens: 10,
                },
            }],
        };
        let r = adm.room(Metric::Tokens, 100, 60, &active);
        assert_eq!((r.room, r.held_back, r.allocation), (10, 30, 60));
        // Requests: one more is held back for the better-ranked active pool.
        assert_eq!(adm.room(Metric::Requests, 100, 60, &active).room, 9);
    }
}
