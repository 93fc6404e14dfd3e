//! The [`CapacityLedger`] contract.
//!
//! Run every case with [`run_all`], giving it a factory of ledgers, or call the cases one by
//! one. Each case uses a connection id of its own, so a ledger shared with other data (or
//! other runs) is fine. Time is not read from a clock: every request carries its `now`, so
//! the cases roll windows over by passing a later `now`.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn capacity_conformance() {
//!     vmx_conformance::capacity::run_all(|| async { Arc::new(MyLedger::new()) as Ledger }).await;
//! }
//! ```

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;
use vmx_domain::admission::{
    Admission, AdmitRequest, Admitted, Counters, Metric, Rejection, RejectionKind, Scope,
    TokenEstimate, UsageRequest, plan,
};
use vmx_domain::capacity::{CapacityEntry, Dimension, Period};
use vmx_domain::ports::CapacityLedger;

pub type Ledger = Arc<dyn CapacityLedger>;

/// 2030-03-14 10:00:30 UTC, a Thursday: half a minute into a minute window.
pub const T0: OffsetDateTime = datetime!(2030-03-14 10:00:30 UTC);

/// Runs every case, each on a ledger fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Ledger>,
{
    concurrent_admissions_never_overshoot(make().await).await;
    concurrent_token_reservations_fill_the_limit_exactly(make().await).await;
    tokens_are_reconciled_to_true_totals(make().await).await;
    output_reservation_is_capped_for_small_limits(make().await).await;
    windows_roll_over(make().await).await;
    lifetime_never_resets(make().await).await;
    source_ips_have_separate_counters(make().await).await;
    disabled_entries_are_ignored(make().await).await;
    refund_on_failure(make().await).await;
    prompt_larger_than_limit_never_fits(make().await).await;
    all_or_nothing(make().await).await;
    unlimited_connection_is_admitted(make().await).await;
    sweep_removes_ended_windows_only(make().await).await;
}

/// A connection id no other case or run uses.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

pub fn entry(period: Period, requests: Option<u64>, tokens: Option<u64>) -> CapacityEntry {
    CapacityEntry {
        period,
        requests,
        tokens,
        enabled: true,
        dimension: None,
    }
}

