//! The per-key capacity contract of a [`CapacityLedger`]: an API key's own windows
//! ([`Scope::ApiKey`], see [`vmx_domain::admission::plan_keyed`]) are charged in the same
//! admission as the connection's, all or nothing, per (key, connection), exactly under
//! concurrency, and reconciled with them.
//!
//! ```ignore
//! vmx_conformance::key_capacity::run_all(|| async { Arc::new(MyLedger::new()) as Ledger }).await;
//! ```
//!
//! [`CapacityLedger`]: vmx_domain::ports::CapacityLedger

use std::future::Future;

use time::OffsetDateTime;
use vmx_domain::admission::{
    Admission, AdmitRequest, Admitted, Counters, KeyCapacity, Metric, Scope, TokenEstimate,
    plan_keyed,
};
use vmx_domain::capacity::{CapacityEntry, Period};

use crate::capacity::{Ledger, T0, admitted, entry, ip, rejected, unique_id, used};

/// Runs every case, each on a ledger fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Ledger>,
{
    key_limit_refuses_while_the_connection_has_room(make().await).await;
    a_refused_key_consumes_nothing_of_the_connection(make().await).await;
    a_refused_connection_consumes_nothing_of_the_key(make().await).await;
    concurrent_callers_never_exceed_the_key_limit(make().await).await;
    reconciliation_adjusts_the_key_counters(make().await).await;
    the_key_limit_applies_per_connection(make().await).await;
}

/// The admission of a request by `key` (with its own `key_entries`) on the connection `id`
/// with `entries`.
pub fn keyed(
    id: &str,
    entries: &[CapacityEntry],
    key: &str,
    key_entries: &[CapacityEntry],
    prompt: u64,
    max_output: u64,
    now: OffsetDateTime,
) -> AdmitRequest {
    plan_keyed(
        id,
        "conformance",
        entries,
        ip("10.0.0.1"),
        Some(KeyCapacity {
            id: key,
            entries: key_entries,
        }),
        TokenEstimate { prompt, max_output },
        now,
    )
    .unwrap_or_else(|r| panic!("plan rejected: {}", r.message()))
}

/// The counters of the key's window of `period`, as an admission left them.
pub fn key_used(a: &Admitted, period: Period) -> Counters {
    a.windows
        .iter()
        .find(|w| w.window.scope == Scope::ApiKey && w.window.period == period)
        .map(|w| w.used)
        .expect("the key's window")
}

