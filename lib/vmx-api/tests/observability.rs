//! Operations through the real router and provider adapters on stub providers: `GET /metrics`
//! scraped and parsed after known traffic (counts by connection, model, error class and
//! limit kind), and request ids on every response and error body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, stub_app};
use serde_json::{Value, json};
use vmx_providers::ProviderOptions;

fn options() -> ProviderOptions {
    ProviderOptions {
        request_timeout: Duration::from_secs(2),
        stream_start_timeout: Duration::from_secs(2),
        stream_idle_timeout: Duration::from_secs(2),
        ..ProviderOptions::default()
    }
}

async fn connection(app: &App, name: &str, requests_per_minute: u64) -> String {
    let body = json!({"name": name, "provider": "openai", "config": {"apiKey": "sk-test-1"},
        "capacity": [{"period": "minute", "requests": requests_per_minute}]});
    let r = app.post("/v1/connections", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn chat(app: &App, key: &str, model: &str, headers: &[(&str, &str)]) -> Resp {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
    let auth = format!("Bearer {key}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    app.call(
        Method::POST,
        "/v1/chat/completions",
        Some(&body.to_string()),
        &all,
    )
    .await
}

/// The samples of an OpenMetrics/Prometheus text exposition: `name{labels} value` per line,
/// comments skipped; label values unescaped for `\"` and `\\`.
fn parse_samples(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (head, value) = line.rsplit_once(' ').expect("a value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match head.split_once('{') {
            None => (head.to_owned(), HashMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = HashMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.push(chars.next().expect("escaped char")),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key, val);
                }
                (name.to_owned(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The sum of the samples named `name` whose labels include every pair of `want`.
fn sum(
    samples: &[(String, HashMap<String, String>, f64)],
    name: &str,
    want: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

#[tokio::test]
async fn metrics_count_the_requests_sent_by_connection_model_class_and_limit() {
    let (app, _stubs) = stub_app(options(), 256 * 1024).await;
    let roomy = connection(&app, "roomy", 1000).await;
    let tight = connection(&app, "tight", 1).await;
    let r = app.post("/v1/api-keys", &json!({})).await;
    let key = r.body["key"].as_str().unwrap().to_owned();

    for (model, status) in [
        ("roomy/stub-ok", StatusCode::OK),
        ("roomy/stub-ok", StatusCode::OK),
        ("roomy/stub-ok", StatusCode::OK),
        ("roomy/stub-500", StatusCode::BAD_GATEWAY),
        ("roomy/stub-429", StatusCode::TOO_MANY_REQUESTS),
        ("tight/stub-ok", StatusCode::OK),
        ("tight/stub-ok", StatusCode::TOO_MANY_REQUESTS),
        ("tight/stub-ok", StatusCode::TOO_MANY_REQUESTS),
    ] {
        let r = chat(&app, &key, model, &[]).await;
        assert_eq!(r.status, status, "{model}: {}", r.text);
    }

    let r = app.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    assert!(r.text.ends_with("# EOF\n"));
    let s = parse_samples(&r.text);
    let roomy = roomy.as_str();
    let tight = tight.as_str();

    // Every request that reached a connection, by model.
    assert_eq!(sum(&s, "vmx_requests_total", &[("connection", roomy)]), 5.0);
    assert_eq!(
        sum(
            &s,
            "vmx_requests_total",
            &[
                ("connection", roomy),
                ("model", "stub-ok"),
                ("provider", "openai")
            ]
        ),
        3.0
    );
    assert_eq!(sum(&s, "vmx_requests_total", &[("connection", tight)]), 3.0);
    // Errors by class.
    let errors = |c: &str, class: &str| {
        sum(
            &s,
            "vmx_errors_total",
            &[("connection", c), ("error_class", class)],
        )
    };
    assert_eq!(errors(roomy, "upstream"), 1.0);
    assert_eq!(errors(roomy, "rate_limited"), 1.0);
    assert_eq!(errors(tight, "capacity_exceeded"), 2.0);
    assert_eq!(sum(&s, "vmx_errors_total", &[]), 4.0);
    // 429s by the limit that answered.
    assert_eq!(
        sum(
            &s,
            "vmx_throttled_total",
            &[("connection", roomy), ("limit_kind", "provider")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &s,
            "vmx_throttled_total",
            &[("connection", tight), ("limit_kind", "requests_per_minute")]
        ),
        2.0
    );
    // Latency observed once per request; tokens as the stub reported them.
    assert_eq!(sum(&s, "vmx_latency_ms_count", &[]), 8.0);
    assert!(sum(&s, "vmx_completion_tokens_total", &[("connection", roomy)]) > 0.0);
    // The tight connection's one window was full after its admitted request.
    assert_eq!(
        sum(&s, "vmx_utilization_percent", &[("connection", tight)]),
        100.0
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_returned_in_headers_and_error_bodies() {
    let (app, _stubs) = stub_app(options(), 256 * 1024).await;
    connection(&app, "c", 1000).await;
    let r = app.post("/v1/api-keys", &json!({})).await;
    let key = r.body["key"].as_str().unwrap().to_owned();

    // A caller's safe id comes back as it was sent, on success and on errors.
    let ok = chat(&app, &key, "c/stub-ok", &[("x-request-id", "caller-42")]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["x-request-id"], "caller-42");
    let failed = chat(&app, &key, "c/stub-500", &[("x-request-id", "caller-43")]).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(failed.headers["x-request-id"], "caller-43");
    assert_eq!(failed.body["error"]["request_id"], "caller-43");

    // An unsafe id is replaced by a new one, which the body repeats.
    let bad = "x\"y z";
    let r = app
        .call(
            Method::GET,
            "/v1/nothing-here",
            None,
            &[("x-request-id", bad)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_") && id != bad, "{id}");
    assert_eq!(r.body["error"]["request_id"], Value::String(id.clone()));

    // Without one, each request gets its own, also on public and admin routes and on 401s.
    let a = app.get("/healthz").await.headers["x-request-id"].clone();
    let b = app.get("/v1/connections").await.headers["x-request-id"].clone();
    assert_ne!(a, b);
    let denied = chat(&app, "vmx_sk_wrong", "c/stub-ok", &[]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        denied.body["error"]["request_id"].as_str(),
        denied.headers["x-request-id"].to_str().ok()
    );

    // A stream's error event carries the id too.
    let body = json!({"model": "c/stub-stream-error", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let r = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&body.to_string()),
            &[
                ("authorization", &format!("Bearer {key}")),
                ("x-request-id", "stream-7"),
            ],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "stream-7");
    assert!(r.text.contains("\"request_id\":\"stream-7\""), "{}", r.text);
}
