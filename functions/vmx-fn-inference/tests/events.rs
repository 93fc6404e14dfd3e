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

/// The bytes a streaming invocation returns to Lambda, as lambda_runtime 1.5 writes them
/// (`EventCompletionStreamingRequest`): the metadata prelude as JSON (a `content-type` of
/// `application/octet-stream` when the response has none), eight NUL bytes, then the body as
/// the router streams it. The event goes through `lambda_http::StreamAdapter`, the adapter
/// `run_with_streaming_response` puts in front of the router in `main`. The values of the
/// `x-ratelimit-*` headers and of `x-request-id` are replaced by `*`.
async fn stream_event(s: &Setup, name: &str, connection: &str) -> Vec<u8> {
    use futures_util::StreamExt;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/inference/");
    let text = std::fs::read_to_string(format!("{path}{name}"))
        .unwrap()
        .replace("API_KEY", &s.key)
        .replace("CONNECTION_NAME", connection);
    let event: lambda_http::request::LambdaRequest =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let adapter = lambda_http::StreamAdapter::from(s.app.clone());
    let invocation = lambda_http::LambdaEvent::new(event, lambda_http::Context::default());
    let resp = lambda_http::tower::ServiceExt::oneshot(adapter, invocation)
        .await
        .unwrap();
    let mut prelude = resp.metadata_prelude;
    prelude
        .headers
        .entry(axum::http::header::CONTENT_TYPE)
        .or_insert(axum::http::HeaderValue::from_static(
            "application/octet-stream",
        ));
    // The provider's live rate-limit counters pass through; their values change per call,
    // as does the request id (checked for its shape).
    for (name, value) in prelude.headers.iter_mut() {
        if name.as_str().starts_with("x-ratelimit-") {
            *value = axum::http::HeaderValue::from_static("*");
        } else if name.as_str() == "x-request-id" {
            assert!(value.as_bytes().starts_with(b"req_"), "{name}: {value:?}");
            *value = axum::http::HeaderValue::from_static("*");
        }
    }
    let mut out = serde_json::to_vec(&prelude).unwrap();
    out.extend_from_slice(&[0u8; 8]);
    let mut body = resp.stream;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// The provider stub stamps each completion with the time: `"created":<now>` becomes
/// `"created":0` so that the bytes can be compared whole.
fn without_timestamps(bytes: &[u8]) -> String {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(at + "\"created\":".len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push('0');
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn rest_api_streaming_events_answer_prelude_separator_and_body() {
    let Some(s) = setup("rest_api_streaming_events_answer_prelude_separator_and_body").await else {
        return;
    };
    let cases = [
        (
            "chat-completions-stream.rest.json",
            "events-openai",
            EXPECT_CHAT_STREAM,
        ),
        // The function URL's event (payload 2.0) streams the same bytes.
        (
            "chat-completions-stream.json",
            "events-openai",
            EXPECT_CHAT_STREAM,
        ),
        ("chat-completions.rest.json", "events-openai", EXPECT_CHAT),
        ("messages.rest.json", "events-anthropic", EXPECT_MESSAGES),
        ("models.rest.json", "", EXPECT_MODELS),
    ];
    let mut wrong = Vec::new();
    for (name, connection, expected) in cases {
        let got = without_timestamps(&stream_event(&s, name, connection).await);
        if got != expected {
            wrong.push(format!("{name}:\n got: {got:?}\nwant: {expected:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // The REST events reached the providers as the function URL events do.
    let sent = s.openai.last_request().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer sk-openai-event"));
    let sent = s.anthropic.last_request().unwrap();
    assert_eq!(sent.header("x-api-key"), Some("sk-anthropic-event"));
}

// What each REST event streams back, byte for byte (timestamps and the provider's live
// rate-limit counters normalized): the metadata prelude, the eight NUL bytes, the body.
const EXPECT_CHAT_STREAM: &str = concat!(
    "{\"statusCode\":200,\"headers\":{\"content-type\":\"text/event-stream\",\"cache-control\":\"no-cache\",\"x-ratelimit-limit-requests\":\"*\",\"x-ratelimit-remaining-requests\":\"*\",\"x-ratelimit-reset-requests\":\"*\",\"x-ratelimit-limit-tokens\":\"*\",\"x-ratelimit-remaining-tokens\":\"*\",\"x-ratelimit-reset-tokens\":\"*\",\"x-request-id\":\"*\"},\"cookies\":[]}",
    "\0\0\0\0\0\0\0\0",
    "data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hello!\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" You\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" said:\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" Say\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" hello\"},\"finish_reason\":null,\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":null}\n\n",
    "data: {\"choices\":[],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion.chunk\",\"system_fingerprint\":\"fp_stub\",\"usage\":{\"completion_tokens\":5,\"completion_tokens_details\":{\"reasoning_tokens\":0},\"prompt_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":0},\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n",
);

const EXPECT_CHAT: &str = concat!(
    "{\"statusCode\":200,\"headers\":{\"content-type\":\"application/json\",\"x-ratelimit-limit-requests\":\"*\",\"x-ratelimit-remaining-requests\":\"*\",\"x-ratelimit-reset-requests\":\"*\",\"x-ratelimit-limit-tokens\":\"*\",\"x-ratelimit-remaining-tokens\":\"*\",\"x-ratelimit-reset-tokens\":\"*\",\"x-request-id\":\"*\",\"content-length\":\"448\"},\"cookies\":[]}",
    "\0\0\0\0\0\0\0\0",
    "{\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"logprobs\":null,\"message\":{\"content\":\"Hello! You said: Say hello\",\"refusal\":null,\"role\":\"assistant\"}}],\"created\":0,\"id\":\"chatcmpl-stub\",\"model\":\"events-openai/gpt-4o-mini\",\"object\":\"chat.completion\",\"system_fingerprint\":\"fp_stub\",\"usage\":{\"completion_tokens\":5,\"completion_tokens_details\":{\"reasoning_tokens\":0},\"prompt_tokens\":5,\"prompt_tokens_details\":{\"cached_tokens\":0},\"total_tokens\":10}}",
);

const EXPECT_MESSAGES: &str = concat!(
    "{\"statusCode\":200,\"headers\":{\"content-type\":\"application/json\",\"x-ratelimit-limit-requests\":\"*\",\"x-ratelimit-remaining-requests\":\"*\",\"x-ratelimit-reset-requests\":\"*\",\"x-ratelimit-limit-tokens\":\"*\",\"x-ratelimit-remaining-tokens\":\"*\",\"x-ratelimit-reset-tokens\":\"*\",\"x-request-id\":\"*\",\"content-length\":\"321\"},\"cookies\":[]}",
    "\0\0\0\0\0\0\0\0",
    "{\"content\":[{\"text\":\"Hello! You said: Say hello\",\"type\":\"text\"}],\"id\":\"msg_stub01\",\"model\":\"events-anthropic/claude-3-5-haiku-latest\",\"role\":\"assistant\",\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"type\":\"message\",\"usage\":{\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"input_tokens\":5,\"output_tokens\":5}}",
);

const EXPECT_MODELS: &str = concat!(
    "{\"statusCode\":200,\"headers\":{\"content-type\":\"application/json\",\"x-request-id\":\"*\",\"content-length\":\"207\"},\"cookies\":[]}",
    "\0\0\0\0\0\0\0\0",
    "{\"data\":[{\"created\":0,\"id\":\"events-openai/gpt-4o-mini\",\"object\":\"model\",\"owned_by\":\"openai\"},{\"created\":0,\"id\":\"events-openai/gpt-4o\",\"object\":\"model\",\"owned_by\":\"openai\"}],\"object\":\"list\"}",
);