pub fn per_ip(mut e: CapacityEntry) -> CapacityEntry {
    e.dimension = Some(Dimension::SourceIp);
    e
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// The admission of a request from `from` with `prompt` estimated tokens and at most
/// `max_output` output tokens; panics if it never fits.
pub fn request(
    id: &str,
    entries: &[CapacityEntry],
    from: &str,
    prompt: u64,
    max_output: u64,
    now: OffsetDateTime,
) -> AdmitRequest {
    plan(
        id,
        "conformance",
        entries,
        ip(from),
        TokenEstimate { prompt, max_output },
        now,
    )
    .unwrap_or_else(|r| panic!("plan rejected: {}", r.message()))
}

pub async fn admit(ledger: &Ledger, req: &AdmitRequest) -> Admission {
    ledger.admit(req).await.expect("admit")
}

pub async fn admitted(ledger: &Ledger, req: &AdmitRequest) -> Admitted {
    match admit(ledger, req).await {
        Admission::Admitted(a) => a,
        Admission::Rejected(r) => panic!("unexpected rejection: {}", r.message()),
    }
}

pub async fn rejected(ledger: &Ledger, req: &AdmitRequest) -> Rejection {
    match admit(ledger, req).await {
        Admission::Rejected(r) => r,
        Admission::Admitted(a) => panic!("unexpectedly admitted: {:?}", a.reservation),
    }
}

/// Counters of the connection-wide window of `period` at `now`.
pub async fn used(
    ledger: &Ledger,
    id: &str,
    entries: &[CapacityEntry],
    period: Period,
    now: OffsetDateTime,
) -> Counters {
    let usage = ledger
        .usage(&UsageRequest::new(id, entries, 10, now))
        .await
        .expect("usage");
    usage
        .windows
        .iter()
        .find(|w| w.window.period == period && w.window.dimension.is_none())
        .map(|w| w.used)
        .expect("window in usage")
}

/// 200 concurrent admissions against `requests: 50`: exactly 50 admitted, 150 rejected.
pub async fn concurrent_admissions_never_overshoot(ledger: Ledger) {
    let id = unique_id("concurrent");
    let entries = [entry(Period::Day, Some(50), Some(1_000_000))];
    let req = Arc::new(request(&id, &entries, "10.0.0.1", 10, 10, T0));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (ledger, req) = (ledger.clone(), req.clone());
            tokio::spawn(async move { ledger.admit(&req).await })
        })
        .collect();
    let (mut ok, mut no) = (0, 0);
    for t in tasks {
        match t.await.expect("task").expect("admit") {
            Admission::Admitted(_) => ok += 1,
            Admission::Rejected(r) => {
                assert_eq!(
                    (r.period, r.metric, r.limit, r.scope),
                    (Period::Day, Metric::Requests, 50, Scope::Connection)
                );
                no += 1;
            }
        }
    }
    assert_eq!((ok, no), (50, 150), "admitted, rejected");
    let u = used(&ledger, &id, &entries, Period::Day, T0).await;
    assert_eq!(
        u,
        Counters {
            requests: 50,
            tokens: 50 * 20
        }
    );

    // The same with a source-ip window next to the connection-wide one (one transaction
    // per admission on DynamoDB): 100 concurrent from one IP against 20 per IP.
    let id = unique_id("concurrent-ip");
    let entries = [
        entry(Period::Day, Some(1000), None),
        per_ip(entry(Period::Minute, Some(20), None)),
    ];
    let req = Arc::new(request(&id, &entries, "10.0.0.2", 1, 1, T0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (ledger, req) = (ledger.clone(), req.clone());
            tokio::spawn(async move { ledger.admit(&req).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task").expect("admit") {
            Admission::Admitted(_) => ok += 1,
            Admission::Rejected(r) => assert_eq!(r.scope, Scope::SourceIp(ip("10.0.0.2"))),
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(
        used(&ledger, &id, &entries, Period::Day, T0).await.requests,
        20
    );
}

/// Concurrent token reservations against `tokens: 1000`, each 50 prompt + up to 100
/// output: six get 150, the seventh gets the 100 left (its output capped at 50), the rest
/// are rejected; the counter ends exactly at the limit.
pub async fn concurrent_token_reservations_fill_the_limit_exactly(ledger: Ledger) {
    let id = unique_id("concurrent-tokens");
    let entries = [entry(Period::Minute, None, Some(1000))];
    let req = Arc::new(request(&id, &entries, "10.0.0.1", 50, 100, T0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (ledger, req) = (ledger.clone(), req.clone());
            tokio::spawn(async move { ledger.admit(&req).await })
        })
        .collect();
    let mut charged = Vec::new();
    for t in tasks {
        match t.await.expect("task").expect("admit") {
            Admission::Admitted(a) => charged.push(a.reservation.tokens()),
            Admission::Rejected(r) => assert_eq!(r.metric, Metric::Tokens),
        }
    }
    charged.sort_unstable();
    assert_eq!(charged, vec![100, 150, 150, 150, 150, 150, 150]);
    let u = used(&ledger, &id, &entries, Period::Minute, T0).await;
    assert_eq!(
        u,
        Counters {
            requests: 7,
            tokens: 1000
        }
    );
}

/// Token reservations are reconciled to the reported usage, so the counters equal the
/// true totals; a reconciliation past the limit blocks the next request.
pub async fn tokens_are_reconciled_to_true_totals(ledger: Ledger) {
    let id = unique_id("tokens");
    let entries = [entry(Period::Minute, None, Some(1000))];
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 100, 200, T0)).await;
    assert_eq!(a.reservation.tokens(), 300);
    assert_eq!(
        a.headroom(Metric::Tokens).map(|h| h.remaining),
        Some(700),
        "headers show the counters after the charge"
    );
    ledger
        .adjust(&a.reservation, a.reservation.reconcile(150), T0)
        .await
        .expect("reconcile");
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0)
            .await
            .tokens,
        150
    );

    // The output part is capped at what is left: 1000 - 150 - 100 = 750.
    let b = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 100, 4096, T0)).await;
    assert_eq!(b.reservation.tokens(), 850);
    assert_eq!(b.headroom(Metric::Tokens).map(|h| h.remaining), Some(0));
    // Full: not even a one-token prompt fits until the reservation is reconciled.
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.1", 1, 0, T0)).await;
    assert_eq!(
        (r.metric, r.limit, r.period),
        (Metric::Tokens, 1000, Period::Minute)
    );
    assert_eq!(r.retry_after_secs, Some(30));
    assert_eq!(r.kind, RejectionKind::Exhausted);
    ledger
        .adjust(&b.reservation, b.reservation.reconcile(200), T0)
        .await
        .expect("reconcile");
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0)
            .await
            .tokens,
        350
    );
    let c = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    // The provider used more than reserved: the counter follows the truth past the limit.
    ledger
        .adjust(&c.reservation, c.reservation.reconcile(900), T0)
        .await
        .expect("reconcile");
    let u = used(&ledger, &id, &entries, Period::Minute, T0).await;
    assert_eq!(
        u,
        Counters {
            requests: 3,
            tokens: 150 + 200 + 900
        }
    );
    rejected(&ledger, &request(&id, &entries, "10.0.0.1", 1, 0, T0)).await;
}

