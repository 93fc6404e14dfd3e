//! The connections API when AWS misbehaves: KMS disabled or throttled, DynamoDB throttling,
//! and the KMS call count of a warm data-key cache. moto serves the healthy side; loopback
//! stubs inject the errors moto cannot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vmx_api::auth::AdminAuth;
use vmx_api::client_ip::TrustedProxies;
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_aws::client::{AwsOptions, config_loader};
use vmx_aws::dynamo_ledger::DynamoLedger;
use vmx_aws::{DynamoApiKeyStore, DynamoStore, DynamoUsageStore, KmsKeyProvider};
use vmx_conformance::aws::moto;
use vmx_conformance::aws_stub::Stub;
use vmx_crypto::EnvelopeSealer;
use vmx_domain::clock::SystemClock;
use vmx_domain::secret::{ExposeSecret, SecretString};

const TOKEN: &str = "faults-admin-token";
const CANARY: &str = "sk-CANARY-faults-5e1d";

fn fast() -> AwsOptions {
    AwsOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..AwsOptions::default()
    }
}

async fn sdk(endpoint: &str) -> SdkConfig {
    config_loader(&fast())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

async fn moto_table(sdk: &SdkConfig) -> String {
    let table = format!("vmx-faults-{}", uuid::Uuid::new_v4().simple());
    vmx_aws::table::ensure_table(&aws_sdk_dynamodb::Client::new(sdk), &table)
        .await
        .unwrap();
    table
}

async fn moto_key(sdk: &SdkConfig) -> String {
    let out = aws_sdk_kms::Client::new(sdk)
        .create_key()
        .send()
        .await
        .unwrap();
    out.key_metadata().unwrap().key_id().to_owned()
}

fn app(store: DynamoStore, keys: KmsKeyProvider) -> (Router, Arc<ConnectionService>) {
    let sealer = Arc::new(EnvelopeSealer::new(
        Arc::new(keys),
        Duration::from_secs(300),
        100,
    ));
    let client = store.client().clone();
    let table = store.table().to_owned();
    let store = Arc::new(store);
    let service = Arc::new(ConnectionService::new(
        store.clone(),
        sealer,
        Arc::new(SystemClock),
    ));
    let gateway = Arc::new(Gateway::new(
        GatewayPorts {
            connections: service.clone(),
            ledger: Arc::new(DynamoLedger::new(client.clone(), table.clone())),
            api_keys: Arc::new(DynamoApiKeyStore::new(client.clone(), table.clone())),
            usage: Arc::new(DynamoUsageStore::new(client, table)),
            discovered: store,
            providers: Default::default(),
            clock: Arc::new(SystemClock),
        },
        GatewayOptions::default(),
    ));
    let state = AppState {
        connections: service.clone(),
        gateway,
        admin: AdminAuth::bearer(&SecretString::from(TOKEN.to_owned())),
        trusted_proxies: Arc::new(TrustedProxies::default()),
        max_body_bytes: 256 * 1024,
        console: Arc::new(vmx_api::console::Console::new(
            Default::default(),
            Arc::new(SystemClock),
        )),
    };
    (router(state), service)
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&bytes).into_owned())
}

fn create_body() -> Value {
    json!({"name": "prod", "provider": "openai", "config": {"apiKey": CANARY}})
}

#[tokio::test]
async fn a_warm_data_key_cache_makes_zero_kms_calls() {
    let Some(endpoint) = moto("a_warm_data_key_cache_makes_zero_kms_calls") else {
        return;
    };
    let sdk = sdk(&endpoint).await;
    let (table, key) = (moto_table(&sdk).await, moto_key(&sdk).await);
    let kms = KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk), key);
    let calls = kms.call_counter();
    let (router, service) = app(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table.clone()),
        kms,
    );
    let (status, _, body) = call(
        &router,
        Method::POST,
        "/v1/connections",
        Some(create_body()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id: Value = serde_json::from_str(&body).unwrap();
    let id = id["id"].as_str().unwrap().to_owned();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one GenerateDataKey"
    );
    let conn = service.get(&id).await.unwrap();
    for _ in 0..100 {
        let key = service.api_key(&conn).await.unwrap().unwrap();
        assert_eq!(key.expose_secret(), CANARY);
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "warm: 0 KMS calls per use"
    );

    // A cold instance (fresh cache, same key and table) decrypts once, then never again.
    let cold_kms = KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk), moto_key(&sdk).await);
    let cold_calls = cold_kms.call_counter();
    let (_, cold) = app(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table),
        cold_kms,
    );
    let conn = cold.get(&id).await.unwrap();
    for _ in 0..100 {
        cold.api_key(&conn).await.unwrap();
    }
    assert_eq!(
        cold_calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one Decrypt per cold start"
    );
}

#[tokio::test]
async fn kms_failures_are_clean_5xx_and_write_nothing() {
    let Some(endpoint) = moto("kms_failures_are_clean_5xx_and_write_nothing") else {
        return;
    };
    let sdk_moto = sdk(&endpoint).await;
    let table = moto_table(&sdk_moto).await;
    let cases = [
        (
            400,
            "DisabledException",
            "arn:aws:kms:us-east-1:123456789012:key/k is disabled.",
            None,
        ),
        (
            400,
            "AccessDeniedException",
            "User is not authorized to perform kms:GenerateDataKey",
            None,
        ),
        (400, "ThrottlingException", "Rate exceeded", Some("1")),
    ];
    for (status, code, message, retry) in cases {
        let stub = Stub::kms_error(status, code, message).await;
        let kms = KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk(&stub.url).await), "alias/vmx");
        let (router, _) = app(
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_moto), table.clone()),
            kms,
        );
        let (got, retry_after, body) = call(
            &router,
            Method::POST,
            "/v1/connections",
            Some(create_body()),
        )
        .await;
        assert_eq!(got, 503, "{code}: {body}");
        assert_eq!(retry_after.as_deref(), retry, "{code}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        assert!(
            !body.contains(CANARY) && !body.contains(code) && !body.contains("kms"),
            "{body}"
        );
        let (_, _, list) = call(&router, Method::GET, "/v1/connections", None).await;
        assert!(list.contains("\"data\":[]"), "nothing half-written: {list}");
    }
}

#[tokio::test]
async fn dynamodb_throttling_becomes_503_with_retry_after() {
    let stub = Stub::dynamodb_error("ProvisionedThroughputExceededException").await;
    let sdk = sdk(&stub.url).await;
    let kms = KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk), "alias/unused");
    let (router, _) = app(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "t"),
        kms,
    );
    let (status, retry_after, body) = call(&router, Method::GET, "/v1/connections", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    assert!(
        !body.contains("ProvisionedThroughput"),
        "no internal detail: {body}"
    );
    assert_eq!(stub.requests(), 3, "the SDK retried before giving up");
}