fn key_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A key limited to 3 requests a minute is refused at the 4th while the connection (100 a
/// minute) has room; the 429 names the key; other keys and the connection go on.
pub async fn key_limit_refuses_while_the_connection_has_room(ledger: Ledger) {
    let id = unique_id("key-refuses");
    let conn = [entry(Period::Minute, Some(100), Some(1_000_000))];
    let (a, b) = (key_id(), key_id());
    let own = [entry(Period::Minute, Some(3), None)];
    for n in 1..=3 {
        let adm = admitted(&ledger, &keyed(&id, &conn, &a, &own, 10, 0, T0)).await;
        assert_eq!(key_used(&adm, Period::Minute).requests, n);
        let h = adm.headroom(Metric::Requests).expect("requests headroom");
        assert_eq!(h.remaining, 3 - n, "the key's window is the tightest");
    }
    let r = rejected(&ledger, &keyed(&id, &conn, &a, &own, 10, 0, T0)).await;
    assert_eq!(r.scope, Scope::ApiKey);
    assert_eq!(r.metric, Metric::Requests);
    assert_eq!(r.limit, 3);
    assert_eq!(r.api_key_id.as_deref(), Some(a.as_str()));
    assert!(r.retry_after_secs.is_some_and(|s| s <= 30));
    let body = r.body();
    assert_eq!(body["error"]["limit"]["scope"], "apiKey", "{body}");
    assert_eq!(body["error"]["limit"]["apiKeyId"], a.as_str(), "{body}");
    // Another key with the same limit has its own counters.
    admitted(&ledger, &keyed(&id, &conn, &b, &own, 10, 0, T0)).await;
    // So do callers without a limit of their own.
    admitted(&ledger, &keyed(&id, &conn, &key_id(), &[], 10, 0, T0)).await;
    let c = used(&ledger, &id, &conn, Period::Minute, T0).await;
    assert_eq!(c.requests, 5, "the refused request charged nothing");
    // The next minute, the key is admitted again.
    admitted(
        &ledger,
        &keyed(&id, &conn, &a, &own, 10, 0, T0 + time::Duration::minutes(1)),
    )
    .await;
}

/// All or nothing, one way: a request the key's window refuses (requests, then tokens)
/// leaves the connection's counters as they were.
pub async fn a_refused_key_consumes_nothing_of_the_connection(ledger: Ledger) {
    let id = unique_id("key-aon");
    let conn = [
        entry(Period::Minute, Some(100), Some(100_000)),
        entry(Period::Day, Some(1000), None),
    ];
    let k = key_id();
    let own = [
        entry(Period::Minute, Some(2), None),
        entry(Period::Hour, None, Some(100)),
    ];
    let first = admitted(&ledger, &keyed(&id, &conn, &k, &own, 60, 0, T0)).await;
    assert_eq!(key_used(&first, Period::Hour).tokens, 60);
    let before = used(&ledger, &id, &conn, Period::Minute, T0).await;
    // 60 + 60 > 100 tokens in the key's hour.
    let r = rejected(&ledger, &keyed(&id, &conn, &k, &own, 60, 0, T0)).await;
    assert_eq!((r.scope, r.metric), (Scope::ApiKey, Metric::Tokens));
    assert_eq!(used(&ledger, &id, &conn, Period::Minute, T0).await, before);
    assert_eq!(used(&ledger, &id, &conn, Period::Day, T0).await.requests, 1);
    admitted(&ledger, &keyed(&id, &conn, &k, &own, 10, 0, T0)).await;
    let r = rejected(&ledger, &keyed(&id, &conn, &k, &own, 10, 0, T0)).await;
    assert_eq!((r.scope, r.metric), (Scope::ApiKey, Metric::Requests));
    let after = used(&ledger, &id, &conn, Period::Minute, T0).await;
    assert_eq!(
        after,
        Counters {
            requests: 2,
            tokens: 70
        }
    );
}

/// All or nothing, the other way: a request the connection refuses leaves the key's
/// counters as they were (seen by the next admission under a raised connection limit; the
/// limits are not part of the counters' names).
pub async fn a_refused_connection_consumes_nothing_of_the_key(ledger: Ledger) {
    let id = unique_id("conn-aon");
    let tight = [entry(Period::Minute, Some(2), Some(1000))];
    let k = key_id();
    let own = [entry(Period::Minute, Some(10), Some(10_000))];
    admitted(&ledger, &keyed(&id, &tight, &k, &own, 50, 0, T0)).await;
    admitted(&ledger, &keyed(&id, &tight, &key_id(), &[], 50, 0, T0)).await;
    let r = rejected(&ledger, &keyed(&id, &tight, &k, &own, 50, 0, T0)).await;
    assert_eq!(r.scope, Scope::Connection);
    assert!(r.api_key_id.is_none());
    assert_eq!(r.body()["error"]["limit"]["scope"], "connection");
    let raised = [entry(Period::Minute, Some(100), Some(100_000))];
    let a = admitted(&ledger, &keyed(&id, &raised, &k, &own, 50, 0, T0)).await;
    assert_eq!(
        key_used(&a, Period::Minute),
        Counters {
            requests: 2,
            tokens: 100
        },
        "the refused request charged nothing to the key"
    );
}

/// 60 concurrent requests of one key limited to 20 requests and 1,000 tokens a day, on a
/// connection with room for all: exactly 20 admitted, the tokens charged never above 1,000,
/// and the key's and the connection's counters equal the sums of the charges.
pub async fn concurrent_callers_never_exceed_the_key_limit(ledger: Ledger) {
    let id = unique_id("key-concurrent");
    let conn = [entry(Period::Day, Some(10_000), Some(10_000_000))];
    let k = key_id();
    let own = [entry(Period::Day, Some(20), Some(1_000))];
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let (ledger, req) = (ledger.clone(), keyed(&id, &conn, &k, &own, 30, 40, T0));
        tasks.push(tokio::spawn(async move { ledger.admit(&req).await }));
    }
    let (mut ok, mut charged) = (0u64, 0u64);
    for t in tasks {
        match t.await.expect("join").expect("admit") {
            Admission::Admitted(a) => {
                ok += 1;
                charged += a.reservation.tokens();
            }
            Admission::Rejected(r) => assert_eq!(r.scope, Scope::ApiKey, "{}", r.message()),
        }
    }
    assert!(ok <= 20, "{ok} admitted over a limit of 20");
    assert!(charged <= 1_000, "{charged} tokens charged over 1,000");
    // 20 requests of 30..70 tokens fit in 1,000 only if some outputs were capped: the
    // requests limit or the tokens limit is reached exactly.
    assert!(
        ok == 20 || charged > 1_000 - 30,
        "ok {ok}, charged {charged}"
    );
    let c = used(&ledger, &id, &conn, Period::Day, T0).await;
    assert_eq!(
        c,
        Counters {
            requests: ok,
            tokens: charged
        }
    );
    let probe = keyed(
        &id,
        &conn,
        &k,
        &[entry(Period::Day, Some(1000), None)],
        1,
        0,
        T0,
    );
    let a = admitted(&ledger, &probe).await;
    assert_eq!(
        key_used(&a, Period::Day),
        Counters {
            requests: ok + 1,
            tokens: charged + 1
        }
    );
}