/// A token limit below the default output reservation does not lock the connection out.
pub async fn output_reservation_is_capped_for_small_limits(ledger: Ledger) {
    let id = unique_id("small");
    let entries = [entry(Period::Hour, Some(100), Some(500))];
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 50, 4096, T0)).await;
    assert_eq!(a.reservation.tokens(), 500, "capped at the limit");
    assert_eq!(
        (a.reservation.prompt_tokens, a.reservation.output_tokens),
        (50, 450)
    );
    ledger
        .adjust(&a.reservation, a.reservation.reconcile(80), T0)
        .await
        .expect("reconcile");
    let b = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 50, 4096, T0)).await;
    assert_eq!(b.reservation.tokens(), 420);
}

/// A new window starts from zero; an adjustment to an ended window is skipped.
pub async fn windows_roll_over(ledger: Ledger) {
    let id = unique_id("rollover");
    let entries = [entry(Period::Minute, Some(2), Some(100))];
    let first = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    assert_eq!((r.metric, r.limit), (Metric::Requests, 2));
    assert_eq!(r.retry_after_secs, Some(30));
    assert_eq!(
        r.message(),
        "connection 'conformance' reached its limit of 2 requests per minute"
    );
    let t1 = T0 + time::Duration::seconds(29);
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, t1)).await;
    assert_eq!(r.retry_after_secs, Some(1));

    let t2 = T0 + time::Duration::seconds(31);
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, t2)).await;
    assert_eq!(
        a.headroom(Metric::Requests).map(|h| h.remaining),
        Some(1),
        "fresh window"
    );
    // Refunding the first reservation (of the previous minute) leaves the new one alone.
    ledger
        .adjust(&first.reservation, first.reservation.refund(), t2)
        .await
        .expect("adjust");
    let u = used(&ledger, &id, &entries, Period::Minute, t2).await;
    assert_eq!(
        u,
        Counters {
            requests: 1,
            tokens: 20
        }
    );
    // Two minutes later (no traffic in between) the window is fresh too.
    let t3 = T0 + time::Duration::minutes(3);
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, t3)).await;
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, t3)).await;
    rejected(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, t3)).await;
}

