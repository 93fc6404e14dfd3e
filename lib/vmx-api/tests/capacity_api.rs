//! Capacity enforcement through the router, with a scripted test-only provider: the 429
//! body and headers, x-ratelimit headers, reconciliation to reported usage, refunds, streams,
//! source-ip scoping that a forged X-Forwarded-For cannot escape, and the capacity view.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use local_app::{App, TOKEN, app_with};
use serde_json::{Value, json};
use tower::ServiceExt;
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
    StreamItem, Usage,
};
use vmx_domain::provider::ProviderKind;

/// Answers by model name: `ok` (usage 10 + 20), `fail` (HTTP 500), `stream` (two chunks and
/// usage 7 + 5), `stream-break` (one chunk, then the stream breaks).
#[derive(Default)]
struct Scripted {
    calls: AtomicUsize,
}

fn completion(text: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "x",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
}

fn chunk(text: &str) -> StreamItem {
    StreamItem::Chunk(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "x",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
    )
}

#[async_trait]
impl ChatProvider for Scripted {
    async fn chat(
        &self,
        _: &Credentials,
        req: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match req.model.as_str() {
            "fail" => Err(ProviderError::Upstream {
                status: 500,
                message: "boom".into(),
            }),
            _ => Ok(ChatCompletion {
                body: completion("hi"),
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 20,
                    ..Usage::default()
                }),
                limits: vec![],
            }),
        }
    }

    async fn chat_stream(
        &self,
        _: &Credentials,
        req: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let usage_chunk = StreamItem::Chunk(
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "x", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}),
        );
        let items: Vec<Result<StreamItem, ProviderError>> = match req.model.as_str() {
            "stream-break" => vec![
                Ok(chunk("partial answer")),
                Err(ProviderError::Malformed("cut".into())),
            ],
            // Two items ready at once, then one after the provider made the reader wait.
            "stream-paced" => {
                let later = futures_util::stream::once(async {
                    tokio::task::yield_now().await;
                    Ok::<_, ProviderError>(chunk("!"))
                });
                return Ok(ChatStream {
                    limits: vec![],
                    items: Box::pin(futures_util::StreamExt::chain(
                        futures_util::stream::iter(vec![Ok(chunk("Hel")), Ok(chunk("lo"))]),
                        later,
                    )),
                });
            }
            _ => vec![
                Ok(chunk("Hel")),
                Ok(chunk("lo")),
                Ok(usage_chunk),
                Ok(StreamItem::Usage(Usage {
                    prompt_tokens: 7,
                    completion_tokens: 5,
                    ..Usage::default()
                })),
            ],
        };
        Ok(ChatStream {
            limits: vec![],
            items: Box::pin(futures_util::stream::iter(items)),
        })
    }

    async fn probe(&self, _: &Credentials, _: Option<&str>) -> Result<Probe, ProviderError> {
        Ok(Probe::default())
    }
}

struct Fixture {
    app: App,
    provider: Arc<Scripted>,
}

fn fixture() -> Fixture {
    let provider = Arc::new(Scripted::default());
    let mut providers: HashMap<ProviderKind, Arc<dyn ChatProvider>> = HashMap::new();
    providers.insert(ProviderKind::OpenAi, provider.clone());
    Fixture {
        app: app_with(tempfile::tempdir().unwrap(), 256 * 1024, providers),
        provider,
    }
}

