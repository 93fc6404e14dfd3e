//! The [`UsageStore`] contract.
//!
//! Run every case with [`run_all`]. Each case uses connection ids of its own, so the cases
//! also pass on one shared store. Times are recent hours (well inside any retention).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use vmx_domain::Error;
use vmx_domain::usage::{
    ErrorClass, Granularity, UsageBucket, UsageCounters, UsageEvent, UsageGroup, UsageStore,
    roll_up,
};

pub type Usage = Arc<dyn UsageStore>;

/// Runs every case, each on a store fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Usage>,
{
    hourly_buckets_per_model(make().await).await;
    days_roll_up_hours(make().await).await;
    range_returns_overlapping_buckets(make().await).await;
    maxima_and_ttft(make().await).await;
    connections_are_isolated(make().await).await;
    odd_model_ids_round_trip(make().await).await;
    invalid_events_are_refused(make().await).await;
    concurrent_records_are_exact(make().await).await;
    usage_is_kept_per_api_key(make().await).await;
}

/// A fresh connection id.
pub fn conn_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The start of the hour `hours_ago` hours before the current one.
pub fn hour_ago(hours_ago: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let start = now - now.rem_euclid(3600) - hours_ago * 3600;
    OffsetDateTime::from_unix_timestamp(start).expect("valid time")
}

/// An event with every field set from `n`.
pub fn event(conn: &str, model: &str, at: OffsetDateTime, n: u64) -> UsageEvent {
    UsageEvent {
        connection_id: conn.to_owned(),
        model: model.to_owned(),
        at,
        error: None,
        prompt_tokens: 100 + n,
        completion_tokens: 10 + n,
        cached_tokens: n,
        latency_ms: 1000 + n,
        ttft_ms: Some(100 + n),
        api_key_id: None,
    }
}

/// What `events` should add up to, per hour and model, at `granularity`.
pub fn expected(events: &[UsageEvent], granularity: Granularity) -> Vec<UsageBucket> {
    let mut hours: BTreeMap<(i64, String), UsageCounters> = BTreeMap::new();
    for e in events {
        hours
            .entry((e.hour(), e.model.clone()))
            .or_default()
            .add_event(e);
    }
    let hourly = hours
        .into_iter()
        .map(|((h, m), c)| UsageBucket::hourly(h, m, c))
        .collect();
    roll_up(hourly, granularity)
}

async fn record_all(store: &Usage, events: &[UsageEvent]) {
    for e in events {
        store.record(e).await.expect("record");
    }
}

async fn query(
    store: &Usage,
    conn: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    g: Granularity,
) -> Vec<UsageBucket> {
    store.query(conn, from, to, g).await.expect("query")
}

pub async fn hourly_buckets_per_model(store: Usage) {
    let conn = conn_id();
    let h0 = hour_ago(5);
    let mut events = vec![
        event(&conn, "gpt-4o", h0, 1),
        event(&conn, "gpt-4o", h0 + Duration::minutes(59), 2),
        event(&conn, "claude", h0 + Duration::minutes(10), 3),
        event(&conn, "gpt-4o", h0 + Duration::hours(1), 4),
        event(
            &conn,
            "gpt-4o",
            h0 + Duration::hours(3) + Duration::seconds(1),
            5,
        ),
    ];
    let mut failed = event(&conn, "gpt-4o", h0 + Duration::minutes(30), 6);
    failed.error = Some(ErrorClass::RateLimited);
    failed.completion_tokens = 0;
    failed.ttft_ms = None;
    events.push(failed.clone());
    failed.error = Some(ErrorClass::Upstream);
    events.push(failed.clone());
    failed.error = Some(ErrorClass::RateLimited);
    events.push(failed);
    record_all(&store, &events).await;

    let got = query(
        &store,
        &conn,
        h0,
        h0 + Duration::hours(4),
        Granularity::Hour,
    )
    .await;
    assert_eq!(got, expected(&events, Granularity::Hour));
    let first = got
        .iter()
        .find(|b| b.start == h0 && b.model == "gpt-4o")
        .expect("first bucket");
    assert_eq!(first.counters.requests, 5);
    assert_eq!(
        first.counters.errors,
        BTreeMap::from([(ErrorClass::RateLimited, 2), (ErrorClass::Upstream, 1)])
    );
    assert_eq!(first.counters.ttft_count, 2);
    assert_eq!(got.len(), 4, "empty hours have no bucket");
    assert!(
        got.windows(2)
            .all(|w| (w[0].start, &w[0].model) < (w[1].start, &w[1].model)),
        "sorted by start, then model"
    );
}

