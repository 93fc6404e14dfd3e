//! `/v1/prioritization` through the router: validation naming the field, the stored
//! definition, and inference calls split by pool (the 429 names the pool and its allocation).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, stub_app};
use serde_json::{Value, json};

async fn key(app: &App, name: &str) -> (String, String) {
    let r = app.post("/v1/api-keys", &json!({"name": name})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["key"].as_str().unwrap().to_owned(),
    )
}

async fn put(app: &App, body: &Value) -> Resp {
    app.call(
        Method::PUT,
        "/v1/prioritization",
        Some(&body.to_string()),
        &[],
    )
    .await
}

async fn chat(app: &App, key: &str) -> Resp {
    app.chat_as(key, "c/gpt-4o-mini").await
}

#[tokio::test]
async fn pools_are_validated_stored_and_enforced() {
    let (app, _stubs) = stub_app(vmx_providers::ProviderOptions::default(), 256 * 1024).await;
    let (web_id, web) = key(&app, "web").await;
    let (batch_id, batch) = key(&app, "batch").await;
    let r = app.get("/v1/prioritization").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["pools"], json!([]));
    assert_eq!(r.body["defaultPool"]["maxReservation"], 100);

    let pool = |name: &str, rank: u32, keys: &[&str], min: u8, max: u8| json!({"name": name, "rank": rank, "apiKeys": keys, "minReservation": min, "maxReservation": max});
    for (body, field) in [
        (
            json!({"pools": [pool("web", 1, &[&web_id], 60, 100), pool("batch", 2, &[&batch_id], 50, 50)]}),
            "pools[1].minReservation",
        ),
        (
            json!({"pools": [pool("web", 1, &[&web_id], 0, 100), pool("batch", 2, &[&web_id], 0, 50)]}),
            "pools[1].apiKeys[0]",
        ),
        (
            json!({"pools": [pool("web", 1, &["no-such-key"], 0, 100)]}),
            "pools[0].apiKeys[0]",
        ),
        (
            json!({"pools": [pool("web", 1, &[], 0, 100), pool("web", 2, &[], 0, 100)]}),
            "pools[1].name",
        ),
    ] {
        let r = put(&app, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{}", r.text);
    }
    let def = json!({"pools": [pool("web", 1, &[&web_id], 50, 100), pool("batch", 2, &[&batch_id], 0, 30)]});
    let r = put(&app, &def).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.get("/v1/prioritization").await;
    assert_eq!(r.body["pools"], def["pools"]);

    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "c", "provider": "openai", "config": {"apiKey": "sk-test"},
                    "capacity": [{"period": "minute", "requests": 10}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // batch: at most 30% of 10 requests.
    for _ in 0..3 {
        let r = chat(&app, &batch).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = chat(&app, &batch).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["error"]["limit"]["pool"], "batch", "{}", r.text);
    assert_eq!(r.body["error"]["limit"]["poolAllocation"], 3, "{}", r.text);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("pool 'batch' is allocated 3 requests"),
        "{message}"
    );
    // web has the rest.
    for _ in 0..7 {
        let r = chat(&app, &web).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = chat(&app, &web).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["error"]["limit"]["pool"], "web");
}
