//! The prioritization pool contract of a [`CapacityLedger`] (see
//! [`vmx_domain::prioritization`]): ceilings, protected minimums of active pools, lending of
//! idle ones, rank on ties, and exact totals under concurrency.
//!
//! ```ignore
//! vmx_conformance::pools::run_all(|| async { Arc::new(MyLedger::new()) as Ledger }).await;
//! ```

use std::future::Future;

use serde_json::json;
use time::Duration;
use vmx_domain::admission::{Admission, AdmitRequest, Counters, Metric, UsageRequest};
use vmx_domain::capacity::{CapacityEntry, Period};
use vmx_domain::prioritization::Prioritization;

use crate::capacity::{Ledger, T0, admitted, entry, rejected, request, unique_id, used};

/// Runs every case, each on a ledger fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Ledger>,
{
    ceiling_is_exact(make().await).await;
    idle_minimum_is_lent(make().await).await;
    active_minimum_is_protected(make().await).await;
    returning_pool_bound(make().await).await;
    lower_rank_wins_the_last_request(make().await).await;
    concurrent_callers_over_three_pools(make().await).await;
    usage_shows_each_pool(make().await).await;
}

/// A definition from `(name, rank, key, min, max)`: one key per pool.
pub fn definition(pools: &[(&str, u32, &str, u8, u8)]) -> Prioritization {
    let body = json!({"pools": pools.iter().map(|(name, rank, key, min, max)| json!({
        "name": name, "rank": rank, "apiKeys": [key],
        "minReservation": min, "maxReservation": max,
    })).collect::<Vec<_>>()});
    Prioritization::parse(&body, |_| true).expect("valid definition")
}

/// A request of `tokens` prompt tokens (no output) by `key` under `def`.
pub fn pooled(
    id: &str,
    entries: &[CapacityEntry],
    def: &Prioritization,
    key: &str,
    tokens: u64,
    now: time::OffsetDateTime,
) -> AdmitRequest {
    request(id, entries, "10.0.0.1", tokens, 0, now).with_pools(def.admission(Some(key)))
}

/// Admits `key`'s requests until one is rejected (at most `max`); returns how many.
async fn fill(ledger: &Ledger, req: &AdmitRequest, max: u64) -> u64 {
    for n in 0..max {
        if let Admission::Rejected(_) = ledger.admit(req).await.expect("admit") {
            return n;
        }
    }
    max
}

/// A pool never exceeds its maximum, and the 429 names it with its allocation.
pub async fn ceiling_is_exact(ledger: Ledger) {
    let id = unique_id("pool-ceiling");
    let entries = [entry(Period::Minute, Some(10), Some(1000))];
    let def = definition(&[("batch", 1, "kb", 0, 30), ("web", 2, "kw", 0, 100)]);
    // Tokens: 30% of 1000 is 300.
    let big = pooled(&id, &entries, &def, "kb", 301, T0);
    let r = rejected(&ledger, &big).await;
    assert_eq!(r.metric, Metric::Tokens);
    assert_eq!(r.pool.map(|p| p.allocation), Some(300));
    let batch = pooled(&id, &entries, &def, "kb", 10, T0);
    assert_eq!(fill(&ledger, &batch, 20).await, 3, "30% of 10 requests");
    let r = rejected(&ledger, &batch).await;
    let pool = r.pool.clone().expect("the rejection names the pool");
    assert_eq!((pool.name.as_str(), pool.allocation), ("batch", 3));
    assert_eq!(r.metric, Metric::Requests);
    assert!(r.message().contains("pool 'batch'"), "{}", r.message());
    assert_eq!(r.body()["error"]["limit"]["pool"], "batch");
    // Another pool still has the rest (the better-ranked pool is at its maximum: no
    // request is held back for it).
    let web = pooled(&id, &entries, &def, "kw", 10, T0);
    assert_eq!(fill(&ledger, &web, 20).await, 7);
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0)
            .await
            .requests,
        10
    );
}

/// With the other pools idle, a pool reaches its maximum (work-conserving).
pub async fn idle_minimum_is_lent(ledger: Ledger) {
    let id = unique_id("pool-lend");
    let entries = [entry(Period::Minute, Some(10), None)];
    let def = definition(&[("web", 1, "kw", 60, 100), ("batch", 2, "kb", 0, 100)]);
    let batch = pooled(&id, &entries, &def, "kb", 1, T0);
    assert_eq!(
        fill(&ledger, &batch, 20).await,
        10,
        "web's idle minimum is lent"
    );
}