pub async fn days_roll_up_hours(store: Usage) {
    let conn = conn_id();
    // Three consecutive UTC days, whatever the hour now.
    let today = hour_ago(0).unix_timestamp();
    let day0 = OffsetDateTime::from_unix_timestamp(today - today.rem_euclid(86_400) - 2 * 86_400)
        .expect("time");
    let mut events = Vec::new();
    for (i, offset) in [1i64, 5, 23, 24, 30, 47, 48].into_iter().enumerate() {
        let at = day0 + Duration::hours(offset) + Duration::minutes(7);
        let model = if i % 2 == 0 { "m-a" } else { "m-b" };
        let mut e = event(&conn, model, at, i as u64 * 10);
        if i == 3 {
            e.error = Some(ErrorClass::Timeout);
        }
        events.push(e);
    }
    record_all(&store, &events).await;
    let got = query(
        &store,
        &conn,
        day0,
        day0 + Duration::days(3),
        Granularity::Day,
    )
    .await;
    assert_eq!(got, expected(&events, Granularity::Day));
    assert_eq!(got.len(), 5, "day 0: a and b, day 1: a and b, day 2: a");
    assert!(got.iter().all(|b| b.start.unix_timestamp() % 86_400 == 0));
    let total: u64 = got.iter().map(|b| b.counters.requests).sum();
    assert_eq!(total, events.len() as u64);

    // A day query widens a partial range to whole days.
    let partial = query(
        &store,
        &conn,
        day0 + Duration::hours(12),
        day0 + Duration::hours(25),
        Granularity::Day,
    )
    .await;
    let days: Vec<UsageBucket> = expected(&events, Granularity::Day)
        .into_iter()
        .filter(|b| b.start < day0 + Duration::days(2))
        .collect();
    assert_eq!(partial, days);
}

pub async fn range_returns_overlapping_buckets(store: Usage) {
    let conn = conn_id();
    let h0 = hour_ago(10);
    let events: Vec<UsageEvent> = (0..6)
        .map(|i| event(&conn, "m", h0 + Duration::hours(i), i as u64))
        .collect();
    record_all(&store, &events).await;
    let hours = |b: &[UsageBucket]| -> Vec<i64> {
        b.iter()
            .map(|x| (x.start - h0).whole_hours())
            .collect::<Vec<_>>()
    };
    // [h1:30, h3:00) overlaps hours 1 and 2; [h1, h3:00:01) overlaps 1, 2 and 3.
    let got = query(
        &store,
        &conn,
        h0 + Duration::minutes(90),
        h0 + Duration::hours(3),
        Granularity::Hour,
    )
    .await;
    assert_eq!(hours(&got), vec![1, 2]);
    let got = query(
        &store,
        &conn,
        h0 + Duration::hours(1),
        h0 + Duration::hours(3) + Duration::seconds(1),
        Granularity::Hour,
    )
    .await;
    assert_eq!(hours(&got), vec![1, 2, 3]);
    let all = query(
        &store,
        &conn,
        h0 - Duration::days(2),
        h0 + Duration::days(1),
        Granularity::Hour,
    )
    .await;
    assert_eq!(all, expected(&events, Granularity::Hour));
    let none = query(
        &store,
        &conn,
        h0 - Duration::days(2),
        h0 - Duration::days(1),
        Granularity::Hour,
    )
    .await;
    assert!(none.is_empty());
    // A range that is empty or backwards returns nothing.
    assert!(
        query(
            &store,
            &conn,
            h0 + Duration::hours(3),
            h0,
            Granularity::Hour
        )
        .await
        .is_empty()
    );
}

