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

/// The keys of `v` (an object), sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// The `required` list of a schema object, sorted.
fn required(schema: &Value) -> Vec<String> {
    let mut k: Vec<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn capacity_shows_each_pools_use() {
    let (app, _stubs) = stub_app(vmx_providers::ProviderOptions::default(), 256 * 1024).await;
    let (web_id, web) = key(&app, "web").await;
    let (batch_id, batch) = key(&app, "batch").await;
    // A day window (no roll-over between the calls and the view but at midnight) and a
    // source-ip window, which pools do not split.
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "c", "provider": "openai", "config": {"apiKey": "sk-test"},
                    "capacity": [{"period": "day", "requests": 10},
                                 {"period": "day", "requests": 100, "dimension": "source-ip"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let path = format!(
        "/v1/connections/{}/capacity",
        r.body["id"].as_str().unwrap()
    );
    // Without pools: no `pools`.
    let r = app.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["windows"][0].get("pools").is_none(), "{}", r.text);

    let def = json!({"pools": [
        {"name": "web", "rank": 1, "apiKeys": [web_id], "minReservation": 50, "maxReservation": 100},
        {"name": "batch", "rank": 2, "apiKeys": [batch_id], "minReservation": 0, "maxReservation": 30}]});
    assert_eq!(put(&app, &def).await.status, StatusCode::OK);
    let r = app.get(&path).await;
    let pools = &r.body["windows"][0]["pools"];
    let names: Vec<&str> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web", "batch", "default"], "{}", r.text);
    assert_eq!(
        pools[1],
        json!({"name": "batch", "rank": 2, "minReservation": 0, "maxReservation": 30, "active": false,
               "requests": {"min": 0, "max": 3, "used": 0, "allocation": 3, "remaining": 3},
               "tokens": {"min": null, "max": null, "used": 0, "allocation": null, "remaining": null}})
    );
    assert!(r.body["windows"][1].get("pools").is_none(), "{}", r.text);

    for _ in 0..3 {
        assert_eq!(chat(&app, &batch).await.status, StatusCode::OK);
    }
    let refused = chat(&app, &batch).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    for _ in 0..2 {
        assert_eq!(chat(&app, &web).await.status, StatusCode::OK);
    }
    let r = app.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let w = &r.body["windows"][0];
    assert_eq!(w["requests"]["used"], 5, "{}", r.text);
    let pools = &w["pools"];
    assert_eq!(pools[0]["active"], true);
    assert_eq!(
        pools[0]["requests"],
        json!({"min": 5, "max": 10, "used": 2, "allocation": 7, "remaining": 5})
    );
    // batch is at its maximum: the allocation its 429 reported.
    assert_eq!(pools[1]["active"], true);
    assert_eq!(
        pools[1]["requests"]["allocation"],
        refused.body["error"]["limit"]["poolAllocation"]
    );
    assert_eq!(
        pools[1]["requests"],
        json!({"min": 0, "max": 3, "used": 3, "allocation": 3, "remaining": 0})
    );
    // default: 10 - 5 used - 3 of web's unused minimum - 1 for web's rank.
    assert_eq!(pools[2]["rank"], Value::Null);
    assert_eq!(pools[2]["active"], false);
    assert_eq!(
        pools[2]["requests"],
        json!({"min": 0, "max": 10, "used": 0, "allocation": 1, "remaining": 1})
    );
    assert!(
        pools[0]["tokens"]["used"].as_u64().unwrap() > 0,
        "{}",
        r.text
    );

    // The shape is exactly the documented one.
    let doc = vmx_api::openapi::document();
    let window = &doc["components"]["schemas"]["CapacityUsage"]["properties"]["windows"]["items"];
    let pool = &window["properties"]["pools"]["items"];
    assert_eq!(pool["additionalProperties"], false);
    let metric = &pool["properties"]["requests"];
    for p in pools.as_array().unwrap() {
        assert_eq!(keys(p), required(pool), "{p}");
        assert_eq!(keys(&p["requests"]), required(metric), "{p}");
        assert_eq!(keys(&p["tokens"]), required(metric), "{p}");
    }
}
