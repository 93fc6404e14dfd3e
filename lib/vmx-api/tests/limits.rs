//! Limits (issue 8): every bound on what a caller or a provider can make vmx hold gives a
//! clear 4xx (or 502 for a provider), never an unbounded buffer or a crash: request body
//! size, JSON nesting depth, number of messages, header sizes (through a real socket),
//! provider response size, and stream idle time and total duration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, app, app_in, serve_tcp, stub_app};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmx_providers::ProviderOptions;

const JSON_ROUTES: [(&str, &str); 5] = [
    ("POST", "/v1/connections"),
    ("PATCH", "/v1/connections/{id}"),
    ("POST", "/v1/api-keys"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/messages"),
];

async fn connection(app: &App, name: &str, provider: &str) -> String {
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": name, "provider": provider, "config": {"apiKey": "sk-limits"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn send(app: &App, method: &str, path: &str, body: &str) -> Resp {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    app.call(method, path, Some(body), &[]).await
}

fn assert_error(r: &Resp, status: StatusCode, code: &str, field: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert_eq!(r.body["type"], "error", "{what}: {}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.text);
    assert_eq!(r.body["error"]["field"], field, "{what}: {}", r.text);
    assert_eq!(r.body["error"]["param"], field, "{what}: {}", r.text);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_naming_the_body() {
    let app = app_in(tempfile::tempdir().unwrap(), 4096);
    let id = connection(&app, "c", "openai").await;
    let big = json!({"name": "x".repeat(5000)}).to_string();
    for (method, path) in JSON_ROUTES {
        let path = path.replace("{id}", &id);
        let r = send(&app, method, &path, &big).await;
        assert_error(
            &r,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body",
            &path,
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4096"),
            "{}",
            r.text
        );
    }
    // The one route that reads raw bytes (an optional body) is bounded too.
    let r = send(&app, "POST", &format!("/v1/connections/{id}/test"), &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    // Exactly at the limit is accepted (and then validated).
    let at = format!("{{\"name\": \"{}\"}}", "y".repeat(4096 - 12));
    assert_eq!(at.len(), 4096);
    let r = send(&app, "POST", "/v1/api-keys", &at).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "name",
        "at limit",
    );
}

/// A client that declares 100 MB and keeps sending gets its 413 once the limit is crossed:
/// the server never buffers more than the limit, however much is announced or sent.
#[tokio::test]
async fn a_declared_length_over_the_limit_is_cut_at_the_limit() {
    let app = app_in(tempfile::tempdir().unwrap(), 64 * 1024);
    let addr = serve_tcp(app.router.clone()).await;
    let mut request = format!(
        "POST /v1/connections HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 104857600\r\n\r\n",
        local_app::TOKEN
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b' ', 256 * 1024));
    let (status, body) = raw(addr, &request).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
}

#[tokio::test]
async fn json_nested_deeper_than_the_parser_allows_is_400_not_a_crash() {
    let app = app();
    let id = connection(&app, "c", "openai").await;
    for depth in [129, 10_000, 40_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let inside = format!("{{\"name\": {arrays}}}");
        for body in [&arrays, &objects, &inside] {
            for (method, path) in JSON_ROUTES {
                let path = path.replace("{id}", &id);
                let r = send(&app, method, &path, body).await;
                assert_error(
                    &r,
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "body",
                    &format!("{path} depth {depth}"),
                );
            }
        }
    }
    // Just under the parser's limit (128) parses, and validation names the field.
    let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let r = send(
        &app,
        "POST",
        "/v1/connections",
        &format!("{{\"name\": {nested}}}"),
    )
    .await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "name",
        "depth 100",
    );
    // A deep (but parseable) config merge patch is validated, not recursed into trouble.
    let patch = format!(
        "{{\"config\": {{\"apiKey\": \"k\", \"x\": {}1{}}}}}",
        "{\"a\":".repeat(120),
        "}".repeat(120)
    );
    let r = send(&app, "PATCH", &format!("/v1/connections/{id}"), &patch).await;
    assert_error(
        &r,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "config.x",
        "deep patch",
    );
}

#[tokio::test]
async fn more_messages_than_allowed_is_400_naming_messages() {
    let app = app();
    let max = vmx_api::gateway::GatewayOptions::default().max_messages;
    let messages = |n: usize| vec![json!({"role": "user", "content": "x"}); n];
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let over = json!({"model": "missing/m", "max_tokens": 8, "messages": messages(max + 1)});
        let r = send(&app, "POST", path, &over.to_string()).await;
        assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "messages",
            path,
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&max.to_string())
        );
        // At the limit the count is fine; the unknown connection is what fails.
        let at = json!({"model": "missing/m", "max_tokens": 8, "messages": messages(max)});
        let r = send(&app, "POST", path, &at.to_string()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
    }
}

