//! Every sample event in `events/inference/` (function URL requests, payload format 2.0)
//! through the function's router as its `main` builds it, against moto (DynamoDB, KMS) and
//! stub OpenAI and Anthropic servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vmx_domain::api_key::NewApiKey;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::ExposeSecret;
use vmx_providers::testing::StubServer;

struct Setup {
    app: Router,
    key: String,
    openai: StubServer,
    anthropic: StubServer,
}

async fn setup(test: &str) -> Option<Setup> {
    vmx_conformance::aws::moto(test)?;
    let sdk = vmx_aws::load_sdk_config(&vmx_aws::client::AwsOptions::default()).await;
    let openai = StubServer::start(ProviderKind::OpenAi).await;
    let anthropic = StubServer::start(ProviderKind::Anthropic).await;
    let vars = [
        ("VMX_OPENAI_BASE_URL", openai.base_url.clone()),
        ("VMX_ANTHROPIC_BASE_URL", anthropic.base_url.clone()),
    ];
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-inference-events", &vars).await;
    let admin = vmx_lambda::AwsAdapters::new(&config, sdk)
        .unwrap()
        .app_state(&config, Default::default());
    for (name, provider, models) in [
        ("events-openai", "openai", json!(["gpt-4o-mini", "gpt-4o"])),
        ("events-anthropic", "anthropic", json!(null)),
    ] {
        admin
            .connections
            .create(
                &json!({"name": name, "provider": provider, "allowedModels": models,
                "config": {"apiKey": format!("sk-{provider}-event")},
                "capacity": [{"period": "minute", "requests": 100, "tokens": 1000000}]}),
            )
            .await
            .unwrap();
    }
    let now = admin.gateway.clock.now();
    let (record, key) = NewApiKey::parse(&json!({"name": "events"}), now)
        .unwrap()
        .issue(uuid::Uuid::now_v7().to_string(), now)
        .unwrap();
    admin.gateway.api_keys.insert(&record).await.unwrap();
    Some(Setup {
        app: vmx_fn_inference::app(&config).await.unwrap(),
        key: key.expose_secret().to_owned(),
        openai,
        anthropic,
    })
}

async fn send(s: &Setup, name: &str, connection: &str) -> (u16, String, Option<String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/inference/");
    let text = std::fs::read_to_string(format!("{path}{name}"))
        .unwrap()
        .replace("API_KEY", &s.key)
        .replace("CONNECTION_NAME", connection);
    let req = lambda_http::request::from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .map(axum::body::Body::new);
    let resp = s.app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        content_type,
    )
}

#[tokio::test]
async fn function_url_events_reach_the_providers() {
    let Some(s) = setup("function_url_events_reach_the_providers").await else {
        return;
    };
    let (status, body, _) = send(&s, "chat-completions.json", "events-openai").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    let sent = s.openai.last_request().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer sk-openai-event"));
    assert_eq!(sent.body["model"], "gpt-4o-mini");

    let (status, body, content_type) =
        send(&s, "chat-completions-stream.json", "events-openai").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    assert!(body.contains("chat.completion.chunk"), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let (status, body, _) = send(&s, "messages.json", "events-anthropic").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "message");
    let sent = s.anthropic.last_request().unwrap();
    assert_eq!(sent.header("x-api-key"), Some("sk-anthropic-event"));

    let (status, body, _) = send(&s, "models.json", "").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["events-openai/gpt-4o-mini", "events-openai/gpt-4o"],
        "{body}"
    );

    let (status, body, _) = send(&s, "healthz.json", "").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_function_url_event_without_a_key_is_refused() {
    let Some(s) = setup("a_function_url_event_without_a_key_is_refused").await else {
        return;
    };
    let before = s.openai.requests().len();
    let (status, body, _) = send(&s, "unauthenticated.json", "events-openai").await;
    assert_eq!(status, 401, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{body}");
    assert_eq!(
        s.openai.requests().len(),
        before,
        "nothing reached the provider"
    );
}
