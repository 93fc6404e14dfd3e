//! DynamoLedger against moto: the capacity conformance suite, the write count per
//! admission (counted by an SDK interceptor), stale counter removal, TTL, throttling, and
//! the configuration version an admission returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use vmx_aws::dynamo_ledger::{DynamoLedger, TTL_GRACE_SECS};
use vmx_aws::table::TTL_ATTRIBUTE;
use vmx_aws::table::{CAP_PK_PREFIX, CAP_SK, IP_SK_PREFIX};
use vmx_conformance::capacity::{
    self as conformance, Ledger, T0, admitted, entry, per_ip, rejected, request, unique_id,
};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::Error;
use vmx_domain::admission::previous_window_key;
use vmx_domain::capacity::Period;

use common::{Stub, config_for, env_config, fast_options, fresh_table, moto};

/// Records the `X-Amz-Target` of every HTTP request the client sends (retries included).
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .map(|t| t.trim_start_matches("DynamoDB_20120810.").to_owned())
            .collect()
    }
}

const WRITES: [&str; 5] = [
    "UpdateItem",
    "PutItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

fn writes(calls: &[String]) -> usize {
    calls
        .iter()
        .filter(|c| WRITES.contains(&c.as_str()))
        .count()
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(target) = context.request().headers().get("x-amz-target") {
            self.0.lock().unwrap().push(target.to_owned());
        }
        Ok(())
    }
}

async fn moto_client(test: &str) -> Option<Client> {
    moto(test)?;
    Some(Client::new(&env_config().await))
}

/// A client whose calls are recorded in the returned [`Calls`].
async fn counted_client() -> (Client, Calls) {
    let calls = Calls::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&env_config().await)
        .interceptor(calls.clone())
        .build();
    (Client::from_conf(config), calls)
}