/// Sends raw bytes on a fresh connection and reads the status code and what follows (until
/// the server closes or 10 s pass). Write errors are ignored: a server may answer and close
/// before a huge request is fully sent.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf);
                    // Enough once the head and a short body are in.
                    if let Some(i) = text.find("\r\n\r\n")
                        && (text.len() > i + 4 || text.contains("content-length: 0"))
                    {
                        break;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn oversized_headers_are_refused_with_a_4xx() {
    let app = app();
    let addr = serve_tcp(app.router.clone()).await;
    let ok = |extra: &str| format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{extra}\r\n");

    // Ordinary sizes pass.
    let (status, text) = raw(
        addr,
        ok(&format!("x-pad: {}\r\n", "a".repeat(8 * 1024))).as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // One header of 1 MiB (hyper's read buffer is about 400 KiB): 431, connection closed.
    let (status, text) = raw(
        addr,
        ok(&format!("x-pad: {}\r\n", "a".repeat(1 << 20))).as_bytes(),
    )
    .await;
    assert!(
        status == 431,
        "1 MiB header: {status} {}",
        &text[..text.len().min(200)]
    );

    // Too many headers (hyper allows 100).
    let many: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (status, text) = raw(addr, ok(&many).as_bytes()).await;
    assert!(
        status == 431,
        "500 headers: {status} {}",
        &text[..text.len().min(200)]
    );

    // A huge credential on an authenticated route is refused, never a 5xx.
    let (status, text) = raw(
        addr,
        ok(&format!(
            "authorization: Bearer {}\r\n",
            "k".repeat(300 * 1024)
        ))
        .replace("/healthz", "/v1/connections")
        .as_bytes(),
    )
    .await;
    assert!(
        status == 431 || status == 400 || status == 401,
        "huge token: {status} {}",
        &text[..text.len().min(200)]
    );

    // The server still serves afterwards.
    let (status, _) = raw(addr, ok("").as_bytes()).await;
    assert_eq!(status, 200);
}

fn stub_options() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(10),
        stream_start_timeout: Duration::from_secs(10),
        stream_idle_timeout: Duration::from_secs(10),
        stream_max_duration: Duration::from_secs(60),
        ..ProviderOptions::default()
    }
}

async fn infer(app: &App, path: &str, body: Value) -> Resp {
    send(app, "POST", path, &body.to_string()).await
}

#[tokio::test]
async fn a_provider_response_over_the_bound_is_502_and_refunded() {
    let (app, _stubs) = stub_app(
        ProviderOptions {
            max_response_bytes: 64 * 1024,
            ..stub_options()
        },
        256 * 1024,
    )
    .await;
    let body = json!({"name": "big", "provider": "openai", "config": {"apiKey": "sk-limits"},
        "capacity": [{"period": "minute", "requests": 100, "tokens": 1000000}]});
    let r = app.post("/v1/connections", &body).await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    connection(&app, "big-claude", "anthropic").await;
    let r = infer(
        &app,
        "/v1/chat/completions",
        json!({"model": "big/stub-big", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "provider_malformed_response");
    assert_eq!(r.body["type"], "error");
    let r2 = infer(
        &app,
        "/v1/messages",
        json!({"model": "big-claude/stub-big", "max_tokens": 64,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r2.status, StatusCode::BAD_GATEWAY, "{}", r2.text);
    assert_eq!(r2.body["error"]["code"], "provider_malformed_response");
    // The failed call's reservation was given back.
    let cap = app.get(&format!("/v1/connections/{id}/capacity")).await;
    assert_eq!(cap.body["windows"][0]["tokens"]["used"], 0, "{}", cap.text);
}

/// Runs a streaming request and returns the whole event stream and how long it took.
async fn stream(app: &App, path: &str, model: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let r = infer(
        app,
        path,
        json!({"model": model, "stream": true, "max_tokens": 64,
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    (r, started.elapsed())
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event_after_the_idle_timeout() {
    let (app, _stubs) = stub_app(
        ProviderOptions {
            stream_idle_timeout: Duration::from_secs(1),
            ..stub_options()
        },
        256 * 1024,
    )
    .await;
    connection(&app, "s-openai", "openai").await;
    connection(&app, "s-claude", "anthropic").await;
    for (path, model) in [
        ("/v1/chat/completions", "s-openai/stub-stall"),
        ("/v1/chat/completions", "s-claude/stub-stall"),
        ("/v1/messages", "s-claude/stub-stall"),
    ] {
        let (r, took) = stream(&app, path, model).await;
        assert_eq!(r.status, StatusCode::OK, "{path} {model}: {}", r.text);
        assert!(took < Duration::from_secs(8), "{path} {model}: {took:?}");
        assert!(
            r.text.contains("\"code\":\"provider_timeout\""),
            "{path} {model}: {}",
            r.text
        );
        assert!(!r.text.contains("[DONE]"), "{}", r.text);
        if path == "/v1/messages" {
            assert!(r.text.contains("event: error\n"), "{}", r.text);
        }
    }
}

#[tokio::test]
async fn a_stream_past_its_total_duration_ends_with_an_error_event() {
    let (app, _stubs) = stub_app(
        ProviderOptions {
            stream_idle_timeout: Duration::from_secs(60),
            stream_max_duration: Duration::from_secs(1),
            ..stub_options()
        },
        256 * 1024,
    )
    .await;
    connection(&app, "d-openai", "openai").await;
    let (r, took) = stream(&app, "/v1/chat/completions", "d-openai/stub-stall").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        r.text.contains("\"code\":\"provider_timeout\""),
        "{}",
        r.text
    );
}