/// After the call, the reservation is reconciled to the actual tokens on the key's windows
/// as on the connection's; a failed call is refunded from both.
pub async fn reconciliation_adjusts_the_key_counters(ledger: Ledger) {
    let id = unique_id("key-reconcile");
    let conn = [entry(Period::Minute, Some(100), Some(100_000))];
    let k = key_id();
    let own = [entry(Period::Minute, Some(10), Some(1_000))];
    let a = admitted(&ledger, &keyed(&id, &conn, &k, &own, 100, 400, T0)).await;
    assert_eq!(key_used(&a, Period::Minute).tokens, 500);
    ledger
        .adjust(&a.reservation, a.reservation.reconcile(130), T0)
        .await
        .expect("reconcile");
    let b = admitted(&ledger, &keyed(&id, &conn, &k, &own, 10, 0, T0)).await;
    assert_eq!(
        key_used(&b, Period::Minute),
        Counters {
            requests: 2,
            tokens: 140
        }
    );
    ledger
        .adjust(&b.reservation, b.reservation.failed(0), T0)
        .await
        .expect("refund");
    assert_eq!(
        used(&ledger, &id, &conn, Period::Minute, T0).await,
        Counters {
            requests: 1,
            tokens: 130
        }
    );
    // What the reconciliation gave back is admitted again: 130 + 870 = 1,000.
    let c = admitted(&ledger, &keyed(&id, &conn, &k, &own, 870, 0, T0)).await;
    assert_eq!(key_used(&c, Period::Minute).tokens, 1_000);
    let r = rejected(&ledger, &keyed(&id, &conn, &k, &own, 1, 0, T0)).await;
    assert_eq!((r.scope, r.metric), (Scope::ApiKey, Metric::Tokens));
}

/// A key's capacity applies per connection it uses: full on one connection, it is still
/// admitted on another.
pub async fn the_key_limit_applies_per_connection(ledger: Ledger) {
    let (x, y) = (unique_id("key-conn-x"), unique_id("key-conn-y"));
    let conn = [entry(Period::Minute, Some(100), None)];
    let k = key_id();
    let own = [entry(Period::Lifetime, Some(1), None)];
    admitted(&ledger, &keyed(&x, &conn, &k, &own, 1, 0, T0)).await;
    let r = rejected(&ledger, &keyed(&x, &conn, &k, &own, 1, 0, T0)).await;
    assert_eq!((r.scope, r.period), (Scope::ApiKey, Period::Lifetime));
    assert!(r.retry_after_secs.is_none(), "a lifetime cap has no reset");
    admitted(&ledger, &keyed(&y, &conn, &k, &own, 1, 0, T0)).await;
}