/// While a pool is active, a flood of another cannot take its unused minimum.
pub async fn active_minimum_is_protected(ledger: Ledger) {
    let id = unique_id("pool-protect");
    let entries = [entry(Period::Minute, Some(100), Some(10_000))];
    let def = definition(&[("web", 1, "kw", 40, 100), ("batch", 2, "kb", 0, 100)]);
    let web = pooled(&id, &entries, &def, "kw", 10, T0);
    admitted(&ledger, &web).await;
    let batch = pooled(&id, &entries, &def, "kb", 10, T0);
    // 100 - (40 - 1) held for web - 1 (web ranks lower) - 1 used by web = 59.
    assert_eq!(fill(&ledger, &batch, 200).await, 59);
    // Web still gets its whole minimum, and the rest.
    assert_eq!(fill(&ledger, &web, 200).await, 40);
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0)
            .await
            .requests,
        100
    );
    // Active in the previous window is active: in the next minute web is protected from
    // its first request on.
    let t1 = T0 + Duration::minutes(1);
    let batch = pooled(&id, &entries, &def, "kb", 10, t1);
    assert_eq!(
        fill(&ledger, &batch, 200).await,
        59,
        "40 held back + 1 for rank"
    );
}

/// The bound of lending: a pool that returns after a whole idle window can find its
/// minimum lent away in that window (its first request is rejected and marks it active);
/// from the next window on, its minimum is protected again.
pub async fn returning_pool_bound(ledger: Ledger) {
    let id = unique_id("pool-return");
    let entries = [entry(Period::Minute, Some(10), None)];
    let def = definition(&[("web", 1, "kw", 50, 100), ("batch", 2, "kb", 0, 100)]);
    let batch = pooled(&id, &entries, &def, "kb", 1, T0);
    assert_eq!(fill(&ledger, &batch, 20).await, 10);
    let web = pooled(&id, &entries, &def, "kw", 1, T0);
    let r = rejected(&ledger, &web).await;
    assert_eq!(r.pool.map(|p| p.name).as_deref(), Some("web"));
    let t1 = T0 + Duration::minutes(1);
    let batch = pooled(&id, &entries, &def, "kb", 1, t1);
    assert_eq!(
        fill(&ledger, &batch, 20).await,
        4,
        "5 held for web, 1 for its rank"
    );
    let web = pooled(&id, &entries, &def, "kw", 1, t1);
    assert_eq!(fill(&ledger, &web, 20).await, 6);
}

/// When only one request of shared headroom is left, it goes to the lower rank.
pub async fn lower_rank_wins_the_last_request(ledger: Ledger) {
    let id = unique_id("pool-rank");
    let entries = [entry(Period::Minute, Some(10), None)];
    let def = definition(&[("gold", 1, "kg", 0, 100), ("silver", 2, "ks", 0, 100)]);
    let gold = pooled(&id, &entries, &def, "kg", 1, T0);
    admitted(&ledger, &gold).await;
    let silver = pooled(&id, &entries, &def, "ks", 1, T0);
    assert_eq!(fill(&ledger, &silver, 20).await, 8);
    assert_eq!(fill(&ledger, &gold, 20).await, 1);
}

/// 200 concurrent callers over three pools: the connection's limit and every pool's
/// maximum hold exactly, every pool gets at least its minimum, counters equal what was
/// admitted.
pub async fn concurrent_callers_over_three_pools(ledger: Ledger) {
    let id = unique_id("pool-200");
    let entries = [entry(Period::Minute, Some(100), Some(100_000))];
    let def = definition(&[
        ("web", 1, "kw", 30, 60),
        ("api", 2, "ka", 20, 50),
        ("batch", 3, "kb", 0, 40),
    ]);
    // Every pool in use before the flood.
    for key in ["kw", "ka", "kb"] {
        admitted(&ledger, &pooled(&id, &entries, &def, key, 7, T0)).await;
    }
    let mut tasks = Vec::new();
    for n in 0..200 {
        let key = ["kw", "ka", "kb"][n % 3];
        let req = pooled(&id, &entries, &def, key, 7, T0);
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            (key, ledger.admit(&req).await.expect("admit"))
        }));
    }
    let mut per_pool = std::collections::BTreeMap::from([("ka", 1u64), ("kb", 1), ("kw", 1)]);
    for t in tasks {
        let (key, outcome) = t.await.expect("task");
        if let Admission::Admitted(_) = outcome {
            *per_pool.entry(key).or_default() += 1;
        }
    }
    let total: u64 = per_pool.values().sum();
    assert!(total <= 100, "limit held: {per_pool:?}");
    assert!(per_pool["kw"] <= 60 && per_pool["ka"] <= 50 && per_pool["kb"] <= 40);
    assert!(per_pool["kw"] >= 30 && per_pool["ka"] >= 20, "{per_pool:?}");
    let c = used(&ledger, &id, &entries, Period::Minute, T0).await;
    assert_eq!((c.requests, c.tokens), (total, total * 7), "{per_pool:?}");
}