async fn connection(app: &App, name: &str, capacity: Value) -> String {
    let r = app
        .post("/v1/connections", &json!({"name": name, "provider": "openai", "config": {"apiKey": "sk-test"}, "capacity": capacity}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

struct Out {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn chat(app: &App, model: &str, extra: Value, peer: &str, xff: Option<&str>) -> Out {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let mut req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let mut req = req.body(Body::from(body.to_string())).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    Out {
        status,
        headers,
        text,
    }
}

const PEER: &str = "198.51.100.20:40000";

async fn capacity_view(app: &App, id: &str) -> Value {
    let r = app.get(&format!("/v1/connections/{id}/capacity")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn requests_limit_gives_429_with_retry_after_and_an_exact_body() {
    let f = fixture();
    connection(
        &f.app,
        "prod-openai",
        json!([{"period": "minute", "requests": 2}]),
    )
    .await;
    let first = chat(&f.app, "prod-openai/ok", json!({}), PEER, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    let reset = first.header("x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    assert_eq!(first.json()["model"], "prod-openai/ok");
    let second = chat(&f.app, "prod-openai/ok", json!({}), PEER, None).await;
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("0"));
    let third = chat(&f.app, "prod-openai/ok", json!({}), PEER, None).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = third.json();
    assert_eq!(body["error"]["code"], "capacity_exceeded");
    assert_eq!(
        body["error"]["message"],
        "connection 'prod-openai' reached its limit of 2 requests per minute"
    );
    assert_eq!(
        body["error"]["limit"],
        json!({"period": "minute", "metric": "requests", "limit": 2, "scope": "connection"})
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        f.provider.calls.load(Ordering::SeqCst),
        2,
        "a rejected request never reaches the provider"
    );
}

#[tokio::test]
async fn tokens_are_reconciled_to_reported_usage() {
    let f = fixture();
    let id = connection(
        &f.app,
        "tok",
        json!([{"period": "hour", "tokens": 100000}, {"period": "day", "requests": 1000}]),
    )
    .await;
    for _ in 0..3 {
        let r = chat(&f.app, "tok/ok", json!({"max_tokens": 500}), PEER, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("100000"));
    }
    let view = capacity_view(&f.app, &id).await;
    let hour = view["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["period"] == "hour")
        .unwrap();
    assert_eq!(
        hour["tokens"]["used"], 90,
        "3 x (10 + 20) reported tokens, not the 500-token reservations"
    );
    let day = view["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["period"] == "day")
        .unwrap();
    assert_eq!(day["requests"]["used"], 3);
    assert_eq!(day["requests"]["remaining"], 997);
}

#[tokio::test]
async fn a_failed_provider_call_is_refunded() {
    let f = fixture();
    let id = connection(
        &f.app,
        "refund",
        json!([{"period": "minute", "requests": 5, "tokens": 10000}]),
    )
    .await;
    let r = chat(&f.app, "refund/fail", json!({}), PEER, None).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "provider_error");
    let view = capacity_view(&f.app, &id).await;
    assert_eq!(view["windows"][0]["requests"]["used"], 0);
    assert_eq!(view["windows"][0]["tokens"]["used"], 0);
}

#[tokio::test]
async fn streams_are_reconciled_and_end_with_done() {
    let f = fixture();
    let id = connection(&f.app, "st", json!([{"period": "minute", "tokens": 50000}])).await;
    let r = chat(&f.app, "st/stream", json!({"stream": true}), PEER, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> = r.text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    assert!(
        !r.text.contains("\"usage\""),
        "usage only when stream_options.include_usage"
    );
    let content: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(content, "Hello");
    let with_usage = chat(
        &f.app,
        "st/stream",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
        PEER,
        None,
    )
    .await;
    assert!(
        with_usage.text.contains("\"total_tokens\":12"),
        "{}",
        with_usage.text
    );
    let view = capacity_view(&f.app, &id).await;
    assert_eq!(
        view["windows"][0]["tokens"]["used"], 24,
        "2 streams x 12 reported tokens"
    );
}

#[tokio::test]
async fn events_ready_together_go_out_as_one_frame_and_none_waits_for_a_later_one() {
    let f = fixture();
    connection(&f.app, "pc", json!([{"period": "minute", "tokens": 50000}])).await;
    let body = json!({"model": "pc/stream-paced", "stream": true,
                      "messages": [{"role": "user", "content": "Say hello"}]});
    let mut req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(PEER.parse::<SocketAddr>().unwrap()));
    let resp = f.app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(String::from_utf8(data.to_vec()).unwrap());
        }
    }
    let events = |f: &str| f.matches("data: ").count();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(
        events(&frames[0]),
        2,
        "the two ready events together: {frames:?}"
    );
    assert!(frames[0].contains("\"Hel\"") && frames[0].contains("\"lo\""));
    assert!(frames[1].contains("\"!\"") && frames[1].ends_with("data: [DONE]\n\n"));
    assert_eq!(events(&frames.concat()), 4);
}

#[tokio::test]
async fn a_broken_stream_ends_with_an_error_event() {
    let f = fixture();
    let id = connection(
        &f.app,
        "br",
        json!([{"period": "minute", "requests": 10, "tokens": 50000}]),
    )
    .await;
    let r = chat(
        &f.app,
        "br/stream-break",
        json!({"stream": true}),
        PEER,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let last = r
        .text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .last()
        .unwrap();
    let err: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["error"]["code"], "provider_malformed_response");
    assert!(!r.text.contains("[DONE]"));
    let view = capacity_view(&f.app, &id).await;
    // Tokens were produced, so the request stays counted and tokens are charged for what
    // was streamed (prompt + partial output), not the whole reservation.
    assert_eq!(view["windows"][0]["requests"]["used"], 1);
    let used = view["windows"][0]["tokens"]["used"].as_u64().unwrap();
    assert!(used > 0 && used < 100, "{used}");
}

#[tokio::test]
async fn lifetime_caps_have_no_retry_after() {
    let f = fixture();
    connection(
        &f.app,
        "life",
        json!([{"period": "lifetime", "requests": 1}]),
    )
    .await;
    assert_eq!(
        chat(&f.app, "life/ok", json!({}), PEER, None).await.status,
        StatusCode::OK
    );
    let r = chat(&f.app, "life/ok", json!({}), PEER, None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").is_none());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("permanent")
    );
}

#[tokio::test]
async fn a_prompt_that_can_never_fit_is_rejected_up_front() {
    let f = fixture();
    connection(&f.app, "tiny", json!([{"period": "minute", "tokens": 20}])).await;
    let long = "word ".repeat(200);
    let r = chat(
        &f.app,
        "tiny/ok",
        json!({"messages": [{"role": "user", "content": long}]}),
        PEER,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").is_none());
    let e = &r.json()["error"];
    assert!(e["message"].as_str().unwrap().contains("never fit"), "{e}");
    assert!(e["estimatedPromptTokens"].as_u64().unwrap() > 20);
    // A small limit is not locked out by the default output reservation.
    let ok = chat(
        &f.app,
        "tiny/ok",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
        PEER,
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(f.provider.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_a_source_ip_limit() {
    let f = fixture();
    let id = connection(
        &f.app,
        "perip",
        json!([{"period": "minute", "requests": 1, "dimension": "source-ip"}]),
    )
    .await;
    assert_eq!(
        chat(&f.app, "perip/ok", json!({}), PEER, Some("1.1.1.1"))
            .await
            .status,
        StatusCode::OK
    );
    let forged = chat(&f.app, "perip/ok", json!({}), PEER, Some("2.2.2.2")).await;
    assert_eq!(
        forged.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        forged.text
    );
    let body = forged.json();
    assert_eq!(body["error"]["limit"]["scope"], "source-ip");
    assert_eq!(body["error"]["limit"]["sourceIp"], "198.51.100.20");
    // Another peer has its own counter.
    assert_eq!(
        chat(&f.app, "perip/ok", json!({}), "203.0.113.5:1", None)
            .await
            .status,
        StatusCode::OK
    );
    let view = capacity_view(&f.app, &id).await;
    assert_eq!(view["windows"][0]["sourceIpCount"], 2);
}

#[tokio::test]
async fn two_addresses_of_one_ipv6_64_share_a_source_ip_window() {
    let f = fixture();
    let id = connection(
        &f.app,
        "per64",
        json!([{"period": "minute", "requests": 1, "dimension": "source-ip"}]),
    )
    .await;
    let first = chat(&f.app, "per64/ok", json!({}), "[2001:db8:1:2::a]:1", None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    // Another address of the same /64 is the same caller.
    let same = chat(
        &f.app,
        "per64/ok",
        json!({}),
        "[2001:db8:1:2:ffff::b]:1",
        None,
    )
    .await;
    assert_eq!(same.status, StatusCode::TOO_MANY_REQUESTS, "{}", same.text);
    assert_eq!(same.json()["error"]["limit"]["sourceIp"], "2001:db8:1:2::");
    // The next /64 has its own window.
    let other = chat(&f.app, "per64/ok", json!({}), "[2001:db8:1:3::a]:1", None).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    let view = capacity_view(&f.app, &id).await;
    assert_eq!(view["windows"][0]["sourceIpCount"], 2);
}

#[tokio::test]
async fn disabled_entries_are_not_enforced_and_changes_apply_at_once() {
    let f = fixture();
    let id = connection(
        &f.app,
        "dis",
        json!([{"period": "minute", "requests": 1, "enabled": false}]),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            chat(&f.app, "dis/ok", json!({}), PEER, None).await.status,
            StatusCode::OK
        );
    }
    let r = f
        .app
        .patch(
            &format!("/v1/connections/{id}"),
            &json!({"capacity": [{"period": "minute", "requests": 1}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        chat(&f.app, "dis/ok", json!({}), PEER, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        chat(&f.app, "dis/ok", json!({}), PEER, None).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn routing_errors_use_openai_shapes() {
    let f = fixture();
    let id = connection(&f.app, "route", json!([])).await;
    let r = f
        .app
        .patch(
            &format!("/v1/connections/{id}"),
            &json!({"allowedModels": ["gpt-4o"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let cases = [
        ("nosuch/gpt-4o", StatusCode::NOT_FOUND, "model_not_found"),
        ("route/o3", StatusCode::FORBIDDEN, "model_not_allowed"),
        ("no-slash", StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (model, status, code) in cases {
        let r = chat(&f.app, model, json!({}), PEER, None).await;
        assert_eq!(r.status, status, "{model}: {}", r.text);
        let e = &r.json()["error"];
        assert_eq!(e["code"], code);
        assert!(e["type"].is_string() && e["message"].is_string());
    }
    assert_eq!(
        chat(&f.app, "route/gpt-4o", json!({}), PEER, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(f.provider.calls.load(Ordering::SeqCst), 1);
}
