//! The API-key, usage and discovered-capacity adapters against moto: the conformance suites,
//! the DynamoDB calls per operation (counted by an SDK interceptor), and the item layouts.
//!
//! Suites with concurrent writers go through `SerialProxy`, which hands moto one request at a
//! time: DynamoDB serializes the writes to an item, moto does not (see `moto_proxy`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::AttributeValue;
use time::{Duration, OffsetDateTime};
use vmx_aws::DynamoStore;
use vmx_aws::dynamo_api_keys::DynamoApiKeyStore;
use vmx_aws::dynamo_usage::DynamoUsageStore;
use vmx_aws::table::TTL_ATTRIBUTE;
use vmx_aws::table::{API_KEY_PK_PREFIX, API_KEY_SK, API_KEYS_PK, usage_hour_sk, usage_pk};
use vmx_conformance::discovered::{Stores, discovered};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_conformance::store::{api_key_connection, unique_name, updated};
use vmx_conformance::usage::{conn_id, event, expected, hour_ago};
use vmx_domain::api_key::ApiKeyStore;
use vmx_domain::discovered::{ChangeSource, DiscoveredCapacityStore};
use vmx_domain::ports::ConnectionStore;
use vmx_domain::secret::ExposeSecret;
use vmx_domain::usage::{Granularity, UsageStore};

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

/// A client through a [`SerialProxy`] to moto (keep the proxy alive while using it).
async fn serial_client(test: &str) -> Option<(Client, SerialProxy)> {
    let endpoint = moto(test)?;
    let proxy = SerialProxy::start(&endpoint).await;
    let client = Client::new(&config_for(&proxy.url, &fast_options(3)).await);
    Some((client, proxy))
}

/// A client whose calls are recorded in the returned [`Calls`].
async fn counted_client() -> (Client, Calls) {
    let calls = Calls::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&env_config().await)
        .interceptor(calls.clone())
        .build();
    (Client::from_conf(config), calls)
}

async fn raw_item(
    client: &Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> BTreeMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .unwrap_or_default()
        .into_iter()
        .collect()
}