/// The usage view reads each pool's counters where admission keeps them: its use in the
/// window, whether it is active (a counter in this window or the previous one), and its
/// allocation, the same as its 429 reports.
pub async fn usage_shows_each_pool(ledger: Ledger) {
    let id = unique_id("pool-usage");
    let entries = [
        entry(Period::Minute, Some(10), Some(1000)),
        crate::capacity::per_ip(entry(Period::Minute, Some(100), None)),
    ];
    let def = definition(&[("web", 1, "kw", 40, 100), ("batch", 2, "kb", 0, 30)]);
    admitted(&ledger, &pooled(&id, &entries, &def, "kw", 10, T0)).await;
    let batch = pooled(&id, &entries, &def, "kb", 20, T0);
    assert_eq!(fill(&ledger, &batch, 20).await, 3, "30% of 10 requests");
    let refused = rejected(&ledger, &batch).await;
    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, T0).with_pools(&def))
        .await
        .expect("usage");
    let window = usage
        .windows
        .iter()
        .find(|w| w.window.dimension.is_none())
        .expect("the connection-wide window");
    assert_eq!((window.used.requests, window.used.tokens), (4, 70));
    let seen: Vec<(&str, Counters, bool)> = window
        .pools
        .iter()
        .map(|p| (p.share.name.as_str(), p.used, p.active))
        .collect();
    let c = |requests, tokens| Counters { requests, tokens };
    assert_eq!(
        seen,
        [
            ("web", c(1, 10), true),
            ("batch", c(3, 60), true),
            ("default", c(0, 0), false)
        ]
    );
    let ip_window = usage
        .windows
        .iter()
        .find(|w| w.window.dimension.is_some())
        .expect("the source-ip window");
    assert!(
        ip_window.pools.is_empty(),
        "source-ip windows are not split"
    );
    let view = usage.view();
    let pools = &view["windows"][0]["pools"];
    assert_eq!(
        pools[1]["requests"]["allocation"],
        json!(
            refused
                .pool
                .map(|p| p.allocation)
                .expect("the 429 names the pool")
        ),
        "{view}"
    );
    assert_eq!(
        pools[1]["requests"],
        json!({"min": 0, "max": 3, "used": 3, "allocation": 3, "remaining": 0})
    );
    // web: 10 - 4 used, under its own maximum of 10.
    assert_eq!(
        pools[0]["requests"],
        json!({"min": 4, "max": 10, "used": 1, "allocation": 7, "remaining": 6})
    );
    assert_eq!(
        pools[0]["tokens"],
        json!({"min": 400, "max": 1000, "used": 10, "allocation": 940, "remaining": 930})
    );
    // The next minute: both are still active (a counter in the previous window), with
    // nothing used yet.
    let t1 = T0 + Duration::minutes(1);
    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, t1).with_pools(&def))
        .await
        .expect("usage");
    let seen: Vec<(&str, Counters, bool)> = usage.windows[0]
        .pools
        .iter()
        .map(|p| (p.share.name.as_str(), p.used, p.active))
        .collect();
    assert_eq!(
        seen,
        [
            ("web", c(0, 0), true),
            ("batch", c(0, 0), true),
            ("default", c(0, 0), false)
        ]
    );
    // Without a definition, no pool is listed.
    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, T0))
        .await
        .expect("usage");
    assert!(usage.windows.iter().all(|w| w.pools.is_empty()));
}
