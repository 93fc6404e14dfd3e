//! An API key's own `capacity` through the router: validated like a connection's on create
//! and PATCH (400 naming the field), returned by GET, and enforced on inference (the 429
//! says it was the key's limit, with a Retry-After).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use axum::http::StatusCode;
use local_app::{App, Resp, stub_app};
use serde_json::{Value, json};

async fn chat(app: &App, key: &str, connection: &str) -> Resp {
    app.chat_as(key, &format!("{connection}/gpt-4o-mini")).await
}

async fn connection(app: &App, name: &str, capacity: Value) -> String {
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": name, "provider": "openai", "config": {"apiKey": "sk-test"},
                    "capacity": capacity}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn key_capacity_is_validated_on_create_and_patch() {
    let (app, _stubs) = stub_app(vmx_providers::ProviderOptions::default(), 256 * 1024).await;
    for (capacity, field) in [
        (json!([{"requests": 5}]), "capacity[0].period"),
        (
            json!([{"period": "fortnight", "requests": 5}]),
            "capacity[0].period",
        ),
        (
            json!([{"period": "day", "requests": 0}]),
            "capacity[0].requests",
        ),
        (
            json!([{"period": "day", "requests": 5}, {"period": "minute"}]),
            "capacity[1]",
        ),
        (
            json!([{"period": "day", "requests": 5, "dimension": "source-ip"}]),
            "capacity[0].dimension",
        ),
        (json!({"period": "day"}), "capacity"),
    ] {
        let r = app
            .post("/v1/api-keys", &json!({"name": "k", "capacity": capacity}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    }
    let r = app
        .post(
            "/v1/api-keys",
            &json!({"name": "k", "capacity": [{"period": "minute", "requests": 5}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body["capacity"],
        json!([{"period": "minute", "requests": 5, "enabled": true}])
    );
    let path = format!("/v1/api-keys/{id}");
    let r = app
        .patch(&path, &json!({"capacity": [{"period": "hour"}]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "capacity[0]", "{}", r.text);
    let r = app.patch(&path, &json!({"name": "renamed"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = app
        .patch(
            &path,
            &json!({"capacity": [{"period": "day", "tokens": 1000, "enabled": false}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get(&path).await;
    assert_eq!(
        r.body["capacity"],
        json!([{"period": "day", "tokens": 1000, "enabled": false}])
    );
    let r = app.patch(&path, &json!({"capacity": null})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.get(&path).await.body["capacity"], json!([]));
    let r = app
        .patch(
            "/v1/api-keys/0190c0de-0000-7000-8000-00000000000f",
            &json!({"capacity": []}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

#[tokio::test]
async fn a_key_over_its_own_limit_gets_a_429_naming_the_key() {
    let (app, _stubs) = stub_app(vmx_providers::ProviderOptions::default(), 256 * 1024).await;
    // Day windows: the test never straddles one (unless run at midnight UTC).
    let a = connection(&app, "a", json!([{"period": "day", "requests": 100}])).await;
    connection(&app, "b", json!([])).await;
    let r = app
        .post(
            "/v1/api-keys",
            &json!({"name": "k", "capacity": [{"period": "day", "requests": 2}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (id, key) = (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["key"].as_str().unwrap().to_owned(),
    );
    for remaining in ["1", "0"] {
        let r = chat(&app, &key, "a").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(r.headers["x-ratelimit-remaining-requests"], remaining);
    }
    let r = chat(&app, &key, "a").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let e = &r.body["error"];
    assert_eq!(e["code"], "capacity_exceeded", "{}", r.text);
    assert_eq!(
        e["limit"],
        json!({"period": "day", "metric": "requests", "limit": 2, "scope": "apiKey", "apiKeyId": id}),
        "{}",
        r.text
    );
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(&format!("API key '{id}'")), "{message}");
    // Nothing of the connection's window was consumed by the refused request.
    let r = app.get(&format!("/v1/connections/{a}/capacity")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["windows"][0]["requests"]["used"], 2, "{}", r.text);
    // A key's capacity applies per connection: connection b still admits it.
    let r = chat(&app, &key, "b").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Raising the key's limit (PATCH) applies to the next request.
    let r = app
        .patch(
            &format!("/v1/api-keys/{id}"),
            &json!({"capacity": [{"period": "day", "requests": 3}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = chat(&app, &key, "a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
