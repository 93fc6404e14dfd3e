//! Every sample event in `events/connections/` through the function's router, against the
//! DynamoDB and KMS APIs of moto on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vmx_api::config::Config;

fn event(name: &str, id: &str) -> lambda_http::Request {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/connections")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("CONNECTION_ID", id);
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn send(app: &Router, name: &str, id: &str) -> (u16, Value) {
    let req = event(name, id).map(axum::body::Body::new);
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn app(test: &str) -> Option<Router> {
    vmx_conformance::aws::moto(test)?;
    let sdk = vmx_aws::load_sdk_config(&vmx_aws::client::AwsOptions::default()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("vmx-events-{}", uuid::Uuid::new_v4().simple());
    vmx_aws::table::ensure_table(&ddb, &table).await.unwrap();
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = kms.create_key().send().await.unwrap();
    let key_id = key.key_metadata().unwrap().key_id().to_owned();
    let config = Config::from_vars([
        ("VMX_TABLE_NAME".to_owned(), table),
        ("VMX_KMS_KEY_ID".to_owned(), key_id),
    ])
    .unwrap();
    Some(vmx_fn_connections::app(&config).await.unwrap())
}

#[tokio::test]
async fn rest_api_events_drive_the_whole_lifecycle() {
    let Some(app) = app("rest_api_events_drive_the_whole_lifecycle").await else {
        return;
    };
    let (status, created) = send(&app, "create.rest.json", "").await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["config"]["apiKey"], "********");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, list) = send(&app, "list.rest.json", &id).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["id"], id.as_str());

    let (status, got) = send(&app, "get.rest.json", &id).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "prod-openai");

    let (status, patched) = send(&app, "patch.rest.json", &id).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "patched from an event");
    assert_eq!(patched["version"], 2);

    let (status, err) = send(&app, "malformed.rest.json", &id).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["field"], "body");

    let (status, providers) = send(&app, "providers.rest.json", &id).await;
    assert_eq!(status, 200);
    assert_eq!(providers["data"].as_array().unwrap().len(), 7);

    let (status, _) = send(&app, "delete.rest.json", &id).await;
    assert_eq!(status, 204);
    let (status, err) = send(&app, "get.rest.json", &id).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test]
async fn http_api_events_work_too() {
    let Some(app) = app("http_api_events_work_too").await else {
        return;
    };
    let (status, created) = send(&app, "create.http.json", "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, got) = send(&app, "get.http.json", &id).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "http-api-openai");
    let (status, list) = send(&app, "list.http.json", &id).await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn requests_without_an_authorizer_identity_are_refused() {
    let Some(app) = app("requests_without_an_authorizer_identity_are_refused").await else {
        return;
    };
    for name in ["unauthenticated.rest.json", "unauthenticated.http.json"] {
        let (status, body) = send(&app, name, "").await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // A bearer header is no substitute for the gateway's identity.
    let mut req = event("unauthenticated.rest.json", "").map(axum::body::Body::new);
    req.headers_mut()
        .insert("authorization", "Bearer anything".parse().unwrap());
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 401);
}
