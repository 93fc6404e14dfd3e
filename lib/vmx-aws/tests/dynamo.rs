//! DynamoStore against moto (the real DynamoDB wire protocol on loopback), and against a stub
//! that throttles, for the retry and error mapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{BillingMode, KeyType, TimeToLiveStatus};
use vmx_aws::DynamoStore;
use vmx_aws::table::{TTL_ATTRIBUTE, ensure_table};
use vmx_conformance::store::{self as conformance, Store};
use vmx_domain::Error;
use vmx_domain::ports::ConnectionStore;

use common::{Stub, config_for, env_config, fast_options, fresh_table, moto};

async fn moto_client(test: &str) -> Option<Client> {
    moto(test)?;
    Some(Client::new(&env_config().await))
}

/// A client whose requests reach moto one at a time: DynamoDB applies a transaction
/// atomically, moto does not under concurrency, and the suite's concurrent cases test our
/// conditions, not moto's threading.
async fn serial_client(test: &str) -> Option<(Client, vmx_conformance::moto_proxy::SerialProxy)> {
    let endpoint = moto(test)?;
    let proxy = vmx_conformance::moto_proxy::SerialProxy::start(&endpoint).await;
    let client = Client::new(&config_for(&proxy.url, &fast_options(3)).await);
    Some((client, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_on_dynamodb() {
    let Some((client, _proxy)) = serial_client("conformance_suite_on_dynamodb").await else {
        return;
    };
    conformance::run_all(|| {
        let client = client.clone();
        async move {
            let table = fresh_table(&client).await;
            Arc::new(DynamoStore::new(client, table)) as Store
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_on_one_shared_table() {
    // Every case again, all in one table: the cases must not see each other's data.
    let Some((client, _proxy)) = serial_client("conformance_suite_on_one_shared_table").await
    else {
        return;
    };
    let table = fresh_table(&client).await;
    let store: Store = Arc::new(DynamoStore::new(client, table));
    conformance::run_all(|| {
        let store = Arc::clone(&store);
        async move { store }
    })
    .await;
}

#[tokio::test]
async fn table_schema_and_ttl() {
    let Some(client) = moto_client("table_schema_and_ttl").await else {
        return;
    };
    let table = fresh_table(&client).await;
    // Idempotent.
    ensure_table(&client, &table).await.expect("ensure again");

    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe");
    let t = described.table().expect("table");
    let keys: Vec<(String, KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("pk".to_owned(), KeyType::Hash),
            ("sk".to_owned(), KeyType::Range)
        ]
    );
    assert_eq!(
        t.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    assert!(t.global_secondary_indexes().is_empty());

    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .expect("describe ttl");
    let d = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(d.attribute_name(), Some(TTL_ATTRIBUTE));
    assert_eq!(d.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn item_layout() {
    let Some(client) = moto_client("item_layout").await else {
        return;
    };
    let table = fresh_table(&client).await;
    let store = DynamoStore::new(client.clone(), table.clone());
    let c = conformance::api_key_connection("layout");
    store.insert(&c).await.expect("insert");

    let scan = client
        .scan()
        .table_name(&table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan");
    let mut layouts: Vec<(String, String, BTreeSet<String>)> = scan
        .items()
        .iter()
        .map(|item| {
            let s = |k: &str| item[k].as_s().expect("string key").clone();
            (s("pk"), s("sk"), item.keys().cloned().collect())
        })
        .collect();
    layouts.sort();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        layouts,
        vec![
            (
                "CONN".to_owned(),
                c.id.clone(),
                set(&["pk", "sk", "name", "version", "doc", "disc"])
            ),
            (
                "NAME#layout".to_owned(),
                "NAME".to_owned(),
                set(&["pk", "sk", "connectionId"])
            ),
        ],
        "connection and name items, neither with {TTL_ATTRIBUTE}"
    );
}

fn assert_throttled(err: &Error, secret_bits: &[&str]) {
    match err {
        Error::Unavailable {
            retry_after_secs: Some(s),
            detail,
        } => {
            assert!(*s >= 1, "retry after at least a second");
            assert!(
                detail.contains("ProvisionedThroughputExceededException"),
                "detail names the code: {detail}"
            );
        }
        other => panic!("expected Unavailable with a retry hint, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    for bit in secret_bits {
        assert!(!text.contains(bit), "error text leaks {bit}: {text}");
    }
}

#[tokio::test]
async fn throttling_is_retried_then_unavailable() {
    let stub = Stub::dynamodb_error("ProvisionedThroughputExceededException").await;
    let config = config_for(&stub.url, &fast_options(3)).await;
    let store = DynamoStore::new(Client::new(&config), "throttled");

    let err = store.get("some-id").await.expect_err("throttled get");
    assert_throttled(&err, &[]);
    assert_eq!(
        stub.requests(),
        3,
        "the SDK tried 3 times (standard retry mode)"
    );
    assert!(
        stub.seen()
            .iter()
            .all(|s| s.target == "DynamoDB_20120810.GetItem")
    );

    let c = conformance::api_key_connection("throttled-name");
    let err = store.insert(&c).await.expect_err("throttled insert");
    let tag = match &c.config {
        vmx_domain::connection::ProviderConfig::ApiKey { api_key } => api_key.ct.clone(),
        vmx_domain::connection::ProviderConfig::Aws(_) => unreachable!(),
    };
    assert_throttled(&err, &[&tag, "throttled-name", "XChaCha20"]);
    assert_eq!(stub.requests(), 6, "3 more attempts for the transaction");

    let err = store.list(10, None).await.expect_err("throttled list");
    assert_throttled(&err, &[]);
    assert_eq!(stub.requests(), 9);
}

#[tokio::test]
async fn more_attempts_are_configurable() {
    let stub = Stub::dynamodb_error("ThrottlingException").await;
    let config = config_for(&stub.url, &fast_options(5)).await;
    let store = DynamoStore::new(Client::new(&config), "throttled");
    let err = store
        .get_by_name("x")
        .await
        .expect_err("throttled get_by_name");
    assert!(
        matches!(
            err,
            Error::Unavailable {
                retry_after_secs: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(stub.requests(), 5);
}

#[tokio::test]
async fn transaction_conflicts_are_retried_then_unavailable() {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None]","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"},{"Code":"None"}]}"#;
    let stub = Stub::start(400, "application/x-amz-json-1.0", body.to_owned()).await;
    let config = config_for(&stub.url, &fast_options(3)).await;
    let store = DynamoStore::new(Client::new(&config), "conflicted");
    let c = conformance::api_key_connection("conflicted");
    match store.insert(&c).await {
        Err(Error::Unavailable {
            retry_after_secs: Some(_),
            detail,
        }) => assert!(detail.contains("TransactionConflict"), "{detail}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The SDK does not retry a cancelled transaction; the store does, 4 times in all.
    assert_eq!(stub.requests(), 4);
}

#[tokio::test]
async fn condition_failure_on_name_is_name_taken_from_the_wire() {
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled","CancellationReasons":[{"Code":"None"},{"Code":"ConditionalCheckFailed","Message":"The conditional request failed"}]}"#;
    let stub = Stub::start(400, "application/x-amz-json-1.0", body.to_owned()).await;
    let config = config_for(&stub.url, &fast_options(3)).await;
    let store = DynamoStore::new(Client::new(&config), "taken");
    let c = conformance::api_key_connection("taken-name");
    match store.insert(&c).await {
        Err(Error::NameTaken(n)) => assert_eq!(n, "taken-name"),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert_eq!(stub.requests(), 1, "a failed condition is not retried");
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    // A port nobody listens on: bind, read the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = config_for(&format!("http://127.0.0.1:{port}"), &fast_options(2)).await;
    let store = DynamoStore::new(Client::new(&config), "nowhere");
    match store.get("x").await {
        Err(Error::Unavailable {
            retry_after_secs: Some(_),
            ..
        }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn other_service_errors_are_internal() {
    let stub = Stub::dynamodb_error("ResourceNotFoundException").await;
    let config = config_for(&stub.url, &fast_options(3)).await;
    let store = DynamoStore::new(Client::new(&config), "missing-table");
    match store.get("x").await {
        Err(Error::Internal { detail }) => {
            assert!(detail.contains("ResourceNotFoundException"), "{detail}");
        }
        other => panic!("expected Internal, got {other:?}"),
    }
    assert_eq!(stub.requests(), 1, "not retried");
}