pub async fn maxima_and_ttft(store: Usage) {
    let conn = conn_id();
    let h = hour_ago(3);
    let latencies = [300u64, 100, 900, 900, 50, 901, 2];
    let ttfts = [
        Some(40u64),
        None,
        Some(10),
        Some(80),
        None,
        Some(5),
        Some(81),
    ];
    let events: Vec<UsageEvent> = latencies
        .iter()
        .zip(ttfts)
        .map(|(l, t)| {
            let mut e = event(&conn, "m", h, 0);
            e.latency_ms = *l;
            e.ttft_ms = t;
            e
        })
        .collect();
    record_all(&store, &events).await;
    let got = query(&store, &conn, h, h + Duration::hours(1), Granularity::Hour).await;
    assert_eq!(got.len(), 1);
    let c = &got[0].counters;
    assert_eq!(c.latency_ms_max, 901);
    assert_eq!(c.latency_ms_sum, latencies.iter().sum::<u64>());
    assert_eq!((c.ttft_ms_max, c.ttft_ms_sum, c.ttft_count), (81, 216, 5));
    assert_eq!(got, expected(&events, Granularity::Hour));

    // Events with no ttft at all leave the ttft counters at zero.
    let quiet = conn_id();
    let mut e = event(&quiet, "m", h, 0);
    e.ttft_ms = None;
    store.record(&e).await.expect("record");
    let got = query(&store, &quiet, h, h + Duration::hours(1), Granularity::Hour).await;
    assert_eq!(got, expected(&[e], Granularity::Hour));
    assert_eq!(got[0].counters.ttft_count, 0);
}

pub async fn connections_are_isolated(store: Usage) {
    let a = conn_id();
    // An id that extends another must not see its usage, nor the other way round.
    let b = format!("{a}0");
    let h = hour_ago(2);
    let ea = vec![event(&a, "m", h, 1)];
    let eb = vec![event(&b, "m", h, 2), event(&b, "m", h, 3)];
    record_all(&store, &ea).await;
    record_all(&store, &eb).await;
    let to = h + Duration::hours(1);
    assert_eq!(
        query(&store, &a, h, to, Granularity::Hour).await,
        expected(&ea, Granularity::Hour)
    );
    assert_eq!(
        query(&store, &b, h, to, Granularity::Hour).await,
        expected(&eb, Granularity::Hour)
    );
    assert!(
        query(&store, &conn_id(), h, to, Granularity::Day)
            .await
            .is_empty()
    );
}

pub async fn odd_model_ids_round_trip(store: Usage) {
    let conn = conn_id();
    let h = hour_ago(1);
    let models = [
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "models/gemini-1.5-pro",
        "a#b#c",
        "H#000000000000#x",
        "ü🦀 model",
        "",
        &"x".repeat(vmx_domain::usage::MODEL_MAX_BYTES),
    ];
    let events: Vec<UsageEvent> = models
        .iter()
        .enumerate()
        .map(|(i, m)| event(&conn, m, h, i as u64))
        .collect();
    record_all(&store, &events).await;
    let got = query(&store, &conn, h, h + Duration::hours(1), Granularity::Hour).await;
    assert_eq!(got, expected(&events, Granularity::Hour));
}