/// A lifetime window never resets and has no Retry-After.
pub async fn lifetime_never_resets(ledger: Ledger) {
    let id = unique_id("lifetime");
    let entries = [
        entry(Period::Lifetime, Some(2), None),
        entry(Period::Minute, Some(100), None),
    ];
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    let h = a.headroom(Metric::Requests).expect("headroom");
    assert_eq!((h.limit, h.remaining, h.reset_secs), (2, 0, None));
    for later in [
        T0,
        T0 + time::Duration::days(40),
        T0 + time::Duration::days(800),
    ] {
        let r = rejected(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, later)).await;
        assert_eq!(
            (r.period, r.metric, r.limit),
            (Period::Lifetime, Metric::Requests, 2)
        );
        assert_eq!(r.retry_after_secs, None);
        assert!(
            r.message().contains("permanent until the limit is raised"),
            "{}",
            r.message()
        );
    }
    let later = T0 + time::Duration::days(800);
    assert_eq!(
        used(&ledger, &id, &entries, Period::Lifetime, later)
            .await
            .requests,
        2
    );
}

/// Two IPs have separate counters; the connection-wide window is still shared.
pub async fn source_ips_have_separate_counters(ledger: Ledger) {
    let id = unique_id("source-ip");
    let entries = [
        per_ip(entry(Period::Minute, Some(2), None)),
        entry(Period::Hour, Some(3), None),
    ];
    let (a, b) = ("203.0.113.7", "2001:db8::42");
    admitted(&ledger, &request(&id, &entries, a, 1, 1, T0)).await;
    let first = admitted(&ledger, &request(&id, &entries, a, 1, 1, T0)).await;
    let r = rejected(&ledger, &request(&id, &entries, a, 1, 1, T0)).await;
    assert_eq!(r.scope, Scope::SourceIp(ip(a)));
    assert_eq!(r.period, Period::Minute);
    assert!(
        r.message().ends_with("for source IP 203.0.113.7"),
        "{}",
        r.message()
    );
    // The IPv4-mapped form is the same client.
    let r = rejected(
        &ledger,
        &request(&id, &entries, "::ffff:203.0.113.7", 1, 1, T0),
    )
    .await;
    assert_eq!(r.scope, Scope::SourceIp(ip(a)));

    admitted(&ledger, &request(&id, &entries, b, 1, 1, T0)).await;
    // B has room of its own, but the connection-wide hour is full (3).
    let r = rejected(&ledger, &request(&id, &entries, b, 1, 1, T0)).await;
    assert_eq!(
        (r.scope, r.period, r.limit),
        (Scope::Connection, Period::Hour, 3)
    );

    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, T0))
        .await
        .expect("usage");
    let hour = usage
        .windows
        .iter()
        .find(|w| w.window.dimension.is_none())
        .expect("hour");
    assert_eq!(hour.used.requests, 3);
    let minute = usage
        .windows
        .iter()
        .find(|w| w.window.dimension.is_some())
        .expect("minute");
    assert_eq!(minute.ip_count, 2);
    let top: Vec<(&str, u64)> = minute
        .top_ips
        .iter()
        .map(|u| (u.ip.as_str(), u.used.requests))
        .collect();
    assert_eq!(
        top,
        vec![(a, 2), (b, 1)],
        "B's rejected request charged nothing"
    );
    let one = ledger
        .usage(&UsageRequest::new(&id, &entries, 1, T0))
        .await
        .expect("usage");
    assert_eq!(
        one.windows.iter().map(|w| w.top_ips.len()).sum::<usize>(),
        1,
        "top N"
    );

    // A refund gives the request back to every window it was charged to.
    ledger
        .adjust(&first.reservation, first.reservation.refund(), T0)
        .await
        .expect("refund");
    admitted(&ledger, &request(&id, &entries, a, 1, 1, T0)).await;
    let r = rejected(&ledger, &request(&id, &entries, b, 1, 1, T0)).await;
    assert_eq!(r.scope, Scope::Connection);
}

