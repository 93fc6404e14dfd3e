//! Inference end to end inside one process: the real router, the real provider adapters,
//! stub provider servers speaking each wire format, API keys, capacity, usage, discovered
//! limits, test-connection, and secret hygiene when a provider echoes the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, app_with};
use serde_json::{Value, json};
use vmx_domain::inference::ChatProvider;
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::StubServer;
use vmx_providers::{ProviderEndpoints, ProviderOptions, ProviderSet, http_client};

const PROVIDER_KEY: &str = "sk-CANARY-provider-7d1e9a";
const KINDS: [ProviderKind; 5] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Groq,
    ProviderKind::Perplexity,
];

struct Fixture {
    app: App,
    stubs: HashMap<ProviderKind, StubServer>,
    providers: HashMap<ProviderKind, Arc<dyn ChatProvider>>,
}

impl Fixture {
    /// The same data in a new process (fresh caches, a new key provider), as after a
    /// restart or on a cold instance.
    fn restart(self) -> Self {
        let Fixture {
            app,
            stubs,
            providers,
        } = self;
        let App {
            router,
            gateway,
            service,
            sealer,
            keys,
            dir,
        } = app;
        // Closes the database before it is opened again.
        drop((router, gateway, service, sealer, keys));
        Fixture {
            app: app_with(dir, 256 * 1024, providers.clone()),
            stubs,
            providers,
        }
    }
}

async fn fixture() -> Fixture {
    let mut endpoints = ProviderEndpoints::default();
    let mut stubs = HashMap::new();
    for kind in KINDS {
        let stub = StubServer::start(kind).await;
        endpoints.set(kind, stub.base_url.clone());
        stubs.insert(kind, stub);
    }
    let options = ProviderOptions {
        request_timeout: Duration::from_secs(2),
        stream_start_timeout: Duration::from_secs(2),
        stream_idle_timeout: Duration::from_secs(2),
        ..ProviderOptions::default()
    };
    let set = ProviderSet::new(http_client(&options).unwrap(), endpoints, options);
    let providers: HashMap<ProviderKind, Arc<dyn ChatProvider>> =
        KINDS.iter().map(|k| (*k, set.get(*k).unwrap())).collect();
    Fixture {
        app: app_with(tempfile::tempdir().unwrap(), 256 * 1024, providers.clone()),
        stubs,
        providers,
    }
}

