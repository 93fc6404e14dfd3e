//! Usage by caller (issue 17): every usage record carries the API key that made it; the
//! connection's usage can be grouped by key, a key's usage is served on its own, and a key's
//! `lastUsedAt` is kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, stub_app};
use serde_json::{Value, json};
use vmx_providers::ProviderOptions;

async fn new_key(app: &App, body: Value) -> (String, String) {
    let r = app.post("/v1/api-keys", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.body["key"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    )
}

async fn chat(app: &App, key: Option<&str>, model: &str) -> Resp {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello"}]});
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = app
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&body.to_string()),
            &headers,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r
}

fn requests_by_key(data: &Value) -> Vec<(Option<String>, u64)> {
    data.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["apiKeyId"].as_str().map(str::to_owned),
                b["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_is_recorded_per_key_and_served_by_connection_and_by_key() {
    let options = ProviderOptions {
        request_timeout: Duration::from_secs(5),
        ..ProviderOptions::default()
    };
    let (app, _stubs) = stub_app(options, 256 * 1024).await;
    let mut ids = Vec::new();
    for name in ["oa", "other"] {
        let r = app
            .post(
                "/v1/connections",
                &json!({"name": name, "provider": "openai", "config": {"apiKey": "sk-usage"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let conn_id = ids[0].clone();
    let (key1, id1) = new_key(&app, json!({"name": "one"})).await;
    let (key2, id2) = new_key(&app, json!({"name": "two", "connections": ["oa"]})).await;
    let fresh = app.get(&format!("/v1/api-keys/{id1}")).await;
    assert_eq!(fresh.body["lastUsedAt"], Value::Null);

    chat(&app, Some(&key1), "oa/gpt-4o-mini").await;
    chat(&app, Some(&key1), "oa/gpt-4o-mini").await;
    chat(&app, Some(&key1), "other/gpt-4o-mini").await;
    chat(&app, Some(&key2), "oa/gpt-4o-mini").await;
    chat(&app, None, "oa/gpt-4o-mini").await;

    // By model (the default): every caller summed, no key named.
    let r = app.get(&format!("/v1/connections/{conn_id}/usage")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        requests_by_key(&r.body["data"]),
        vec![(None, 4)],
        "{}",
        r.text
    );

    // By key: the admin token's requests first (no key), then each key's.
    let r = app
        .get(&format!("/v1/connections/{conn_id}/usage?groupBy=apiKey"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut want = vec![(None, 1), (Some(id1.clone()), 2), (Some(id2.clone()), 1)];
    want[1..].sort();
    assert_eq!(requests_by_key(&r.body["data"]), want, "{}", r.text);

    // One key's usage, on every connection it used.
    let r = app.get(&format!("/v1/api-keys/{id1}/usage")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["apiKeyId"], id1.as_str());
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{}", r.text);
    let on_oa: u64 = data
        .iter()
        .filter(|b| b["connectionId"] == conn_id.as_str())
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(on_oa, 2, "{}", r.text);
    assert!(data.iter().all(|b| b["apiKeyId"] == id1.as_str()));
    assert!(data.iter().all(|b| b["promptTokens"].as_u64().unwrap() > 0));
    // A scoped key's usage reads its connections only.
    let r = app
        .get(&format!("/v1/api-keys/{id2}/usage?granularity=day"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        requests_by_key(&r.body["data"]),
        vec![(Some(id2.clone()), 1)]
    );

    // Bad parameters name themselves; an unknown key is a 404.
    let r = app
        .get(&format!("/v1/connections/{conn_id}/usage?groupBy=caller"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "groupBy");
    let r = app.get(&format!("/v1/api-keys/{id1}/usage?bogus=1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["param"], "bogus");
    let r = app
        .get("/v1/api-keys/01900000-0000-7000-8000-000000000000/usage")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    // lastUsedAt is set by use (the gateway's clock is pinned: it is that time).
    for id in [&id1, &id2] {
        let r = app.get(&format!("/v1/api-keys/{id}")).await;
        let at = r.body["lastUsedAt"].as_str().unwrap_or_default().to_owned();
        assert!(!at.is_empty(), "{}", r.text);
        let pinned = app.gateway.clock.now();
        let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(at.unix_timestamp(), pinned.unix_timestamp());
    }
}
