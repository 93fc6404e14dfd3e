//! The inference function's AWS calls per request, counted at a proxy in front of moto:
//! a warm instance makes exactly one DynamoDB write before the provider call (admission),
//! at most two (plus a rare latency-maximum update) after it, no reads, no KMS, no STS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use vmx_api::{Access, router_with};
use vmx_aws::client::{AwsOptions, config_loader};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::api_key::NewApiKey;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::ExposeSecret;
use vmx_providers::testing::StubServer;

struct Setup {
    proxy: SerialProxy,
    app: Router,
    key: String,
    stub: StubServer,
}

async fn sdk(endpoint: &str) -> SdkConfig {
    config_loader(&AwsOptions::default())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

async fn setup(test: &str) -> Option<Setup> {
    let moto = vmx_conformance::aws::moto(test)?;
    let proxy = SerialProxy::start(&moto).await;
    let sdk = sdk(&proxy.url).await;
    let stub = StubServer::start(ProviderKind::OpenAi).await;
    let vars = [("VMX_OPENAI_BASE_URL", stub.base_url.clone())];
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-hot", &vars).await;
    // The admin side creates the connection and a key...
    let admin = vmx_lambda::AwsAdapters::new(&config, sdk.clone())
        .unwrap()
        .app_state(&config, vmx_api::providers::from_config(&config).unwrap());
    admin
        .connections
        .create(
            &json!({"name": "prod", "provider": "openai", "config": {"apiKey": "sk-hot-path"},
            "capacity": [{"period": "minute", "requests": 1000, "tokens": 1000000},
                         {"period": "day", "requests": 100000}]}),
        )
        .await
        .unwrap();
    let now = admin.gateway.clock.now();
    let (record, key) = NewApiKey::parse(&json!({"name": "app"}), now)
        .unwrap()
        .issue(uuid::Uuid::now_v7().to_string(), now)
        .unwrap();
    admin.gateway.api_keys.insert(&record).await.unwrap();
    // ...and a separate, cold inference instance serves the calls.
    let state = vmx_lambda::AwsAdapters::new(&config, sdk)
        .unwrap()
        .app_state(&config, vmx_api::providers::from_config(&config).unwrap());
    let app = vmx_lambda::with_lambda_context(router_with(state, |r| r.access != Access::Admin));
    Some(Setup {
        proxy,
        app,
        key: key.expose_secret().to_owned(),
        stub,
    })
}

async fn chat(s: &Setup, stream: bool) -> (u16, String) {
    let body = json!({"model": "prod/gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}]});
    let req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {}", s.key))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = s.app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn writes(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .map(String::as_str)
        .filter(|c| {
            [
                ".PutItem",
                ".UpdateItem",
                ".DeleteItem",
                ".TransactWriteItems",
            ]
            .iter()
            .any(|w| c.ends_with(w))
        })
        .collect()
}

#[tokio::test]
async fn warm_requests_make_one_write_before_and_at_most_two_after() {
    let Some(s) = setup("warm_requests_make_one_write_before_and_at_most_two_after").await else {
        return;
    };
    s.proxy.clear();
    let (status, body) = chat(&s, false).await;
    assert_eq!(status, 200, "{body}");
    let cold = s.proxy.calls();
    // Cold: the key by hash, the connection by name (claim + item), the prioritization
    // pools (once per connection cache TTL), one KMS Decrypt; and the key's first use in
    // this instance writes its lastUsedAt (a read of the key's record, then one
    // transaction), which warm requests within a minute do not repeat.
    assert_eq!(
        cold.iter().filter(|c| c.ends_with(".GetItem")).count(),
        5,
        "{cold:?}"
    );
    assert_eq!(
        cold.iter()
            .filter(|c| c.ends_with(".TransactWriteItems"))
            .count(),
        1,
        "{cold:?}"
    );
    assert_eq!(
        cold.iter().filter(|c| c.ends_with(".Decrypt")).count(),
        1,
        "{cold:?}"
    );
    assert!(!cold.iter().any(|c| c.contains("AssumeRole")));

    for stream in [false, true, false] {
        s.proxy.clear();
        let (status, body) = chat(&s, stream).await;
        assert_eq!(status, 200, "{body}");
        let calls = s.proxy.calls();
        assert!(
            calls.iter().all(|c| c.starts_with("DynamoDB_20120810.")),
            "no KMS, no STS on a warm instance: {calls:?}"
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.ends_with(".GetItem") || c.ends_with(".Query")),
            "no reads on a warm instance: {calls:?}"
        );
        let w = writes(&calls);
        assert_eq!(
            w.first(),
            Some(&"DynamoDB_20120810.UpdateItem"),
            "admission first: {calls:?}"
        );
        // The admission is the only write on the capacity item before the call; after it
        // come the reconciliation and the usage record (a new latency maximum may add one).
        assert_eq!(
            s.proxy.count_with(".UpdateItem", "CAP#"),
            2,
            "admission + reconciliation: {calls:?}"
        );
        assert!((3..=4).contains(&w.len()), "stream={stream}: {calls:?}");
    }
    // The provider received exactly the four calls, with the connection's key.
    let seen = s.stub.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].header("authorization"), Some("Bearer sk-hot-path"));
}

#[tokio::test]
async fn unchanged_provider_limits_are_written_once() {
    let Some(s) = setup("unchanged_provider_limits_are_written_once").await else {
        return;
    };
    s.proxy.clear();
    for _ in 0..4 {
        assert_eq!(chat(&s, false).await.0, 200);
    }
    // The discovered-capacity write is the one UpdateItem that sets `disc`.
    assert_eq!(
        s.proxy.count_with(".UpdateItem", "disc"),
        1,
        "{:?}",
        s.proxy.calls()
    );
}

#[tokio::test]
async fn every_write_is_one_the_inference_role_allows() {
    let Some(s) = setup("every_write_is_one_the_inference_role_allows").await else {
        return;
    };
    s.proxy.clear();
    // Admission, reconciliation, usage and the provider's limits (the first call sees them),
    // streamed and not.
    for stream in [false, true] {
        assert_eq!(chat(&s, stream).await.0, 200);
    }
    // Every item written falls under the LeadingKeys of InferenceRole in template.yaml, and
    // every key pattern there is one these calls need.
    vmx_conformance::template::assert_writes_allowed(
        "InferenceRole",
        &s.proxy.written_items(),
        true,
    );
}
