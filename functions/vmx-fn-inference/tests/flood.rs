//! A flood of unknown API keys at the inference router, with DynamoDB (moto) behind a proxy
//! that counts every call: a key failing the checksum costs no read at all, a well-formed
//! key the table does not hold costs one read and is then answered from the negative cache,
//! and a valid key's lookup (and `GET /v1/models`) stays cached throughout.
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
use vmx_domain::api_key::{
    KEY_CHECKSUM_CHARS, KEY_PREFIX, KEY_RANDOM_CHARS, NewApiKey, generate_key, key_shape,
};
use vmx_domain::secret::ExposeSecret;

async fn sdk(endpoint: &str) -> SdkConfig {
    config_loader(&AwsOptions::default())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

async fn status(app: &Router, method: &str, path: &str, key: &str) -> (u16, String) {
    let body = json!({"model": "prod/gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}]});
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(if method == "POST" {
            Body::from(body.to_string())
        } else {
            Body::empty()
        })
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `vmx_sk_` and 49 random base62 characters: the shape of a key, but (almost always) not
/// its checksum; one that happens to pass is drawn again.
fn forged_key(state: &mut u64) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    loop {
        let mut key = KEY_PREFIX.to_owned();
        for _ in 0..KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS {
            // xorshift64: reproducible, and enough to make every key different.
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            key.push(char::from(BASE62[(*state % 62) as usize]));
        }
        if key_shape(&key).is_none() {
            return key;
        }
    }
}

#[tokio::test]
async fn a_flood_of_unknown_keys_costs_no_reads_and_keeps_the_valid_key_cached() {
    let Some(moto) = vmx_conformance::aws::moto(
        "a_flood_of_unknown_keys_costs_no_reads_and_keeps_the_valid_key_cached",
    ) else {
        return;
    };
    let proxy = SerialProxy::start(&moto).await;
    let sdk = sdk(&proxy.url).await;
    // TTLs far longer than the test, so that nothing expires while it runs.
    let vars = [
        ("VMX_CONNECTION_CACHE_TTL_SECS", "3600".to_owned()),
        ("VMX_UNKNOWN_CACHE_SECS", "3600".to_owned()),
    ];
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-flood", &vars).await;
    let admin = vmx_lambda::AwsAdapters::new(&config, sdk.clone())
        .unwrap()
        .app_state(&config, vmx_api::providers::from_config(&config).unwrap());
    admin
        .connections
        .create(&json!({"name": "prod", "provider": "openai",
            "config": {"apiKey": "sk-flood"}, "allowedModels": ["gpt-4o-mini"]}))
        .await
        .unwrap();
    let now = admin.gateway.clock.now();
    let (record, key) = NewApiKey::parse(&json!({"name": "app"}), now)
        .unwrap()
        .issue(uuid::Uuid::now_v7().to_string(), now)
        .unwrap();
    admin.gateway.api_keys.insert(&record).await.unwrap();
    let valid = key.expose_secret().to_owned();
    let state = vmx_lambda::AwsAdapters::new(&config, sdk)
        .unwrap()
        .app_state(&config, vmx_api::providers::from_config(&config).unwrap());
    let app = vmx_lambda::with_lambda_context(router_with(state, |r| r.access != Access::Admin));

    // Warm: the valid key and the model catalog are read once.
    let (s, body) = status(&app, "GET", "/v1/models", &valid).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("prod/gpt-4o-mini"), "{body}");
    proxy.clear();

    // 10,000 forged keys: every one 401, not one DynamoDB call; the valid key and
    // `GET /v1/models` answer from the caches between them.
    let mut seed = 0x9E37_79B9_7F4A_7C15;
    for i in 0..10_000 {
        let forged = forged_key(&mut seed);
        let (s, body) = status(&app, "POST", "/v1/chat/completions", &forged).await;
        assert_eq!(s, 401, "{body}");
        if i % 500 == 0 {
            assert_eq!(status(&app, "GET", "/v1/models", &valid).await.0, 200);
        }
    }
    assert_eq!(
        proxy.calls(),
        Vec::<String>::new(),
        "no call for forged keys"
    );

    // Keys that pass the checksum but were never issued: one read each, then the negative
    // cache answers.
    let unknown: Vec<String> = (0..200)
        .map(|_| generate_key().unwrap().key.expose_secret().to_owned())
        .collect();
    for round in 0..3 {
        for (i, k) in unknown.iter().enumerate() {
            let (s, body) = status(&app, "POST", "/v1/chat/completions", k).await;
            assert_eq!(s, 401, "round {round}: {body}");
            if i % 50 == 0 {
                assert_eq!(status(&app, "GET", "/v1/models", &valid).await.0, 200);
            }
        }
    }
    let calls = proxy.calls();
    assert_eq!(
        proxy.count_with(".GetItem", "APIKEY#"),
        unknown.len(),
        "one lookup per unknown key: {calls:?}"
    );
    assert_eq!(
        calls.len(),
        unknown.len(),
        "nothing else was read: {calls:?}"
    );
}
