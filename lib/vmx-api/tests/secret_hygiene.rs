//! A canary provider key and the admin token go through a full run: create, list, get,
//! update, rotate, inference success and every error path (a provider that echoes the key,
//! rejected credentials, 5xx, a panic inside a handler, capacity 429, a key checked before
//! it is saved, console sign-in with the admin token). No response body or
//! header, no log line and no stored byte may contain either canary in plaintext, base64 or
//! hex. The only test in this binary, because it owns the global log subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::Method;
use base64::Engine;
use local_app::{App, TOKEN, app_with};
use serde_json::{Value, json};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
};
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::StubServer;
use vmx_providers::{ProviderEndpoints, ProviderOptions, ProviderSet, http_client};

const CANARY: &str = "sk-CANARY-hygiene-4b1d9e7f";
const CANARY2: &str = "sk-CANARY-rotated-a8c3e2d0";

/// A provider whose handler panics.
struct Panics;

#[async_trait]
impl ChatProvider for Panics {
    async fn chat(&self, _: &Credentials, _: ChatRequest) -> Result<ChatCompletion, ProviderError> {
        panic!("provider adapter bug")
    }
    async fn chat_stream(
        &self,
        _: &Credentials,
        _: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        panic!("provider adapter bug")
    }
    async fn probe(&self, _: &Credentials, _: Option<&str>) -> Result<Probe, ProviderError> {
        panic!("provider adapter bug")
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every form a secret could leak in.
fn forms(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let mut out = vec![
        secret.to_owned(),
        b.iter().map(|x| format!("{x:02x}")).collect(),
        b.iter().map(|x| format!("{x:02X}")).collect(),
    ];
    // base64 of the secret at each of the three alignments it could sit at inside a
    // larger encoded value: drop the edge characters that depend on neighbours.
    for pad in 0..3 {
        let mut v = vec![b'x'; pad];
        v.extend_from_slice(b);
        for engine in [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let enc = engine.encode(&v);
            let core: String = enc
                .chars()
                .skip(pad * 2 + 2)
                .take(enc.len().saturating_sub(pad * 2 + 6))
                .collect();
            if core.len() >= 12 {
                out.push(core);
            }
        }
    }
    out
}

fn assert_clean(what: &str, haystack: &[u8]) {
    let text = String::from_utf8_lossy(haystack);
    for secret in [CANARY, CANARY2, TOKEN] {
        for form in forms(secret) {
            assert!(
                !text.contains(&form),
                "{what} contains a form of a secret: {form}"
            );
        }
    }
}

#[tokio::test]
async fn no_secret_leaks_anywhere() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let stub = StubServer::start(ProviderKind::OpenAi).await;
    let mut endpoints = ProviderEndpoints::default();
    endpoints.set(ProviderKind::OpenAi, stub.base_url.clone());
    let options = ProviderOptions::default();
    let set = ProviderSet::new(http_client(&options).unwrap(), endpoints, options);
    let mut providers: HashMap<ProviderKind, Arc<dyn ChatProvider>> = HashMap::new();
    providers.insert(ProviderKind::OpenAi, set.get(ProviderKind::OpenAi).unwrap());
    providers.insert(ProviderKind::Groq, Arc::new(Panics));
    let app: App = app_with(tempfile::tempdir().unwrap(), 256 * 1024, providers);

    let mut seen: Vec<u8> = Vec::new();
    let mut record = |r: &local_app::Resp| {
        seen.extend_from_slice(r.text.as_bytes());
        for (k, v) in &r.headers {
            seen.extend_from_slice(k.as_str().as_bytes());
            seen.extend_from_slice(v.as_bytes());
        }
    };

    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "prod", "provider": "openai", "config": {"apiKey": CANARY},
            "capacity": [{"period": "minute", "requests": 6}]}),
        )
        .await;
    record(&r);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "panicky", "provider": "groq", "config": {"apiKey": CANARY}}),
        )
        .await;
    record(&r);
    // Bad input that carries the secret must not echo it back.
    let bad = format!(
        r#"{{"name":"x","provider":"openai","config":{{"apiKey":"{CANARY}","extra":"{CANARY}"}}}}"#
    );
    record(
        &app.call(Method::POST, "/v1/connections", Some(&bad), &[])
            .await,
    );
    let bad =
        format!(r#"{{"name":"{CANARY}/x","provider":"openai","config":{{"apiKey":"{CANARY}"}}}}"#);
    record(
        &app.call(Method::POST, "/v1/connections", Some(&bad), &[])
            .await,
    );
    // A key checked before it is saved, and a check refused for an extra field.
    record(
        &app.post(
            "/v1/connections/check",
            &json!({"provider": "openai", "config": {"apiKey": CANARY}}),
        )
        .await,
    );
    record(
        &app.post(
            "/v1/connections/check",
            &json!({"provider": "openai", "config": {"apiKey": CANARY, "x": CANARY}}),
        )
        .await,
    );
    // Console sign-in with the admin token (and a wrong one), then the session.
    for token in [TOKEN, "wrong-token"] {
        let r = app
            .call(
                Method::POST,
                "/console/session",
                Some(&json!({ "token": token }).to_string()),
                &[("authorization", "")],
            )
            .await;
        record(&r);
        if let Some(cookie) = r.headers.get("set-cookie") {
            let cookie = cookie
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            record(
                &app.call(
                    Method::GET,
                    "/console/session",
                    None,
                    &[("authorization", ""), ("cookie", &cookie)],
                )
                .await,
            );
        }
    }
    record(&app.get("/v1/connections").await);
    record(&app.get(&format!("/v1/connections/{id}")).await);
    record(
        &app.patch(
            &format!("/v1/connections/{id}"),
            &json!({"description": "d"}),
        )
        .await,
    );
    record(
        &app.patch(
            &format!("/v1/connections/{id}"),
            &json!({"config": {"apiKey": CANARY2}}),
        )
        .await,
    );
    record(
        &app.call(
            Method::POST,
            &format!("/v1/connections/{id}/test"),
            None,
            &[],
        )
        .await,
    );

    let key = app.post("/v1/api-keys", &json!({"name": "k"})).await;
    let api_key = key.body["key"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for model in [
        "prod/stub-ok",
        "prod/stub-echo-key",
        "prod/stub-401",
        "prod/stub-500",
        "panicky/x",
        "prod/stub-ok",
        "prod/stub-ok",
        "prod/stub-ok",
        "prod/stub-ok",
    ] {
        for stream in [false, true] {
            let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();
            let r = app
                .call(
                    Method::POST,
                    "/v1/chat/completions",
                    Some(&body),
                    &[("authorization", &format!("Bearer {api_key}"))],
                )
                .await;
            statuses.push(r.status.as_u16());
            record(&r);
        }
    }
    assert!(
        statuses.contains(&200)
            && statuses.contains(&502)
            && statuses.contains(&500)
            && statuses.contains(&429),
        "{statuses:?}"
    );
    // The provider really did echo the key back: the stub recorded the request with it.
    assert!(stub.requests().iter().any(|r| {
        r.header("authorization")
            .is_some_and(|h| h.contains(CANARY2))
    }));

    // Give background work (none in tests: accounting is inline) and logs a moment.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_clean("responses", &seen);
    let logs = capture.0.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logs).contains("request"),
        "logs were captured"
    );
    assert_clean("logs", &logs);
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "vmx.redb") {
            assert_clean("the database", &std::fs::read(&path).unwrap());
        }
    }
    // The detector itself catches each form it claims to.
    for wrapped in [
        format!("key={CANARY};"),
        base64::engine::general_purpose::STANDARD.encode(format!("a{CANARY}bc")),
        base64::engine::general_purpose::STANDARD.encode(format!("ab{CANARY}")),
        CANARY
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ] {
        let caught = std::panic::catch_unwind(|| assert_clean("probe", wrapped.as_bytes()));
        assert!(caught.is_err(), "the detector missed {wrapped}");
    }
    let _ = Value::Null;
}