pub async fn invalid_events_are_refused(store: Usage) {
    let conn = conn_id();
    let h = hour_ago(1);
    let long = event(
        &conn,
        &"x".repeat(vmx_domain::usage::MODEL_MAX_BYTES + 1),
        h,
        0,
    );
    match store.record(&long).await {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "model"),
        other => panic!("a too long model: expected Invalid, got {other:?}"),
    }
    let no_conn = event("", "m", h, 0);
    match store.record(&no_conn).await {
        Err(Error::Invalid { .. }) => {}
        other => panic!("an empty connection id: expected Invalid, got {other:?}"),
    }
    assert!(
        query(&store, &conn, h, h + Duration::hours(1), Granularity::Hour)
            .await
            .is_empty()
    );
}

pub async fn concurrent_records_are_exact(store: Usage) {
    const TASKS: u64 = 50;
    let conn = conn_id();
    let h = hour_ago(1);
    let events: Vec<UsageEvent> = (0..TASKS)
        .map(|i| {
            let model = if i % 3 == 0 { "x" } else { "y" };
            let mut e = event(&conn, model, h + Duration::seconds(i as i64), i);
            e.latency_ms = (i * 37) % 101 + 1;
            if i % 7 == 0 {
                e.error = Some(ErrorClass::ALL[(i / 7) as usize % ErrorClass::ALL.len()]);
            }
            if i % 5 == 0 {
                e.ttft_ms = None;
            }
            e
        })
        .collect();
    let mut handles = Vec::new();
    for e in events.clone() {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move { store.record(&e).await }));
    }
    for h in handles {
        h.await.expect("task").expect("concurrent record");
    }
    let got = query(&store, &conn, h, h + Duration::hours(1), Granularity::Hour).await;
    assert_eq!(
        got,
        expected(&events, Granularity::Hour),
        "no counter or maximum lost"
    );
    let total: u64 = got.iter().map(|b| b.counters.requests).sum();
    assert_eq!(total, TASKS);
}

/// Requests of different API keys (and of none) land in buckets of their own: a view by
/// model sums them, a view by key shows each, both at hours and days.
pub async fn usage_is_kept_per_api_key(store: Usage) {
    let conn = conn_id();
    let h0 = hour_ago(3);
    let keyed = |n: u64, key: Option<&str>| {
        let mut e = event(&conn, "gpt-4o", h0 + Duration::minutes(n as i64), n);
        e.api_key_id = key.map(str::to_owned);
        e
    };
    let key1 = uuid::Uuid::now_v7().to_string();
    let key2 = uuid::Uuid::now_v7().to_string();
    let events = vec![
        keyed(1, Some(&key1)),
        keyed(2, Some(&key1)),
        keyed(3, Some(&key2)),
        keyed(4, None),
    ];
    record_all(&store, &events).await;
    let (from, to) = (h0, h0 + Duration::hours(1));
    for g in [Granularity::Hour, Granularity::Day] {
        assert_eq!(
            query(&store, &conn, from, to, g).await,
            expected(&events, g),
            "by model, {g:?}: every key summed"
        );
        let by_key = store
            .query_by(&conn, from, to, g, UsageGroup::ApiKey)
            .await
            .expect("query by key");
        let mut want = Vec::new();
        for key in [None, Some(&key1), Some(&key2)] {
            let of_key: Vec<UsageEvent> = events
                .iter()
                .filter(|e| e.api_key_id.as_ref() == key)
                .cloned()
                .collect();
            for mut b in expected(&of_key, g) {
                b.api_key_id = key.cloned();
                want.push(b);
            }
        }
        want.sort_by(|a, b| {
            (a.start, &a.model, &a.api_key_id).cmp(&(b.start, &b.model, &b.api_key_id))
        });
        assert_eq!(by_key, want, "by key, {g:?}");
    }
    // A bad key id is refused before anything is written.
    let mut bad = keyed(5, Some("a#b"));
    assert!(store.record(&bad).await.is_err(), "a key id with '#'");
    bad.api_key_id = Some(String::new());
    assert!(store.record(&bad).await.is_err(), "an empty key id");
}
