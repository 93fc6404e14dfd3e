//! The JSON API additions the console uses: list filters (`provider`, `q`) and
//! `POST /v1/connections/check` (a key tried before it is saved), against the stub providers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use local_app::{App, app, stub_app};
use serde_json::{Value, json};

async fn create(app: &App, name: &str, provider: &str) {
    let config = if provider.starts_with("aws-") {
        json!({"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx-bedrock-x"})
    } else {
        json!({"apiKey": "sk-x"})
    };
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": name, "provider": provider, "config": config}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

fn names(body: &Value) -> BTreeSet<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_filters_by_provider_and_name() {
    let app = app();
    for (name, provider) in [
        ("prod-openai", "openai"),
        ("Staging-OpenAI", "openai"),
        ("prod-claude", "anthropic"),
        ("bedrock-main", "aws-bedrock"),
    ] {
        create(&app, name, provider).await;
    }
    let r = app.get("/v1/connections?provider=openai").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        names(&r.body),
        ["Staging-OpenAI", "prod-openai"].map(String::from).into()
    );
    let r = app.get("/v1/connections?q=PROD").await;
    assert_eq!(
        names(&r.body),
        ["prod-claude", "prod-openai"].map(String::from).into()
    );
    let r = app.get("/v1/connections?provider=openai&q=stag").await;
    assert_eq!(names(&r.body), ["Staging-OpenAI"].map(String::from).into());
    let r = app
        .get("/v1/connections?provider=aws-bedrock&q=nothing")
        .await;
    assert_eq!(r.body["data"], json!([]));
    assert!(r.body["nextCursor"].is_null());

    // Pagination over a filter: every match once, across pages.
    let mut seen = Vec::new();
    let mut url = "/v1/connections?q=p&limit=1".to_owned();
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        seen.extend(names(&r.body));
        match r.body["nextCursor"].as_str() {
            Some(c) => url = format!("/v1/connections?q=p&limit=1&cursor={c}"),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["Staging-OpenAI", "prod-claude", "prod-openai"]);

    for (url, field) in [
        ("/v1/connections?provider=google", "provider"),
        ("/v1/connections?provider=", "provider"),
        ("/v1/connections?sort=name", "sort"),
        ("/v1/connections?limit=0&provider=openai", "limit"),
    ] {
        let r = app.get(url).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{url}");
    }
    let long = "x".repeat(201);
    let r = app.get(&format!("/v1/connections?q={long}")).await;
    assert_eq!(r.body["error"]["field"], "q");
}

#[tokio::test]
async fn check_tries_an_unsaved_key_and_never_echoes_it() {
    let options = vmx_providers::ProviderOptions {
        request_timeout: Duration::from_secs(5),
        ..vmx_providers::ProviderOptions::default()
    };
    let (app, stubs) = stub_app(options, 256 * 1024).await;
    let good = "sk-check-good-0123456789";
    let r = app
        .post(
            "/v1/connections/check",
            &json!({"provider": "openai", "config": {"apiKey": good}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert!(r.body["latencyMs"].is_u64());
    assert!(!r.text.contains(good));
    let reached = stubs[0]
        .last_request()
        .expect("the check reached the provider");
    assert_eq!(
        reached.header("authorization"),
        Some(format!("Bearer {good}").as_str())
    );

    // The stub refuses this key: the outcome says why, without the key.
    let bad = "invalid-key-123";
    let r = app
        .post(
            "/v1/connections/check",
            &json!({"provider": "anthropic", "config": {"apiKey": bad}, "model": "claude-sonnet-4-5"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    assert_eq!(r.body["error"]["class"], "credentials_rejected");
    assert_eq!(r.body["model"], "claude-sonnet-4-5");
    assert!(!r.text.contains(bad));

    // Nothing was saved.
    assert_eq!(app.get("/v1/connections").await.body["data"], json!([]));

    for (body, field) in [
        (json!({"config": {"apiKey": "k"}}), "provider"),
        (
            json!({"provider": "google", "config": {"apiKey": "k"}}),
            "provider",
        ),
        (json!({"provider": "openai"}), "config"),
        (json!({"provider": "openai", "config": {}}), "config.apiKey"),
        (
            json!({"provider": "openai", "config": {"apiKey": "********"}}),
            "config.apiKey",
        ),
        (
            json!({"provider": "openai", "config": {"apiKey": "k", "x": 1}}),
            "config.x",
        ),
        (
            json!({"provider": "openai", "config": {"apiKey": "k"}, "model": ""}),
            "model",
        ),
        (
            json!({"provider": "openai", "config": {"apiKey": "k"}, "name": "n"}),
            "name",
        ),
        (
            json!({"provider": "aws-bedrock", "config": {"region": "not a region"}}),
            "config.region",
        ),
    ] {
        let r = app.post("/v1/connections/check", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}: {}", r.text);
        assert!(!r.text.contains("\"k\""), "{}", r.text);
    }
    // A provider this server has no adapter for is named as the bad field.
    let r = app
        .post(
            "/v1/connections/check",
            &json!({"provider": "aws-bedrock", "config": {"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx-bedrock-x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "provider");
}

#[tokio::test]
async fn discovered_limits_say_when_they_last_changed() {
    let options = vmx_providers::ProviderOptions {
        request_timeout: Duration::from_secs(5),
        ..vmx_providers::ProviderOptions::default()
    };
    let (app, _stubs) = stub_app(options, 256 * 1024).await;
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "gpt", "provider": "openai", "config": {"apiKey": "sk-x"}}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let test = |app: &App| {
        let path = format!("/v1/connections/{id}/test");
        let app = app.router.clone();
        async move {
            local_app::call(
                app,
                axum::http::Method::POST,
                &path,
                Some(r#"{"model":"gpt-4o-mini"}"#),
                &[],
            )
            .await
        }
    };
    let r = test(&app).await;
    assert_eq!(r.body["ok"], true, "{}", r.text);
    assert!(
        !r.body["limits"].as_array().unwrap().is_empty(),
        "{}",
        r.text
    );
    let got = app.get(&format!("/v1/connections/{id}")).await;
    let model = &got.body["discoveredCapacity"]["models"]["gpt-4o-mini"];
    let changed = model["changedAt"].as_str().expect("changedAt").to_owned();
    assert_eq!(model["updatedAt"], changed.as_str());
    // The same limits seen again change nothing.
    test(&app).await;
    let again = app.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(
        again.body["discoveredCapacity"]["models"]["gpt-4o-mini"]["changedAt"],
        changed.as_str()
    );
}