/// Disabled entries are not enforced; a connection whose entries are all disabled is
/// unlimited.
pub async fn disabled_entries_are_ignored(ledger: Ledger) {
    let id = unique_id("disabled");
    let mut off = entry(Period::Minute, Some(1), Some(1));
    off.enabled = false;
    let entries = [off.clone(), entry(Period::Day, Some(5), None)];
    for _ in 0..5 {
        admitted(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    }
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.1", 10, 10, T0)).await;
    assert_eq!(r.period, Period::Day);
    let only_off = [off];
    let req = request(&id, &only_off, "10.0.0.1", 10, 10, T0);
    assert!(req.is_unlimited());
    admitted(&ledger, &req).await;
}

/// A failed provider call gives the request and the tokens back.
pub async fn refund_on_failure(ledger: Ledger) {
    let id = unique_id("refund");
    let entries = [entry(Period::Minute, Some(1), Some(1000))];
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 100, 300, T0)).await;
    rejected(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    ledger
        .adjust(&a.reservation, a.reservation.failed(0), T0)
        .await
        .expect("refund");
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0).await,
        Counters::default()
    );
    let b = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 100, 300, T0)).await;
    // Failed part-way: the request stays counted, the tokens follow what was used.
    ledger
        .adjust(&b.reservation, b.reservation.failed(120), T0)
        .await
        .expect("partial");
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0).await,
        Counters {
            requests: 1,
            tokens: 120
        }
    );
}

/// A prompt larger than a tokens limit is rejected before the ledger, saying it can never
/// fit; a ledger handed such a request anyway rejects it and charges nothing.
pub async fn prompt_larger_than_limit_never_fits(ledger: Ledger) {
    let id = unique_id("never-fits");
    let entries = [entry(Period::Minute, Some(10), Some(1000))];
    let r = plan(
        &id,
        "prod-openai",
        &entries,
        ip("10.0.0.1"),
        TokenEstimate {
            prompt: 1001,
            max_output: 10,
        },
        T0,
    )
    .expect_err("never fits");
    assert_eq!(
        r.kind,
        RejectionKind::NeverFits {
            prompt_tokens: 1001
        }
    );
    assert_eq!(r.retry_after_secs, None);
    assert!(r.message().contains("can never fit"), "{}", r.message());

    let mut req = request(&id, &entries, "10.0.0.1", 10, 10, T0);
    req.estimate.prompt = 1001;
    let r = rejected(&ledger, &req).await;
    assert_eq!((r.metric, r.limit), (Metric::Tokens, 1000));
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0).await,
        Counters::default()
    );
}

/// A trip in one window charges none of the others.
pub async fn all_or_nothing(ledger: Ledger) {
    let id = unique_id("atomic");
    let entries = [
        entry(Period::Minute, Some(10), Some(10_000)),
        entry(Period::Hour, Some(3), None),
        entry(Period::Day, None, Some(100)),
        per_ip(entry(Period::Day, Some(10), Some(10_000))),
    ];
    for _ in 0..3 {
        admitted(&ledger, &request(&id, &entries, "10.0.0.9", 5, 5, T0)).await;
    }
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.9", 5, 5, T0)).await;
    assert_eq!((r.period, r.metric), (Period::Hour, Metric::Requests));
    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, T0))
        .await
        .expect("usage");
    for w in &usage.windows {
        let c = match w.window.dimension {
            None => w.used,
            Some(_) => w.top_ips.first().map(|u| u.used).unwrap_or_default(),
        };
        assert_eq!(
            c,
            Counters {
                requests: 3,
                tokens: 30
            },
            "{:?}",
            w.window.period
        );
    }
    // A token trip (day, 100) with room everywhere else charges nothing either.
    let id = unique_id("atomic-tokens");
    let entries = [
        entry(Period::Minute, Some(10), Some(10_000)),
        entry(Period::Day, None, Some(100)),
        per_ip(entry(Period::Day, Some(10), None)),
    ];
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.9", 60, 10, T0)).await;
    assert_eq!(a.reservation.tokens(), 70);
    let r = rejected(&ledger, &request(&id, &entries, "10.0.0.9", 60, 10, T0)).await;
    assert_eq!(
        (r.period, r.metric, r.limit),
        (Period::Day, Metric::Tokens, 100)
    );
    assert_eq!(
        used(&ledger, &id, &entries, Period::Minute, T0).await,
        Counters {
            requests: 1,
            tokens: 70
        }
    );
    let usage = ledger
        .usage(&UsageRequest::new(&id, &entries, 10, T0))
        .await
        .expect("usage");
    let ip_window = usage
        .windows
        .iter()
        .find(|w| w.window.dimension.is_some())
        .expect("ip window");
    assert_eq!(ip_window.top_ips.first().map(|u| u.used.requests), Some(1));
}

