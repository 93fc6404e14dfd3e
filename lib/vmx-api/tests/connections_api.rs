//! The connections API through the real router, embedded store and local encryption.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use axum::http::{Method, StatusCode};
use local_app::{App, app, app_in};
use serde_json::{Value, json};
use vmx_domain::secret::ExposeSecret;

const CANARY: &str = "sk-CANARY-3b9f1c7e5a2d4f60";

fn openai(name: &str) -> Value {
    json!({"name": name, "provider": "openai", "config": {"apiKey": CANARY},
           "capacity": [{"period": "minute", "requests": 100, "tokens": 100000}]})
}

async fn create(app: &App, body: &Value) -> Value {
    let r = app.post("/v1/connections", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body
}

fn assert_error(r: &local_app::Resp, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    if let Some(f) = field {
        assert_eq!(r.body["error"]["field"], f, "{}", r.text);
    }
}

#[tokio::test]
async fn create_get_list_patch_delete() {
    let app = app();
    let c = create(&app, &openai("prod-openai")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["config"], json!({"apiKey": "********"}));
    assert_eq!(c["version"], 1);
    assert_eq!(
        c["capacity"][0]["enabled"], true,
        "enabled defaults to true"
    );
    assert_eq!(c["discoveredCapacity"], json!({"models": {}}));
    assert!(c["createdAt"].as_str().unwrap().ends_with('Z'));

    let g = app.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.headers["etag"], "\"1\"");
    assert_eq!(g.body, c);

    let p = app
        .patch(
            &format!("/v1/connections/{id}"),
            &json!({"description": "main account", "allowedModels": ["gpt-4o"]}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.body["description"], "main account");
    assert_eq!(p.body["allowedModels"], json!(["gpt-4o"]));
    assert_eq!(p.body["version"], 2);
    assert_eq!(p.body["name"], "prod-openai", "untouched fields stay");
    assert_eq!(p.body["capacity"], c["capacity"]);

    let d = app.delete(&format!("/v1/connections/{id}")).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_error(
        &app.get(&format!("/v1/connections/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.delete(&format!("/v1/connections/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.patch(
            &format!("/v1/connections/{id}"),
            &json!({"description": "x"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    // The name is free again.
    create(&app, &openai("prod-openai")).await;
}

#[tokio::test]
async fn duplicate_names_conflict_on_create_and_rename() {
    let app = app();
    create(&app, &openai("a")).await;
    let b = create(&app, &openai("b")).await;
    assert_error(
        &app.post("/v1/connections", &openai("a")).await,
        StatusCode::CONFLICT,
        "name_taken",
        Some("name"),
    );
    let id = b["id"].as_str().unwrap();
    let r = app
        .patch(&format!("/v1/connections/{id}"), &json!({"name": "a"}))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "name_taken", Some("name"));
    assert_eq!(
        app.get(&format!("/v1/connections/{id}")).await.body["version"],
        1,
        "nothing written"
    );
    // Renaming frees the old name.
    let r = app
        .patch(&format!("/v1/connections/{id}"), &json!({"name": "c"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    create(&app, &openai("b")).await;
}

#[tokio::test]
async fn versioned_updates_give_409_on_conflict() {
    let app = app();
    let c = create(&app, &openai("v")).await;
    let path = format!("/v1/connections/{}", c["id"].as_str().unwrap());
    let ok = app
        .call(
            Method::PATCH,
            &path,
            Some(r#"{"description":"one"}"#),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.headers["etag"], "\"2\"");
    let stale = app
        .call(
            Method::PATCH,
            &path,
            Some(r#"{"description":"two"}"#),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_error(
        &stale,
        StatusCode::CONFLICT,
        "version_conflict",
        Some("version"),
    );
    let stale_body = app
        .patch(&path, &json!({"description": "two", "version": 1}))
        .await;
    assert_error(
        &stale_body,
        StatusCode::CONFLICT,
        "version_conflict",
        Some("version"),
    );
    assert_eq!(app.get(&path).await.body["description"], "one");
    let weak = app
        .call(
            Method::PATCH,
            &path,
            Some(r#"{"description":"three"}"#),
            &[("if-match", "W/\"2\"")],
        )
        .await;
    assert_eq!(weak.status, StatusCode::OK);
    let bad = app
        .call(
            Method::PATCH,
            &path,
            Some(r#"{"description":"x"}"#),
            &[("if-match", "yesterday")],
        )
        .await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("If-Match"),
    );
}

#[tokio::test]
async fn concurrent_unversioned_patches_all_apply() {
    let app = app();
    let c = create(&app, &openai("busy")).await;
    let path = format!("/v1/connections/{}", c["id"].as_str().unwrap());
    let mut tasks = Vec::new();
    for i in 0..3 {
        let router = app.router.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"description": format!("d{i}")}).to_string();
            local_app::call(router, Method::PATCH, &path, Some(&body), &[])
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(app.get(&path).await.body["version"], 4);
}

#[tokio::test]
async fn pagination_is_stable_and_complete() {
    let app = app();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create(&app, &openai(&format!("c{i}"))).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut path = "/v1/connections?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        pages += 1;
        for c in r.body["data"].as_array().unwrap() {
            assert_eq!(c["config"]["apiKey"], "********");
            seen.push(c["id"].as_str().unwrap().to_owned());
        }
        match r.body["nextCursor"].as_str() {
            Some(cur) => path = format!("/v1/connections?limit=3&cursor={cur}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "creation order, no gaps or duplicates");
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=Zm9v", "cursor"),
        ("page=2", "page"),
    ] {
        assert_error(
            &app.get(&format!("/v1/connections?{q}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(field),
        );
    }
}

#[tokio::test]
async fn secrets_are_masked_and_rotation_replaces_them() {
    let app = app();
    let c = create(&app, &openai("rot")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/connections/{id}");
    let key = |app: &App| {
        let service = app.service.clone();
        let id = id.clone();
        async move {
            let conn = service.get(&id).await.unwrap();
            service
                .api_key(&conn)
                .await
                .unwrap()
                .unwrap()
                .expose_secret()
                .to_owned()
        }
    };
    assert_eq!(key(&app).await, CANARY);
    // Absent or masked secret keeps the stored ciphertext.
    for body in [
        json!({"config": {}}),
        json!({"config": {"apiKey": "********"}}),
        json!({"config": {"apiKey": "****anything"}}),
        json!({"description": "x"}),
    ] {
        let r = app.patch(&path, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["config"]["apiKey"], "********");
        assert_eq!(key(&app).await, CANARY, "{body}");
    }
    // A new value is the rotation.
    let r = app
        .patch(&path, &json!({"config": {"apiKey": "sk-rotated-key"}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!r.text.contains("sk-rotated-key"));
    assert_eq!(key(&app).await, "sk-rotated-key");
    let bad = app.patch(&path, &json!({"config": {"apiKey": ""}})).await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("config.apiKey"),
    );
    assert_eq!(key(&app).await, "sk-rotated-key");
}

#[tokio::test]
async fn stored_items_hold_no_plaintext_and_are_bound_to_their_connection() {
    let app = app();
    let a = create(&app, &openai("a")).await;
    let b = create(&app, &openai("b")).await;
    let store = app.service.store().clone();
    let ca = store.get(a["id"].as_str().unwrap()).await.unwrap().unwrap();
    let mut cb = store.get(b["id"].as_str().unwrap()).await.unwrap().unwrap();
    let raw = serde_json::to_string(&ca).unwrap();
    assert!(!raw.contains(CANARY));
    // Copy a's ciphertext onto b: it must not decrypt there.
    cb.config = ca.config.clone();
    match app.service.api_key(&cb).await {
        Err(vmx_domain::Error::Crypto { .. }) => {}
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a ciphertext opened on another connection"),
    }
    // Nor does the database file contain the secret.
    drop(store);
    let bytes = std::fs::read(app.dir.path().join("vmx.redb")).unwrap();
    assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
}

#[tokio::test]
async fn bedrock_connections_get_an_external_id() {
    let app = app();
    let c = create(
        &app,
        &json!({"name": "br", "provider": "aws-bedrock-invoke", "config": {
        "region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx"}}),
    )
    .await;
    let ext = c["config"]["externalId"].as_str().unwrap().to_owned();
    assert!(ext.starts_with("vmx-") && ext.len() == 36, "{ext}");
    let path = format!("/v1/connections/{}", c["id"].as_str().unwrap());
    let p = app
        .patch(
            &path,
            &json!({"config": {"performanceConfig": {"latency": "optimized"}}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(
        p.body["config"]["externalId"],
        ext.as_str(),
        "kept across updates"
    );
    assert_eq!(p.body["config"]["region"], "us-east-1");
    let given = create(&app, &json!({"name": "br2", "provider": "aws-bedrock", "config": {
        "region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx", "externalId": "mine-123"}})).await;
    assert_eq!(given["config"]["externalId"], "mine-123");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field() {
    let app = app();
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "body"),
        ("".into(), "body"),
        ("[]".into(), "body"),
        ("\"x\"".into(), "body"),
        (r#"{"name":"x","provider":"google","config":{"apiKey":"k"}}"#.into(), "provider"),
        (r#"{"name":"x","provider":"openai","config":{"apiKey":7}}"#.into(), "config.apiKey"),
        (r#"{"name":"x","provider":"openai","config":{"apiKey":"k"},"capacity":[{"period":"minute","requests":-1}]}"#.into(), "capacity[0].requests"),
        (r#"{"name":"x","provider":"openai","config":{"apiKey":"k"},"extra":1}"#.into(), "extra"),
        (format!("{}1{}", "[".repeat(200), "]".repeat(200)), "body"),
    ];
    for (body, field) in cases {
        let r = app
            .call(Method::POST, "/v1/connections", Some(&body), &[])
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    let list = app.get("/v1/connections").await;
    assert_eq!(list.body["data"], json!([]), "nothing half-written");
}

#[tokio::test]
async fn oversized_bodies_are_rejected() {
    let app = app_in(tempfile::tempdir().unwrap(), 1024);
    let big = json!({"name": "x", "provider": "openai", "config": {"apiKey": "k"}, "description": "d".repeat(4096)});
    let r = app.post("/v1/connections", &big).await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        Some("body"),
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024")
    );
}

#[tokio::test]
async fn admin_routes_require_the_bearer_token() {
    let app = app();
    let c = create(&app, &openai("auth")).await;
    let id = c["id"].as_str().unwrap();
    let routes = [
        (Method::GET, "/v1/connections".to_owned()),
        (Method::POST, "/v1/connections".to_owned()),
        (Method::GET, format!("/v1/connections/{id}")),
        (Method::PATCH, format!("/v1/connections/{id}")),
        (Method::DELETE, format!("/v1/connections/{id}")),
        (Method::GET, "/v1/providers".to_owned()),
    ];
    for (m, p) in &routes {
        for auth in ["", "Bearer", "Bearer wrong", "Basic dGVzdA==", "bearer  "] {
            let r = app
                .call(m.clone(), p, Some("{}"), &[("authorization", auth)])
                .await;
            assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(
        app.get(&format!("/v1/connections/{id}")).await.status,
        StatusCode::OK,
        "not deleted"
    );
    let h = app
        .call(Method::GET, "/healthz", None, &[("authorization", "")])
        .await;
    assert_eq!(h.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = app();
    assert_error(
        &app.get("/v2/nothing").await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    let r = app
        .call(Method::PUT, "/v1/connections", Some("{}"), &[])
        .await;
    assert_error(
        &r,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
}

#[tokio::test]
async fn providers_lists_all_seven_with_secret_fields() {
    let app = app();
    let r = app.get("/v1/providers").await;
    assert_eq!(r.status, StatusCode::OK);
    let data = r.body["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "openai",
            "anthropic",
            "gemini",
            "groq",
            "perplexity",
            "aws-bedrock",
            "aws-bedrock-invoke"
        ]
    );
    let openai = &data[0];
    assert_eq!(openai["auth"], "api-key");
    assert_eq!(openai["configFields"][0]["name"], "apiKey");
    assert_eq!(openai["configFields"][0]["secret"], true);
    assert_eq!(data[6]["capabilities"]["anthropicFeatures"], true);
    assert_eq!(data[5]["auth"], "iam-role");
}

#[tokio::test]
async fn malformed_ids_and_oversized_test_bodies_are_json_errors() {
    let app = local_app::app_in(tempfile::tempdir().unwrap(), 1024);
    for path in ["/v1/api-keys/%C3%28", "/v1/connections/%C3%28"] {
        let r = app.get(path).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request", Some("id"));
    }
    let c = create(&app, &openai("t")).await;
    let big = format!(r#"{{"model":"{}"}}"#, "m".repeat(4096));
    let r = app
        .call(
            Method::POST,
            &format!("/v1/connections/{}/test", c["id"].as_str().unwrap()),
            Some(&big),
            &[],
        )
        .await;
    assert_error(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        Some("body"),
    );
}