async fn raw_item(client: &Client, table: &str, pk: &str, sk: &str) -> BTreeMap<String, String> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item");
    out.item
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::N(n) | AttributeValue::S(n) => n,
                other => format!("{other:?}"),
            };
            (k, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn capacity_conformance_on_dynamodb() {
    let Some(endpoint) = moto("capacity_conformance_on_dynamodb") else {
        return;
    };
    // moto's conditional writes are not atomic under concurrency; DynamoDB's are. The
    // serializing proxy restores DynamoDB's guarantee (see vmx_conformance::moto_proxy).
    let proxy = SerialProxy::start(&endpoint).await;
    let client = Client::new(&config_for(&proxy.url, &fast_options(3)).await);
    conformance::run_all(|| {
        let client = client.clone();
        async move {
            let table = fresh_table(&client).await;
            Arc::new(DynamoLedger::new(client, table)) as Ledger
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_write_per_connection_wide_admission() {
    if moto("one_write_per_connection_wide_admission").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let id = unique_id("writes");
    let entries = [
        entry(Period::Minute, Some(1000), Some(1_000_000)),
        entry(Period::Hour, Some(10_000), None),
        entry(Period::Day, None, Some(100_000_000)),
        entry(Period::Month, Some(1_000_000), None),
        entry(Period::Lifetime, None, Some(10_000_000_000)),
    ];
    calls.take();
    let mut per_admission = Vec::new();
    // 20 admissions spread over several minutes (window roll-overs included).
    for i in 0..20 {
        let now = T0 + time::Duration::seconds(17 * i);
        let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 50, 500, now)).await;
        assert!(a.headroom(vmx_domain::admission::Metric::Tokens).is_some());
        let c = calls.take();
        per_admission.push(writes(&c));
        assert_eq!(c, vec!["UpdateItem"], "admission {i}: one call, no read");
    }
    assert!(per_admission.iter().all(|&w| w == 1), "{per_admission:?}");
    eprintln!(
        "DynamoDB writes per connection-wide admission: {per_admission:?} (20 admissions, 5 windows)"
    );

    // A reconciliation is one write too.
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 50, 500, T0)).await;
    calls.take();
    ledger
        .adjust(&a.reservation, a.reservation.reconcile(42), T0)
        .await
        .expect("reconcile");
    assert_eq!(calls.take(), vec!["UpdateItem"]);

    // With a source-ip window: one transaction, then a consistent read of the two items
    // for the headers (reads, not writes).
    let with_ip = [
        entry(Period::Minute, Some(1000), None),
        per_ip(entry(Period::Minute, Some(10), None)),
    ];
    let id = unique_id("writes-ip");
    admitted(&ledger, &request(&id, &with_ip, "10.0.0.1", 1, 1, T0)).await;
    let c = calls.take();
    assert_eq!(writes(&c), 1, "{c:?}");
    assert_eq!(c.first().map(String::as_str), Some("TransactWriteItems"));
    // Only source-ip windows: a single UpdateItem.
    let only_ip = [per_ip(entry(Period::Minute, Some(10), None))];
    let id = unique_id("writes-only-ip");
    admitted(&ledger, &request(&id, &only_ip, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(calls.take(), vec!["UpdateItem"]);

    // A rejection costs one (failed conditional) write and no read.
    let tiny = [entry(Period::Minute, Some(1), None)];
    let id = unique_id("writes-reject");
    admitted(&ledger, &request(&id, &tiny, "10.0.0.1", 1, 1, T0)).await;
    calls.take();
    rejected(&ledger, &request(&id, &tiny, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(calls.take(), vec!["UpdateItem"]);

    // Near a tokens limit: the optimistic charge fails, the exact capped one succeeds.
    let tokens = [entry(Period::Minute, None, Some(1000))];
    let id = unique_id("writes-near-limit");
    let a = admitted(&ledger, &request(&id, &tokens, "10.0.0.1", 100, 600, T0)).await;
    assert_eq!(a.reservation.tokens(), 700);
    calls.take();
    let b = admitted(&ledger, &request(&id, &tokens, "10.0.0.1", 100, 600, T0)).await;
    assert_eq!(
        b.reservation.tokens(),
        300,
        "output capped at what was left"
    );
    assert_eq!(calls.take(), vec!["UpdateItem", "UpdateItem"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_counters_are_removed_and_ttl_set() {
    let Some(client) = moto_client("stale_counters_are_removed_and_ttl_set").await else {
        return;
    };
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let id = unique_id("stale");
    let pk = format!("{CAP_PK_PREFIX}{id}");
    let entries = [entry(Period::Minute, Some(100), Some(100_000))];
    let counters = |item: &BTreeMap<String, String>| -> BTreeSet<String> {
        item.keys()
            .filter(|k| k.starts_with("r_") || k.starts_with("t_"))
            .cloned()
            .collect()
    };
    let key = |t: time::OffsetDateTime| Period::Minute.window(t).key;

    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    let item = raw_item(&client, &table, &pk, CAP_SK).await;
    let minute_end = Period::Minute.window(T0).end.unwrap();
    assert_eq!(
        item.get(TTL_ATTRIBUTE),
        Some(&(minute_end + TTL_GRACE_SECS).to_string()),
        "TTL one grace period after the window"
    );
    // The next minute: the previous minute's counters go in the same write.
    let t1 = T0 + time::Duration::minutes(1);
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, t1)).await;
    let item = raw_item(&client, &table, &pk, CAP_SK).await;
    assert_eq!(
        counters(&item),
        BTreeSet::from([format!("r_{}", key(t1)), format!("t_{}", key(t1))])
    );
    // After a gap, the admission sees the old counters and the next one removes them.
    let t2 = T0 + time::Duration::minutes(10);
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, t2)).await;
    assert_eq!(
        counters(&raw_item(&client, &table, &pk, CAP_SK).await).len(),
        4
    );
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, t2)).await;
    let item = raw_item(&client, &table, &pk, CAP_SK).await;
    assert_eq!(
        counters(&item),
        BTreeSet::from([format!("r_{}", key(t2)), format!("t_{}", key(t2))])
    );
    assert_eq!(
        item.get(&format!("r_{}", key(t2))).map(String::as_str),
        Some("2")
    );
    assert!(previous_window_key(Period::Minute, t2).is_some());

    // A lifetime window on the item: no TTL.
    let with_lifetime = [
        entry(Period::Minute, Some(100), None),
        entry(Period::Lifetime, Some(100), None),
    ];
    admitted(&ledger, &request(&id, &with_lifetime, "10.0.0.1", 1, 1, t2)).await;
    let item = raw_item(&client, &table, &pk, CAP_SK).await;
    assert!(!item.contains_key(TTL_ATTRIBUTE), "{item:?}");
    assert_eq!(item.get("r_L").map(String::as_str), Some("1"));
    // A per-IP item with a lifetime window has no TTL, the connection item keeps its own.
    let mixed = [
        entry(Period::Minute, Some(100), None),
        per_ip(entry(Period::Lifetime, Some(100), None)),
    ];
    let id = unique_id("stale-ip");
    let pk = format!("{CAP_PK_PREFIX}{id}");
    admitted(&ledger, &request(&id, &mixed, "10.0.0.1", 1, 1, T0)).await;
    let conn = raw_item(&client, &table, &pk, CAP_SK).await;
    let ip = raw_item(&client, &table, &pk, &format!("{IP_SK_PREFIX}10.0.0.1")).await;
    assert!(conn.contains_key(TTL_ATTRIBUTE));
    assert!(!ip.contains_key(TTL_ATTRIBUTE));
    assert_eq!(ip.get("r_L").map(String::as_str), Some("1"));

    // The refresh's sweep after the lifetime entry was removed from the connection: the IP
    // item's lifetime counters go, and the item, holding nothing and without a TTL, gets one
    // on the next sweep, so the TTL takes it.
    let ip_sk = format!("{IP_SK_PREFIX}10.0.0.1");
    let later = T0 + time::Duration::days(3);
    assert_eq!(
        ledger.sweep(&id, true, later).await.unwrap(),
        2,
        "the minute"
    );
    assert!(
        raw_item(&client, &table, &pk, &ip_sk)
            .await
            .contains_key("r_L")
    );
    assert_eq!(
        ledger.sweep(&id, false, later).await.unwrap(),
        2,
        "r_L, t_L"
    );
    let ip = raw_item(&client, &table, &pk, &ip_sk).await;
    assert!(
        counters(&ip).is_empty() && !ip.contains_key(TTL_ATTRIBUTE),
        "{ip:?}"
    );
    assert_eq!(ledger.sweep(&id, false, later).await.unwrap(), 0);
    let ip = raw_item(&client, &table, &pk, &ip_sk).await;
    assert_eq!(
        ip.get(TTL_ATTRIBUTE),
        Some(&(later.unix_timestamp() + TTL_GRACE_SECS).to_string())
    );
}

#[tokio::test]
async fn throttling_is_unavailable() {
    let stub = Stub::dynamodb_error("ProvisionedThroughputExceededException").await;
    let config = config_for(&stub.url, &fast_options(2)).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(Client::new(&config), "throttled"));
    let entries = [entry(Period::Minute, Some(10), None)];
    let req = request("c1", &entries, "10.0.0.1", 1, 1, T0);
    match ledger.admit(&req).await {
        Err(Error::Unavailable {
            retry_after_secs, ..
        }) => assert_eq!(retry_after_secs, Some(1)),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(stub.requests(), 2, "the SDK retried the throttled write");
    let with_ip = [
        entry(Period::Minute, Some(10), None),
        per_ip(entry(Period::Minute, Some(10), None)),
    ];
    let req = request("c1", &with_ip, "10.0.0.1", 1, 1, T0);
    assert!(matches!(
        ledger.admit(&req).await,
        Err(Error::Unavailable { .. })
    ));
    let a = vmx_domain::admission::plan(
        "c1",
        "n",
        &[],
        "10.0.0.1".parse().unwrap(),
        Default::default(),
        T0,
    )
    .unwrap();
    // No window: admitted without a call.
    let before = stub.requests();
    ledger.admit(&a).await.expect("unlimited");
    assert_eq!(stub.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_conformance_on_dynamodb() {
    let Some(endpoint) = moto("pools_conformance_on_dynamodb") else {
        return;
    };
    let (_proxy, client) = serial_client(&endpoint).await;
    vmx_conformance::pools::run_all(|| fresh_ledger(client.clone())).await;
}

/// A client whose calls go through a [`SerialProxy`] in front of moto (keep the proxy).
/// Many concurrent callers queue behind it, on a machine that may be busy: a wait in that
/// queue is no failure.
async fn serial_client(endpoint: &str) -> (SerialProxy, Client) {
    let proxy = SerialProxy::start(endpoint).await;
    let options = vmx_aws::AwsOptions {
        attempt_timeout: std::time::Duration::from_secs(120),
        operation_timeout: std::time::Duration::from_secs(240),
        ..fast_options(3)
    };
    let client = Client::new(&config_for(&proxy.url, &options).await);
    (proxy, client)
}

/// A ledger on a fresh table.
async fn fresh_ledger(client: Client) -> Ledger {
    let table = fresh_table(&client).await;
    Arc::new(DynamoLedger::new(client, table))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_capacity_conformance_on_dynamodb() {
    let Some(endpoint) = moto("key_capacity_conformance_on_dynamodb") else {
        return;
    };
    let (_proxy, client) = serial_client(&endpoint).await;
    vmx_conformance::key_capacity::run_all(|| fresh_ledger(client.clone())).await;
}

/// An API key's own windows live on the connection item: an admission that charges the
/// connection's windows, a pool and the key's windows is still one conditional write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_write_per_admission_with_key_capacity() {
    if moto("one_write_per_admission_with_key_capacity").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let id = unique_id("key-writes");
    let entries = [entry(Period::Minute, Some(1000), Some(1_000_000))];
    let own = [
        entry(Period::Minute, Some(100), Some(10_000)),
        entry(Period::Day, Some(1000), None),
    ];
    let def = vmx_conformance::pools::definition(&[("web", 1, "kw", 30, 60)]);
    let req = |now| {
        vmx_conformance::key_capacity::keyed(&id, &entries, "kw", &own, 5, 0, now)
            .with_pools(def.admission(Some("kw")))
    };
    admitted(&ledger, &req(T0)).await;
    calls.take();
    for i in 0..10 {
        admitted(&ledger, &req(T0)).await;
        assert_eq!(calls.take(), vec!["UpdateItem"], "admission {i}: one call");
    }
    let item = raw_item(&client, &table, &format!("CAP#{id}"), "CAP").await;
    let minute = Period::Minute.window(T0).key;
    assert_eq!(
        item.get(&format!("r_{minute}~kw")).map(String::as_str),
        Some("11")
    );
    assert_eq!(
        item.get(&format!("t_{minute}~kw")).map(String::as_str),
        Some("55")
    );
    assert_eq!(
        item.get(&format!("r_{minute}@web")).map(String::as_str),
        Some("11")
    );
    assert_eq!(
        item.get(&format!("r_{minute}")).map(String::as_str),
        Some("11")
    );
    // The reconciliation is one write too, and reaches the key's counters.
    let a = admitted(&ledger, &req(T0)).await;
    calls.take();
    ledger
        .adjust(&a.reservation, a.reservation.reconcile(2), T0)
        .await
        .expect("reconcile");
    assert_eq!(calls.take(), vec!["UpdateItem"]);
    let item = raw_item(&client, &table, &format!("CAP#{id}"), "CAP").await;
    assert_eq!(
        item.get(&format!("t_{minute}~kw")).map(String::as_str),
        Some("57")
    );
    // The next minute's admission removes the previous minute's key counters.
    let next = T0 + time::Duration::minutes(1);
    admitted(&ledger, &req(next)).await;
    let item = raw_item(&client, &table, &format!("CAP#{id}"), "CAP").await;
    assert!(!item.contains_key(&format!("r_{minute}~kw")), "{item:?}");
    let day = Period::Day.window(T0).key;
    assert_eq!(
        item.get(&format!("r_{day}~kw")).map(String::as_str),
        Some("13")
    );
}

/// With pools on, a warm process admits with one conditional write: the other pools'
/// counters come from the item the previous admission returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_write_per_admission_with_pools() {
    if moto("one_write_per_admission_with_pools").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let id = unique_id("pool-writes");
    let entries = [
        entry(Period::Minute, Some(1000), Some(1_000_000)),
        entry(Period::Day, Some(100_000), None),
    ];
    let def = vmx_conformance::pools::definition(&[
        ("web", 1, "kw", 30, 60),
        ("api", 2, "ka", 20, 50),
        ("batch", 3, "kb", 0, 40),
    ]);
    let pooled = |key: &str, now| vmx_conformance::pools::pooled(&id, &entries, &def, key, 5, now);
    // The first admission of each pool in this process may fail its condition once (the
    // process has no snapshot yet, or another pool became active since).
    for key in ["kw", "ka", "kb"] {
        admitted(&ledger, &pooled(key, T0)).await;
    }
    calls.take();
    let mut per_admission = Vec::new();
    for i in 0..30 {
        let key = ["kw", "ka", "kb"][i % 3];
        admitted(&ledger, &pooled(key, T0)).await;
        let c = calls.take();
        per_admission.push(writes(&c));
        assert_eq!(c, vec!["UpdateItem"], "admission {i}: one call");
    }
    eprintln!("DynamoDB writes per admission with three pools: {per_admission:?}");
    let item = raw_item(&client, &table, &format!("CAP#{id}"), "CAP").await;
    let minute = Period::Minute.window(T0).key;
    assert_eq!(
        item.get(&format!("r_{minute}@web")).map(String::as_str),
        Some("11")
    );
    assert_eq!(
        item.get(&format!("r_{minute}")).map(String::as_str),
        Some("33")
    );
    // A refund reaches the pool counter too.
    let a = admitted(&ledger, &pooled("kb", T0)).await;
    ledger
        .adjust(&a.reservation, a.reservation.failed(0), T0)
        .await
        .expect("refund");
    let item = raw_item(&client, &table, &format!("CAP#{id}"), "CAP").await;
    assert_eq!(
        item.get(&format!("r_{minute}@batch")).map(String::as_str),
        Some("11")
    );
}

/// The configuration version (issue 17, propagation): an admission's own write returns it
/// (no read), `bump_config_version` raises it with one write, and an admission that writes
/// no connection item carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configuration_version_comes_back_with_the_admission() {
    if moto("configuration_version_comes_back_with_the_admission").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    assert!(ledger.keeps_config_version());
    let id = unique_id("version");
    let entries = [entry(Period::Minute, Some(1000), None)];
    calls.take();
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(a.config_version, Some(0), "no change yet");
    assert_eq!(calls.take(), vec!["UpdateItem"]);
    ledger.bump_config_version(&id).await.expect("bump");
    ledger.bump_config_version(&id).await.expect("bump");
    assert_eq!(calls.take(), vec!["UpdateItem", "UpdateItem"]);
    let raw = raw_item(&client, &table, &format!("{CAP_PK_PREFIX}{id}"), CAP_SK).await;
    assert_eq!(raw.get("cv").map(String::as_str), Some("2"), "{raw:?}");
    calls.take();
    let a = admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(a.config_version, Some(2));
    assert_eq!(calls.take(), vec!["UpdateItem"], "still one call, no read");

    // A version raised before the connection's first admission (the item is created).
    let fresh = unique_id("version-fresh");
    ledger.bump_config_version(&fresh).await.expect("bump");
    let a = admitted(&ledger, &request(&fresh, &entries, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(a.config_version, Some(1));

    // With a source-ip window: the transaction's read-back carries it.
    let with_ip = [
        entry(Period::Minute, Some(1000), None),
        per_ip(entry(Period::Minute, Some(10), None)),
    ];
    let a = admitted(&ledger, &request(&id, &with_ip, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(a.config_version, Some(2));
    // Only source-ip windows: no connection item written, no version.
    let only_ip = [per_ip(entry(Period::Minute, Some(10), None))];
    let a = admitted(&ledger, &request(&id, &only_ip, "10.0.0.1", 1, 1, T0)).await;
    assert_eq!(a.config_version, None);
}

/// The usage view with pools reads the pools' counters from the connection item it already
/// reads: one `GetItem`, as without pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_with_pools_is_one_read() {
    if moto("usage_with_pools_is_one_read").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let ledger: Ledger = Arc::new(DynamoLedger::new(client.clone(), table.clone()));
    let id = unique_id("pool-usage-reads");
    let entries = [
        entry(Period::Minute, Some(100), Some(10_000)),
        entry(Period::Day, Some(1000), None),
    ];
    let def =
        vmx_conformance::pools::definition(&[("web", 1, "kw", 30, 60), ("batch", 2, "kb", 0, 40)]);
    for key in ["kw", "kb", "kb"] {
        admitted(
            &ledger,
            &vmx_conformance::pools::pooled(&id, &entries, &def, key, 5, T0),
        )
        .await;
    }
    calls.take();
    let request = vmx_domain::admission::UsageRequest::new(&id, &entries, 10, T0).with_pools(&def);
    let usage = ledger.usage(&request).await.expect("usage");
    assert_eq!(calls.take(), vec!["GetItem"]);
    for w in &usage.windows {
        let used: Vec<(&str, u64, bool)> = w
            .pools
            .iter()
            .map(|p| (p.share.name.as_str(), p.used.requests, p.active))
            .collect();
        assert_eq!(
            used,
            [("web", 1, true), ("batch", 2, true), ("default", 0, false)]
        );
    }
}