/// A connection without capacity entries is admitted, and nothing is counted.
pub async fn unlimited_connection_is_admitted(ledger: Ledger) {
    let id = unique_id("unlimited");
    let req = request(&id, &[], "10.0.0.1", 1_000_000, 1_000_000, T0);
    let a = admitted(&ledger, &req).await;
    assert!(a.reservation.windows.is_empty());
    assert!(a.rate_limit_headers().is_empty());
    ledger
        .adjust(&a.reservation, a.reservation.refund(), T0)
        .await
        .expect("no-op adjust");
    let usage = ledger
        .usage(&UsageRequest::new(&id, &[], 10, T0))
        .await
        .expect("usage");
    assert!(usage.windows.is_empty());
}

/// `sweep` removes the counters of ended windows of one connection (its IPs included), and
/// nothing live: not the lifetime counters, not the current window, not other connections.
pub async fn sweep_removes_ended_windows_only(ledger: Ledger) {
    let (a, b) = (unique_id("sweep-a"), unique_id("sweep-b"));
    let entries = [
        entry(Period::Minute, Some(10), Some(1000)),
        per_ip(entry(Period::Hour, Some(10), None)),
        entry(Period::Lifetime, Some(100), None),
    ];
    for id in [&a, &b] {
        admitted(&ledger, &request(id, &entries, "10.0.0.1", 5, 5, T0)).await;
        admitted(&ledger, &request(id, &entries, "2001:db8::7", 5, 5, T0)).await;
    }
    assert_eq!(
        ledger.sweep(&a, true, T0).await.expect("sweep"),
        0,
        "all live"
    );
    // Two minutes on: the minute (r, t) has ended; the hour and lifetime have not.
    let t1 = T0 + time::Duration::minutes(2);
    assert_eq!(ledger.sweep(&a, true, t1).await.expect("sweep"), 2);
    assert_eq!(
        ledger.sweep(&a, true, t1).await.expect("sweep"),
        0,
        "idempotent"
    );
    // Two hours on: each IP's hour counters (r, t) go too.
    let t2 = T0 + time::Duration::hours(2);
    assert_eq!(ledger.sweep(&a, true, t2).await.expect("sweep"), 4);
    assert_eq!(
        used(&ledger, &a, &entries, Period::Lifetime, t2)
            .await
            .requests,
        2
    );
    // The other connection's counters are untouched.
    assert_eq!(
        used(&ledger, &b, &entries, Period::Minute, T0)
            .await
            .requests,
        2
    );
    assert_eq!(
        used(&ledger, &b, &entries, Period::Lifetime, t2)
            .await
            .requests,
        2
    );
    // The swept connection still admits and counts from zero in new windows.
    let again = admitted(&ledger, &request(&a, &entries, "10.0.0.1", 5, 5, t2)).await;
    assert_eq!(again.windows[0].used.requests, 1);
    // Once the connection has no lifetime entry any more, its lifetime counters go too.
    let t3 = t2 + time::Duration::hours(2);
    assert_eq!(ledger.sweep(&a, false, t3).await.expect("sweep"), 6);
    assert_eq!(
        used(&ledger, &a, &entries, Period::Lifetime, t3)
            .await
            .requests,
        0
    );
    assert_eq!(
        used(&ledger, &b, &entries, Period::Lifetime, t3)
            .await
            .requests,
        2
    );
}