async fn connection(app: &App, name: &str, kind: ProviderKind, extra: Value) -> String {
    let mut body = json!({"name": name, "provider": kind.id(), "config": {"apiKey": PROVIDER_KEY},
        "capacity": [{"period": "minute", "requests": 1000, "tokens": 10000000}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = app.post("/v1/connections", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn chat(app: &App, key: &str, model: &str, extra: Value) -> Resp {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    app.call(
        Method::POST,
        "/v1/chat/completions",
        Some(&body.to_string()),
        &[("authorization", &format!("Bearer {key}"))],
    )
    .await
}

async fn new_key(app: &App, body: Value) -> (String, String) {
    let r = app.post("/v1/api-keys", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.body["key"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    )
}

async fn tokens_used(app: &App, id: &str) -> u64 {
    let r = app.get(&format!("/v1/connections/{id}/capacity")).await;
    r.body["windows"][0]["tokens"]["used"].as_u64().unwrap()
}

#[tokio::test]
async fn every_provider_answers_streams_and_is_reconciled() {
    let f = fixture().await;
    let (key, _) = new_key(&f.app, json!({"name": "all"})).await;
    for kind in KINDS {
        let name = format!("c-{}", kind.id());
        let id = connection(&f.app, &name, kind, json!({})).await;
        let r = chat(
            &f.app,
            &key,
            &format!("{name}/stub-ok"),
            json!({"max_tokens": 64}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        let content = r.body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.contains("Say hello"), "{kind}: {content}");
        let total = r.body["usage"]["total_tokens"].as_u64().unwrap();
        assert!(total > 0);
        assert_eq!(
            tokens_used(&f.app, &id).await,
            total,
            "{kind}: counters equal reported usage"
        );

        let s = chat(
            &f.app,
            &key,
            &format!("{name}/stub-ok"),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
        assert_eq!(s.status, StatusCode::OK, "{kind}");
        let events: Vec<&str> = s.text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"), "{kind}: {}", s.text);
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.contains("Say hello"), "{kind}: {text}");
        let stream_total = chunks
            .iter()
            .find_map(|c| c["usage"]["total_tokens"].as_u64())
            .unwrap_or_else(|| panic!("{kind}: no usage chunk"));
        assert!(
            chunks
                .iter()
                .all(|c| c["model"] == format!("{name}/stub-ok"))
        );
        assert_eq!(
            tokens_used(&f.app, &id).await,
            total + stream_total,
            "{kind}"
        );
        // The provider got the connection's key and the provider model id.
        let last = f.stubs[&kind].last_request().unwrap();
        assert!(
            !last.body.to_string().contains(&name),
            "{kind}: the connection prefix is stripped"
        );
    }
}

#[tokio::test]
async fn provider_failures_map_cleanly_and_are_refunded() {
    let f = fixture().await;
    let (key, _) = new_key(&f.app, json!({})).await;
    let id = connection(&f.app, "fail", ProviderKind::OpenAi, json!({})).await;
    let cases = [
        (
            "stub-429",
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
        ),
        (
            "stub-401",
            StatusCode::BAD_GATEWAY,
            "provider_credentials_rejected",
        ),
        (
            "stub-echo-key",
            StatusCode::BAD_GATEWAY,
            "provider_credentials_rejected",
        ),
        (
            "stub-400",
            StatusCode::BAD_REQUEST,
            "provider_invalid_request",
        ),
        ("stub-500", StatusCode::BAD_GATEWAY, "provider_error"),
        (
            "stub-timeout",
            StatusCode::GATEWAY_TIMEOUT,
            "provider_timeout",
        ),
        (
            "stub-malformed",
            StatusCode::BAD_GATEWAY,
            "provider_malformed_response",
        ),
    ];
    for (model, status, code) in cases {
        let r = chat(&f.app, &key, &format!("fail/{model}"), json!({})).await;
        assert_eq!(r.status, status, "{model}: {}", r.text);
        assert_eq!(r.body["error"]["code"], code, "{model}");
        assert!(
            !r.text.contains(PROVIDER_KEY) && !r.text.contains("CANARY"),
            "{model} leaked the key: {}",
            r.text
        );
        for (_, v) in r.headers.iter() {
            assert!(!v.to_str().unwrap_or("").contains("CANARY"));
        }
        if model == "stub-429" {
            assert_eq!(
                r.headers["retry-after"], "7",
                "the provider's Retry-After is passed on"
            );
        }
        if code == "provider_credentials_rejected" {
            assert_eq!(r.headers["x-should-retry"], "false");
        }
    }
    let view = f.app.get(&format!("/v1/connections/{id}/capacity")).await;
    assert_eq!(
        view.body["windows"][0]["requests"]["used"], 0,
        "every failure refunded"
    );
    assert_eq!(view.body["windows"][0]["tokens"]["used"], 0);
    // Streams that break end with an error event, never a hang.
    for model in ["stub-cut", "stub-reset", "stub-stall", "stub-stream-error"] {
        let r = chat(
            &f.app,
            &key,
            &format!("fail/{model}"),
            json!({"stream": true}),
        )
        .await;
        if r.status == StatusCode::BAD_GATEWAY {
            // Broke before the first event: a plain error response.
            assert!(r.body["error"]["code"].is_string(), "{model}: {}", r.text);
            continue;
        }
        assert_eq!(r.status, StatusCode::OK, "{model}");
        let last = r
            .text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .last()
            .unwrap();
        let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert!(v["error"]["code"].is_string(), "{model}: {}", r.text);
        assert!(!r.text.contains("[DONE]"), "{model}");
    }
    // The usage statistics counted each failure by class.
    let usage = f.app.get(&format!("/v1/connections/{id}/usage")).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    let errors: u64 = usage.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["errors"]
                .as_object()
                .map_or(0, |e| e.values().map(|v| v.as_u64().unwrap()).sum::<u64>())
        })
        .sum();
    assert_eq!(errors, 11, "{}", usage.text);
}

#[tokio::test]
async fn api_keys_are_scoped_revocable_and_shown_once() {
    let f = fixture().await;
    connection(
        &f.app,
        "a",
        ProviderKind::OpenAi,
        json!({"allowedModels": ["stub-ok"]}),
    )
    .await;
    connection(&f.app, "b", ProviderKind::Groq, json!({})).await;
    let (key, id) = new_key(&f.app, json!({"name": "only-a", "connections": ["a"]})).await;
    assert!(key.starts_with("vmx_sk_"));
    assert_eq!(
        chat(&f.app, &key, "a/stub-ok", json!({})).await.status,
        StatusCode::OK
    );
    let denied = chat(&f.app, &key, "b/stub-ok", json!({})).await;
    assert_eq!(denied.status, StatusCode::NOT_FOUND, "{}", denied.text);
    // The key is never shown again.
    let listed = f.app.get("/v1/api-keys").await;
    assert!(!listed.text.contains(&key));
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    // /v1/models lists what the key may use.
    let models = f
        .app
        .call(
            Method::GET,
            "/v1/models",
            None,
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await;
    assert_eq!(models.status, StatusCode::OK);
    assert_eq!(
        models.body["data"],
        json!([{"id": "a/stub-ok", "object": "model",
        "created": models.body["data"][0]["created"], "owned_by": "openai"}])
    );
    // Revoked: 401 at once.
    assert_eq!(
        f.app.delete(&format!("/v1/api-keys/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    let r = chat(&f.app, &key, "a/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Unknown and malformed keys too; x-api-key works like Bearer.
    for k in [
        "vmx_sk_unknownunknownunknownunknownunknownunknow",
        "nonsense",
    ] {
        assert_eq!(
            chat(&f.app, k, "a/stub-ok", json!({})).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let (key2, _) = new_key(&f.app, json!({})).await;
    let body =
        json!({"model": "a/stub-ok", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = f
        .app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&body),
            &[("authorization", ""), ("x-api-key", &key2)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // An expired key is refused.
    let past = f
        .app
        .post(
            "/v1/api-keys",
            &json!({"expiresAt": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        past.status,
        StatusCode::BAD_REQUEST,
        "expiry must be in the future"
    );
    assert_eq!(past.body["error"]["field"], "expiresAt");
}

/// A key's scope holds connection ids, resolved when the key is created: a name or id that
/// names no connection is refused (so a key cannot wait for a connection of that name to
/// appear), renames change nothing, a connection may not take an id as its name, and keys
/// stored with names before this still work by name.
#[tokio::test]
async fn api_key_scopes_hold_connection_ids_resolved_at_creation() {
    let f = fixture().await;
    let early = f
        .app
        .post("/v1/api-keys", &json!({"connections": ["team-a"]}))
        .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.text);
    assert_eq!(early.body["error"]["field"], "connections[0]");
    assert!(early.text.contains("team-a"), "{}", early.text);

    let a = connection(&f.app, "team-a", ProviderKind::OpenAi, json!({})).await;
    let b = connection(&f.app, "team-b", ProviderKind::Groq, json!({})).await;
    let unknown = f
        .app
        .post(
            "/v1/api-keys",
            &json!({"connections": ["team-a", "0190c0de-0000-7000-8000-000000000000"]}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    assert_eq!(unknown.body["error"]["field"], "connections[1]");

    // By name or by id, stored as ids (once each).
    let r = f
        .app
        .post(
            "/v1/api-keys",
            &json!({"connections": ["team-a", b.as_str(), a.as_str()]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["connections"], json!([a.as_str(), b.as_str()]));
    let key = r.body["key"].as_str().unwrap().to_owned();
    let got = f
        .app
        .get(&format!("/v1/api-keys/{}", r.body["id"].as_str().unwrap()))
        .await;
    assert_eq!(got.body["connections"], json!([a.as_str(), b.as_str()]));

    // A connection may not be named like an id, on create or rename.
    let impostor = f
        .app
        .post(
            "/v1/connections",
            &json!({"name": b.as_str(), "provider": "openai", "config": {"apiKey": "sk-x"}}),
        )
        .await;
    assert_eq!(
        impostor.status,
        StatusCode::BAD_REQUEST,
        "{}",
        impostor.text
    );
    assert_eq!(impostor.body["error"]["field"], "name");
    let rename = f
        .app
        .patch(
            &format!("/v1/connections/{a}"),
            &json!({"name": b.as_str()}),
        )
        .await;
    assert_eq!(rename.status, StatusCode::BAD_REQUEST, "{}", rename.text);
    assert_eq!(rename.body["error"]["field"], "name");

    // A rename keeps the key's reach; a new connection with the old name is out of it.
    let renamed = f
        .app
        .patch(
            &format!("/v1/connections/{a}"),
            &json!({"name": "team-a-renamed"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text);
    connection(&f.app, "team-a", ProviderKind::OpenAi, json!({})).await;
    let r = chat(&f.app, &key, "team-a-renamed/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = chat(&f.app, &key, &format!("{a}/stub-ok"), json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "by id: {}", r.text);
    let r = chat(&f.app, &key, "team-a/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // A key stored with names (before scopes held ids) still reaches its connections by name.
    let generated = vmx_domain::api_key::generate_key().unwrap();
    let mut legacy = vmx_domain::api_key::NewApiKey::parse(
        &json!({"connections": ["team-b"]}),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .into_record(
        "0190c0de-0000-7000-8000-0000000000aa".into(),
        &generated,
        time::OffsetDateTime::now_utc(),
    );
    legacy.connections = Some(vec!["team-b".into()]);
    f.app.gateway.api_keys.insert(&legacy).await.unwrap();
    use vmx_domain::secret::ExposeSecret;
    let legacy_key = generated.key.expose_secret().to_owned();
    let r = chat(&f.app, &legacy_key, "team-b/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = chat(&f.app, &legacy_key, "team-a/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// A connection the key may not use answers exactly as one that does not exist (status and
/// body, naming only what the caller sent), and its credentials are never decrypted: no
/// key-provider call and no data-key cache lookup, in a process that has cached nothing.
#[tokio::test]
async fn out_of_scope_connections_answer_as_missing_before_any_decrypt() {
    let f = fixture().await;
    connection(&f.app, "a", ProviderKind::OpenAi, json!({})).await;
    let b = connection(&f.app, "b", ProviderKind::Groq, json!({})).await;
    let (key, _) = new_key(&f.app, json!({"connections": ["a"]})).await;
    let f = f.restart();
    let before = f.app.sealer.cache_stats();

    let missing = chat(&f.app, &key, "nope/stub-ok", json!({})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
    for (sent, by) in [("b", "name"), (b.as_str(), "id")] {
        let denied = chat(&f.app, &key, &format!("{sent}/stub-ok"), json!({})).await;
        assert_eq!(denied.status, missing.status, "by {by}: {}", denied.text);
        // Each response has its own request id; the rest is the same.
        let without_id = |text: &str| {
            let mut body: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(body["error"]["request_id"].is_string(), "{text}");
            body["error"]["request_id"].take();
            body
        };
        assert_eq!(
            without_id(&denied.text.replace(&format!("'{sent}'"), "'nope'")),
            without_id(&missing.text),
            "by {by}: the same body as a connection that does not exist"
        );
        let streamed = chat(
            &f.app,
            &key,
            &format!("{sent}/stub-ok"),
            json!({"stream": true}),
        )
        .await;
        assert_eq!(streamed.status, StatusCode::NOT_FOUND, "{}", streamed.text);
    }
    let after = f.app.sealer.cache_stats();
    assert_eq!(f.app.keys.decrypts(), 0, "no data key unwrapped");
    assert_eq!(
        (after.hits, after.misses),
        (before.hits, before.misses),
        "no data-key cache lookup"
    );

    // The connection in scope is decrypted once and served.
    let r = chat(&f.app, &key, "a/stub-ok", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(f.app.keys.decrypts(), 1);
}

#[tokio::test]
async fn discovered_limits_are_stored_per_model_with_the_right_periods() {
    let f = fixture().await;
    let (key, _) = new_key(&f.app, json!({})).await;
    let groq = connection(&f.app, "groq", ProviderKind::Groq, json!({})).await;
    let anthropic = connection(&f.app, "claude", ProviderKind::Anthropic, json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            chat(&f.app, &key, "groq/llama-3.1-8b-instant", json!({}))
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            chat(&f.app, &key, "claude/claude-sonnet-4-5", json!({}))
                .await
                .status,
            StatusCode::OK
        );
    }
    let g = f.app.get(&format!("/v1/connections/{groq}")).await;
    let limits = g.body["discoveredCapacity"]["models"]["llama-3.1-8b-instant"]["capacity"]
        .as_array()
        .unwrap()
        .clone();
    let find = |metric: &str| {
        limits
            .iter()
            .find(|l| l["metric"] == metric)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        find("requests")["period"],
        "day",
        "Groq's request limit is per day"
    );
    assert_eq!(find("tokens")["period"], "minute");
    let a = f.app.get(&format!("/v1/connections/{anthropic}")).await;
    let metrics: Vec<String> =
        a.body["discoveredCapacity"]["models"]["claude-sonnet-4-5"]["capacity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["metric"].as_str().unwrap().to_owned())
            .collect();
    for m in ["requests", "tokens", "input-tokens", "output-tokens"] {
        assert!(metrics.contains(&m.to_owned()), "{metrics:?}");
    }
}

#[tokio::test]
async fn test_connection_tells_bad_credentials_from_outages() {
    let f = fixture().await;
    let good = connection(&f.app, "good", ProviderKind::OpenAi, json!({})).await;
    let r = f
        .app
        .call(
            Method::POST,
            &format!("/v1/connections/{good}/test"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["ok"], true);
    assert!(r.body["latencyMs"].is_u64());
    let bad = f
        .app
        .post("/v1/connections", &json!({"name": "bad", "provider": "anthropic", "config": {"apiKey": "invalid-key-123"}}))
        .await;
    let bad = bad.body["id"].as_str().unwrap().to_owned();
    let r = f
        .app
        .call(
            Method::POST,
            &format!("/v1/connections/{bad}/test"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["error"]["class"], "credentials_rejected");
    assert!(!r.text.contains("invalid-key-123"));
    // A provider that cannot be reached is a network problem, not bad credentials.
    drop(f.stubs);
    let r = f
        .app
        .call(
            Method::POST,
            &format!("/v1/connections/{good}/test"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.body["ok"], false);
    assert_eq!(r.body["error"]["class"], "network", "{}", r.text);
}