async fn scan_all(client: &Client, table: &str) -> Vec<BTreeMap<String, AttributeValue>> {
    client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan")
        .items()
        .iter()
        .map(|i| i.clone().into_iter().collect())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Conformance

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_key_conformance_on_dynamodb() {
    let Some((client, _proxy)) = serial_client("api_key_conformance_on_dynamodb").await else {
        return;
    };
    vmx_conformance::api_keys::run_all(|| {
        let client = client.clone();
        async move {
            let table = fresh_table(&client).await;
            Arc::new(DynamoApiKeyStore::new(client, table)) as Arc<dyn ApiKeyStore>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_conformance_on_dynamodb() {
    let Some((client, _proxy)) = serial_client("usage_conformance_on_dynamodb").await else {
        return;
    };
    vmx_conformance::usage::run_all(|| {
        let client = client.clone();
        async move {
            let table = fresh_table(&client).await;
            Arc::new(DynamoUsageStore::new(client, table)) as Arc<dyn UsageStore>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discovered_capacity_conformance_on_dynamodb() {
    let Some((client, _proxy)) = serial_client("discovered_capacity_conformance_on_dynamodb").await
    else {
        return;
    };
    vmx_conformance::discovered::run_all(|| {
        let client = client.clone();
        async move {
            let table = fresh_table(&client).await;
            Stores::of(Arc::new(DynamoStore::new(client, table)))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_gateway_suites_on_one_shared_table() {
    // Connections, keys and usage in one table, as deployed: no case sees another's items.
    let Some((client, _proxy)) = serial_client("all_gateway_suites_on_one_shared_table").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let connections = Arc::new(DynamoStore::new(client.clone(), table.clone()));
    let keys: Arc<dyn ApiKeyStore> =
        Arc::new(DynamoApiKeyStore::new(client.clone(), table.clone()));
    let usage: Arc<dyn UsageStore> = Arc::new(DynamoUsageStore::new(client, table));
    vmx_conformance::store::run_all(|| {
        let c = connections.clone() as Arc<dyn ConnectionStore>;
        async move { c }
    })
    .await;
    vmx_conformance::discovered::run_all(|| {
        let s = Stores::of(connections.clone());
        async move { s }
    })
    .await;
    vmx_conformance::api_keys::run_all(|| {
        let k = keys.clone();
        async move { k }
    })
    .await;
    vmx_conformance::usage::run_all(|| {
        let u = usage.clone();
        async move { u }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Calls per operation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_per_usage_record() {
    if moto("one_write_per_usage_record").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let store = DynamoUsageStore::new(client, table);
    let conn = conn_id();
    let h = hour_ago(1);
    calls.take();

    // The first event of a bucket: one write (the maxima start at its values).
    let mut first = event(&conn, "m", h, 0);
    first.latency_ms = 1000;
    first.ttft_ms = Some(300);
    store.record(&first).await.unwrap();
    assert_eq!(calls.take(), vec!["UpdateItem"], "first event of a bucket");

    // Events at or below the maxima, successes and failures: one write each.
    let mut events = vec![first.clone()];
    for i in 0..20u64 {
        let mut e = event(&conn, "m", h + Duration::seconds(i as i64), i);
        e.latency_ms = 1000 - i * 10;
        e.ttft_ms = if i % 2 == 0 { Some(300 - i) } else { None };
        if i % 4 == 0 {
            e.error = Some(vmx_domain::usage::ErrorClass::Upstream);
        }
        store.record(&e).await.unwrap();
        let c = calls.take();
        assert_eq!(c, vec!["UpdateItem"], "event {i}: {c:?}");
        events.push(e);
    }

    // A new maximum: the one case with a second (conditional) write.
    let mut slow = event(&conn, "m", h, 99);
    slow.latency_ms = 5000;
    slow.ttft_ms = Some(900);
    store.record(&slow).await.unwrap();
    let c = calls.take();
    assert_eq!(c, vec!["UpdateItem", "UpdateItem"], "a new maximum: {c:?}");
    events.push(slow);

    // Another model or hour is another bucket: one write again.
    let other = event(&conn, "other", h + Duration::hours(1), 1);
    store.record(&other).await.unwrap();
    assert_eq!(writes(&calls.take()), 1);
    events.push(other);

    // A query is one Query (no writes).
    let got = store
        .query(&conn, h, h + Duration::hours(2), Granularity::Hour)
        .await
        .unwrap();
    assert_eq!(calls.take(), vec!["Query"]);
    assert_eq!(got, expected(&events, Granularity::Hour));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_lookup_is_one_read_and_no_write() {
    if moto("api_key_lookup_is_one_read_and_no_write").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let store = DynamoApiKeyStore::new(client, table);
    let k = vmx_conformance::api_keys::key_record("counted");
    calls.take();
    store.insert(&k).await.unwrap();
    assert_eq!(calls.take(), vec!["TransactWriteItems"], "insert");
    store.find_by_hash(&k.hash).await.unwrap().unwrap();
    assert_eq!(calls.take(), vec!["GetItem"], "authentication");
    // A token that is not a hash costs nothing.
    assert_eq!(store.find_by_hash("not-a-hash").await.unwrap(), None);
    assert!(calls.take().is_empty());
    store
        .mark_used(&k.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        calls.take(),
        vec!["GetItem", "TransactWriteItems"],
        "mark used"
    );
    store
        .revoke(&k.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        calls.take(),
        vec!["GetItem", "TransactWriteItems", "GetItem"],
        "revoke"
    );
    store
        .revoke(&k.id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        calls.take(),
        vec!["GetItem"],
        "revoking again writes nothing"
    );
    store.delete(&k.id).await.unwrap();
    assert_eq!(
        calls.take(),
        vec!["GetItem", "TransactWriteItems"],
        "delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_capacity_is_one_update_and_reads_stay_one_call() {
    if moto("discovered_capacity_is_one_update_and_reads_stay_one_call").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client, table);
    let c = api_key_connection(&unique_name("counted"));
    store.insert(&c).await.unwrap();
    calls.take();
    let t = OffsetDateTime::now_utc();
    store
        .record_discovered(&c.id, "gpt-4o", &discovered(t, 500), ChangeSource::Headers)
        .await
        .unwrap();
    // The limits, then one history item per changed limit (requests and tokens).
    assert_eq!(
        calls.take(),
        vec!["UpdateItem"; 3],
        "record_discovered and its history"
    );
    // The same limits again: no history write.
    store
        .record_discovered(
            &c.id,
            "gpt-4o",
            &discovered(t + Duration::seconds(1), 500),
            ChangeSource::Headers,
        )
        .await
        .unwrap();
    assert_eq!(calls.take(), vec!["UpdateItem"], "unchanged limits");
    store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(calls.take(), vec!["GetItem"], "get");
    store.get_by_name(&c.name).await.unwrap().unwrap();
    assert_eq!(calls.take(), vec!["GetItem", "GetItem"], "get_by_name");
    store.list(100, None).await.unwrap();
    assert_eq!(calls.take(), vec!["Query"], "list");
    let next = updated(&c);
    store.replace(&c, &next, 1).await.unwrap();
    assert_eq!(
        calls.take(),
        vec!["TransactWriteItems"],
        "replace is one write"
    );
    // A late observation costs the failed conditional write and one read.
    store
        .record_discovered(
            &c.id,
            "gpt-4o",
            &discovered(t - Duration::seconds(1), 1),
            ChangeSource::Headers,
        )
        .await
        .unwrap();
    assert_eq!(
        calls.take(),
        vec!["UpdateItem", "GetItem"],
        "late observation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_connections_are_replaced_by_put_without_losing_discoveries() {
    // Above UPDATE_DOCS_MAX, replace reads disc/dv and puts the whole item: concurrent
    // discoveries must make it retry, never be erased.
    let Some((client, _proxy)) =
        serial_client("large_connections_are_replaced_by_put_without_losing_discoveries").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = Arc::new(DynamoStore::new(client, table));
    let mut c = vmx_conformance::store::large_connection(&unique_name("large-race"));
    c.discovered_capacity.models.clear();
    let doc_len = serde_json::to_string(&c).unwrap().len();
    assert!(
        2 * doc_len > vmx_aws::dynamo_store::UPDATE_DOCS_MAX,
        "{doc_len}"
    );
    store.insert(&c).await.unwrap();

    let t = OffsetDateTime::now_utc();
    let mut handles = Vec::new();
    for i in 0..3u64 {
        let store = store.clone();
        let id = c.id.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..4i64 {
                store
                    .record_discovered(
                        &id,
                        &format!("m{i}"),
                        &discovered(t + Duration::seconds(k), 10 + i),
                        ChangeSource::Headers,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for i in 0..2 {
        let store = store.clone();
        let id = c.id.clone();
        handles.push(tokio::spawn(async move {
            for j in 0..2 {
                loop {
                    let current = store.get(&id).await.unwrap().unwrap();
                    let mut next = updated(&current);
                    next.description = Some(format!("update {i}-{j}"));
                    match store.replace(&current, &next, current.version).await {
                        Ok(()) => break,
                        Err(vmx_domain::Error::VersionConflict { .. }) => continue,
                        Err(e) => panic!("replace: {e}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let end = store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(end.version, 5);
    for i in 0..3u64 {
        assert_eq!(
            end.discovered_capacity.models.get(&format!("m{i}")),
            Some(&discovered(t + Duration::seconds(3), 10 + i)),
            "m{i}"
        );
    }
}

#[tokio::test]
async fn large_connection_replace_is_a_read_and_a_put() {
    if moto("large_connection_replace_is_a_read_and_a_put").is_none() {
        return;
    }
    let (client, calls) = counted_client().await;
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client, table);
    let c = vmx_conformance::store::large_connection(&unique_name("large-count"));
    store.insert(&c).await.unwrap();
    calls.take();
    store.replace(&c, &updated(&c), 1).await.unwrap();
    assert_eq!(calls.take(), vec!["GetItem", "TransactWriteItems"]);
    let got = store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(got.discovered_capacity, c.discovered_capacity);
}

// ---------------------------------------------------------------------------------------
// Item layouts

fn keys_of(item: &BTreeMap<String, AttributeValue>) -> BTreeSet<String> {
    item.keys().cloned().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn api_key_items_hold_the_hash_never_the_key() {
    let Some(client) = moto_client("api_key_items_hold_the_hash_never_the_key").await else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoApiKeyStore::new(client.clone(), table.clone());
    let (record, key) = vmx_domain::api_key::NewApiKey {
        name: Some("layout".to_owned()),
        connections: None,
        expires_at: None,
        capacity: Vec::new(),
    }
    .issue(uuid::Uuid::now_v7().to_string(), OffsetDateTime::now_utc())
    .unwrap();
    store.insert(&record).await.unwrap();
    store
        .revoke(&record.id, OffsetDateTime::now_utc())
        .await
        .unwrap();

    let items = scan_all(&client, &table).await;
    assert_eq!(items.len(), 2);
    let listing = raw_item(&client, &table, API_KEYS_PK, &record.id).await;
    let by_hash = raw_item(
        &client,
        &table,
        &format!("{API_KEY_PK_PREFIX}{}", record.hash),
        API_KEY_SK,
    )
    .await;
    let expected = set(&["pk", "sk", "doc", "revokedAt"]);
    assert_eq!(keys_of(&listing), expected);
    assert_eq!(keys_of(&by_hash), expected);
    assert!(!listing.contains_key(TTL_ATTRIBUTE));
    let dump = format!("{items:?}");
    assert!(
        !dump.contains(key.expose_secret()),
        "no stored item holds the key"
    );
    assert!(!dump.contains(&key.expose_secret()[7..]));
}

#[tokio::test]
async fn usage_item_layout_and_ttl() {
    let Some(client) = moto_client("usage_item_layout_and_ttl").await else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoUsageStore::new(client.clone(), table.clone());
    let conn = conn_id();
    let h = hour_ago(2);
    let mut e = event(&conn, "gpt-4o", h + Duration::minutes(5), 1);
    e.error = Some(vmx_domain::usage::ErrorClass::RateLimited);
    store.record(&e).await.unwrap();
    let item = raw_item(
        &client,
        &table,
        &usage_pk(&conn),
        &usage_hour_sk(h.unix_timestamp(), "gpt-4o"),
    )
    .await;
    assert_eq!(
        keys_of(&item),
        set(&[
            "pk",
            "sk",
            "model",
            "hour",
            "requests",
            "promptTokens",
            "completionTokens",
            "cachedTokens",
            "latencyMsSum",
            "latencyMsMax",
            "ttftMsSum",
            "ttftMsMax",
            "ttftCount",
            "err_rate_limited",
            TTL_ATTRIBUTE,
        ])
    );
    let ttl: i64 = item[TTL_ATTRIBUTE].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, h.unix_timestamp() + 400 * 86_400);
    assert_eq!(item["requests"].as_n().unwrap(), "1");
}

#[tokio::test]
async fn connection_item_keeps_discovered_capacity_apart_from_doc() {
    let Some(client) =
        moto_client("connection_item_keeps_discovered_capacity_apart_from_doc").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let c = api_key_connection(&unique_name("disc-layout"));
    store.insert(&c).await.unwrap();
    let t = OffsetDateTime::now_utc();
    store
        .record_discovered(&c.id, "gpt-4o", &discovered(t, 500), ChangeSource::Headers)
        .await
        .unwrap();
    let item = raw_item(&client, &table, "CONN", &c.id).await;
    assert_eq!(
        keys_of(&item),
        set(&["pk", "sk", "name", "version", "doc", "disc", "dv"])
    );
    assert_eq!(item["dv"].as_n().unwrap(), "1", "one discovery write");
    let doc = item["doc"].as_s().unwrap();
    assert!(!doc.contains("gpt-4o"), "discovered capacity is not in doc");
    let disc = item["disc"].as_m().unwrap();
    let entry = disc["gpt-4o"].as_m().unwrap();
    assert_eq!(
        entry["u"].as_n().unwrap(),
        &t.unix_timestamp_nanos().to_string()
    );
    assert_eq!(item["version"].as_n().unwrap(), "1");
}

#[tokio::test]
async fn connection_items_without_disc_take_discovered_capacity() {
    // An item as written before discovered capacity had its own attribute (or by hand).
    let Some(client) = moto_client("connection_items_without_disc_take_discovered_capacity").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let c = api_key_connection(&unique_name("legacy"));
    store.insert(&c).await.unwrap();
    remove_disc(&client, &table, &c.id).await;
    assert!(
        !raw_item(&client, &table, "CONN", &c.id)
            .await
            .contains_key("disc")
    );

    let t = OffsetDateTime::now_utc();
    let a = discovered(t, 500);
    store
        .record_discovered(&c.id, "a", &a, ChangeSource::Headers)
        .await
        .unwrap();
    let b = discovered(t, 7);
    store
        .record_discovered(&c.id, "b", &b, ChangeSource::Headers)
        .await
        .unwrap();
    let got = store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(got.discovered_capacity.models.len(), 2);
    assert_eq!(got.discovered_capacity.models.get("a"), Some(&a));
    assert_eq!(got.version, 1);

    // And a replace of such an item gives it an empty map, keeping what is there.
    remove_disc(&client, &table, &c.id).await;
    let next = updated(&got);
    store.replace(&got, &next, 1).await.unwrap();
    let item = raw_item(&client, &table, "CONN", &c.id).await;
    assert!(item["disc"].as_m().unwrap().is_empty());
    store
        .record_discovered(&c.id, "c", &a, ChangeSource::Headers)
        .await
        .unwrap();
    assert_eq!(
        store
            .get(&c.id)
            .await
            .unwrap()
            .unwrap()
            .discovered_capacity
            .models
            .len(),
        1
    );
}

/// Removes `disc` from a connection item by hand.
async fn remove_disc(client: &Client, table: &str, id: &str) {
    client
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S("CONN".to_owned()))
        .key("sk", AttributeValue::S(id.to_owned()))
        .update_expression("REMOVE disc")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn record_discovered_on_absent_connection_creates_nothing() {
    let Some(client) = moto_client("record_discovered_on_absent_connection_creates_nothing").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let id = uuid::Uuid::now_v7().to_string();
    let r = store
        .record_discovered(
            &id,
            "m",
            &discovered(OffsetDateTime::now_utc(), 5),
            ChangeSource::Headers,
        )
        .await;
    assert!(
        matches!(r, Err(vmx_domain::Error::NotFound { .. })),
        "{r:?}"
    );
    assert!(scan_all(&client, &table).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Failing DynamoDB

fn assert_unavailable(r: vmx_domain::Result<impl std::fmt::Debug>, secret: &str) {
    match &r {
        Err(vmx_domain::Error::Unavailable {
            retry_after_secs: Some(_),
            detail,
        }) => assert!(
            detail.contains("ProvisionedThroughputExceededException"),
            "{detail}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let text = format!("{r:?}");
    assert!(
        !text.contains(secret),
        "the error names no stored value: {text}"
    );
}

#[tokio::test]
async fn throttled_gateway_stores_are_unavailable() {
    let stub = Stub::dynamodb_error("ProvisionedThroughputExceededException").await;
    let client = Client::new(&config_for(&stub.url, &fast_options(2)).await);
    let usage = DynamoUsageStore::new(client.clone(), "throttled");
    let mut e = event("conn-secret-model", "model-x", hour_ago(1), 1);
    e.model = "model-canary".to_owned();
    assert_unavailable(usage.record(&e).await, "model-canary");
    assert_unavailable(
        usage
            .query("c", hour_ago(2), hour_ago(0), Granularity::Hour)
            .await,
        "USAGE#",
    );
    let keys = DynamoApiKeyStore::new(client.clone(), "throttled");
    let k = vmx_conformance::api_keys::key_record("throttled");
    assert_unavailable(keys.find_by_hash(&k.hash).await, &k.hash);
    assert_unavailable(keys.insert(&k).await, &k.hash);
    let store = DynamoStore::new(client, "throttled");
    assert_unavailable(
        store
            .record_discovered(
                "id",
                "model-canary",
                &discovered(OffsetDateTime::now_utc(), 5),
                ChangeSource::Headers,
            )
            .await,
        "model-canary",
    );
    assert!(stub.requests() >= 10, "each call was retried");
}
