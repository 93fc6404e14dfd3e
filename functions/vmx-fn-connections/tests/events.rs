//! Every sample event in `events/connections/` through the function's router, against the
//! DynamoDB and KMS APIs of moto on loopback (and a stub OpenAI for the connection test);
//! and a check that `events/` has a sample event for every route of the route table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vmx_domain::provider::ProviderKind;

fn events_dir(function: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(function)
}

fn event(name: &str, id: &str) -> lambda_http::Request {
    event_with(name, &[("CONNECTION_ID", id)])
}

/// The sample event `name` with each placeholder replaced by its value.
fn event_with(name: &str, values: &[(&str, &str)]) -> lambda_http::Request {
    let mut text = std::fs::read_to_string(events_dir("connections").join(name)).unwrap();
    for (placeholder, value) in values {
        text = text.replace(placeholder, value);
    }
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn send(app: &Router, name: &str, id: &str) -> (u16, Value) {
    send_with(app, name, &[("CONNECTION_ID", id)]).await
}

async fn send_with(app: &Router, name: &str, values: &[(&str, &str)]) -> (u16, Value) {
    let req = event_with(name, values).map(axum::body::Body::new);
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn app(test: &str) -> Option<Router> {
    app_with(test, &[]).await
}

async fn app_with(test: &str, vars: &[(&str, String)]) -> Option<Router> {
    vmx_conformance::aws::moto(test)?;
    let sdk = vmx_aws::load_sdk_config(&vmx_aws::client::AwsOptions::default()).await;
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-events", vars).await;
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

#[tokio::test]
async fn http_api_events_cover_every_admin_route() {
    let stub = vmx_providers::testing::StubServer::start(ProviderKind::OpenAi).await;
    let vars = [("VMX_OPENAI_BASE_URL", stub.base_url.clone())];
    let Some(app) = app_with("http_api_events_cover_every_admin_route", &vars).await else {
        return;
    };
    let (status, created) = send(&app, "create.http.json", "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, patched) = send(&app, "patch.http.json", &id).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "patched from an HTTP API event");

    let (status, capacity) = send(&app, "capacity.http.json", &id).await;
    assert_eq!(status, 200, "{capacity}");
    assert!(capacity["windows"].is_array(), "{capacity}");

    let (status, usage) = send(&app, "usage.http.json", &id).await;
    assert_eq!(status, 200, "{usage}");

    let (status, tested) = send(&app, "test.http.json", &id).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    let reached = stub.last_request().expect("the test reached the provider");
    assert_eq!(
        reached.header("authorization"),
        Some("Bearer sk-example-not-a-real-key")
    );
    // The test saw the stub's two limits: two changes in the history.
    let (status, history) = send(&app, "discovered-history.http.json", &id).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["data"].as_array().unwrap().len(), 2, "{history}");

    let (status, providers) = send(&app, "providers.http.json", &id).await;
    assert_eq!(status, 200);
    assert_eq!(providers["data"].as_array().unwrap().len(), 7);

    // In Lambda the metrics are EMF lines on stdout: no Prometheus endpoint (and no API
    // Gateway route to it).
    let (status, metrics) = send(&app, "metrics.http.json", &id).await;
    assert_eq!(status, 404, "{metrics}");

    let (status, checked) = send(&app, "check.http.json", &id).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["ok"], true, "{checked}");
    assert!(!checked.to_string().contains("sk-example"), "{checked}");

    let (status, key) = send(&app, "api-key-create.http.json", &id).await;
    assert_eq!(status, 201, "{key}");
    assert!(key["key"].as_str().unwrap().len() > 20);
    assert_eq!(key["connections"][0], id.as_str());
    let key_id = key["id"].as_str().unwrap().to_owned();
    let values = [
        ("CONNECTION_ID", id.as_str()),
        ("API_KEY_ID", key_id.as_str()),
    ];
    let (status, keys) = send_with(&app, "api-key-list.http.json", &values).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(keys["data"][0]["id"], key_id.as_str());
    assert!(keys["data"][0].get("key").is_none(), "a key is shown once");
    let (status, got) = send_with(&app, "api-key-get.http.json", &values).await;
    assert_eq!(status, 200, "{got}");
    assert!(got["revokedAt"].is_null());
    let (status, usage) = send_with(&app, "api-key-usage.http.json", &values).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["apiKeyId"], key_id.as_str());
    assert_eq!(usage["granularity"], "day", "{usage}");
    let (status, patched) = send_with(&app, "api-key-patch.http.json", &values).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["capacity"][0]["requests"], 60, "{patched}");
    let (status, revoked) = send_with(&app, "api-key-revoke.http.json", &values).await;
    assert!(status == 200 || status == 204, "{status} {revoked}");
    let (_, got) = send_with(&app, "api-key-get.http.json", &values).await;
    assert!(got["revokedAt"].is_string(), "{got}");

    let (status, health) = send(&app, "healthz.http.json", &id).await;
    assert_eq!(status, 200, "{health}");
    let (status, doc) = send(&app, "openapi.http.json", &id).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"].as_str().unwrap().get(..3), Some("3.1"));

    let (status, _) = send(&app, "delete.http.json", &id).await;
    assert_eq!(status, 204);
    let (status, _) = send(&app, "get.http.json", &id).await;
    assert_eq!(status, 404);
}

async fn send_raw(
    app: &Router,
    name: &str,
    values: &[(&str, &str)],
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let req = event_with(name, values).map(axum::body::Body::new);
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

#[tokio::test]
async fn console_events_serve_the_pages_and_config() {
    let vars = [
        (
            "VMX_COGNITO_DOMAIN",
            "https://vmx-example.auth.us-east-1.amazoncognito.com".to_owned(),
        ),
        ("VMX_COGNITO_CLIENT_ID", "example-client-id".to_owned()),
        ("VMX_STACK_NAME", "vmx-prod".to_owned()),
        (
            "VMX_BEDROCK_PRINCIPAL_ARN",
            "arn:aws:iam::123456789012:role/vmx/vmx-prod-InferenceRole".to_owned(),
        ),
    ];
    let Some(app) = app_with("console_events_serve_the_pages_and_config", &vars).await else {
        return;
    };
    let (status, headers, _) = send_raw(&app, "console-root.http.json", &[]).await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], "/console/");
    // In AWS the pages are public files: the console signs in with Cognito.
    for (name, path) in [
        ("console-bare.http.json", ""),
        ("console-shell.http.json", ""),
        ("console-page.http.json", "connections/new"),
        ("console-page.http.json", "sign-in"),
        ("console-asset.http.json", "index.html"),
    ] {
        let (status, headers, body) = send_raw(&app, name, &[("CONSOLE_PATH", path)]).await;
        assert_eq!(status, 200, "{name} {path}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("connect-src 'self' https://vmx-example.auth.us-east-1.amazoncognito.com"),
            "{csp}"
        );
        assert!(!body.is_empty());
    }
    let (status, config) = send(&app, "console-config.http.json", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        config,
        serde_json::json!({
            "mode": "cognito",
            "name": "vmx-prod",
            "apiBase": "/console/api",
            "cognito": {
                "domain": "https://vmx-example.auth.us-east-1.amazoncognito.com",
                "clientId": "example-client-id",
                "redirectUri": "https://api1.execute-api.us-east-1.amazonaws.com/console/callback",
                "scopes": ["openid", "email"],
            },
            "bedrockPrincipalArn": "arn:aws:iam::123456789012:role/vmx/vmx-prod-InferenceRole",
        })
    );
    // No local sessions behind API Gateway.
    for name in [
        "console-session-start.http.json",
        "console-session-get.http.json",
        "console-session-end.http.json",
    ] {
        let (status, body) = send(&app, name, "").await;
        assert_eq!(status, 401, "{name}: {body}");
    }
}

#[tokio::test]
async fn console_api_events_take_the_identity_from_jwt_claims() {
    let Some(app) = app("console_api_events_take_the_identity_from_jwt_claims").await else {
        return;
    };
    let (status, created) = send(&app, "console-api-create.http.json", "").await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["config"]["apiKey"], "********");
    let (status, list) = send(&app, "console-api-list.http.json", "").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["name"], "console-openai");
    // Without the authorizer's claims: 401, whatever the headers say.
    let (status, body) = send(&app, "console-api-unauthenticated.http.json", "").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let mut req = event("console-api-unauthenticated.http.json", "").map(axum::body::Body::new);
    req.headers_mut()
        .insert("authorization", "Bearer anything".parse().unwrap());
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 401);
    // JWT claims are no identity outside the console's prefix (there IAM decides).
    let text =
        std::fs::read_to_string(events_dir("connections").join("console-api-list.http.json"))
            .unwrap()
            .replace("/console/api/v1/connections", "/v1/connections");
    let req = lambda_http::request::from_str(&text)
        .unwrap()
        .map(axum::body::Body::new);
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 401);
}

/// The (method, path) of a sample event, path with its placeholders as `{id}`.
fn event_route(text: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let (method, path) = match v["version"].as_str() {
        Some("2.0") => (
            v["requestContext"]["http"]["method"].as_str()?,
            v["rawPath"].as_str()?,
        ),
        _ => (v["httpMethod"].as_str()?, v["path"].as_str()?),
    };
    let path = ["CONNECTION_ID", "API_KEY_ID"]
        .iter()
        .fold(path.to_owned(), |p, placeholder| {
            p.replace(placeholder, "{id}")
        })
        .replace("CONSOLE_PATH", "{*path}");
    // REST events carry the stage in the path (lambda_http strips it).
    let path = path.strip_prefix("/prod").unwrap_or(&path).to_owned();
    Some((method.to_owned(), path))
}

#[test]
fn every_route_has_a_sample_event() {
    let mut events = std::collections::HashSet::new();
    for function in ["connections", "inference"] {
        for entry in std::fs::read_dir(events_dir(function)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            if let Some(route) = event_route(&text) {
                events.insert(route);
            }
        }
    }
    let mut missing = Vec::new();
    for route in vmx_api::route_table() {
        for method in route.methods {
            if !events.contains(&((*method).to_owned(), route.path.to_owned())) {
                missing.push(format!("{method} {}", route.path));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes without a sample event in events/: {missing:?}"
    );
}

#[tokio::test]
async fn every_write_is_one_the_admin_role_allows() {
    let stub = vmx_providers::testing::StubServer::start(ProviderKind::OpenAi).await;
    let vars = [("VMX_OPENAI_BASE_URL", stub.base_url.clone())];
    let Some(moto) = vmx_conformance::aws::moto("every_write_is_one_the_admin_role_allows") else {
        return;
    };
    // The function's router as `vmx_fn_connections::app` builds it, with its calls going
    // through a proxy that records them.
    let proxy = vmx_conformance::moto_proxy::SerialProxy::start(&moto).await;
    let sdk = vmx_aws::client::config_loader(&vmx_aws::client::AwsOptions::default())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(&proxy.url)
        .load()
        .await;
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-events", &vars).await;
    let aws = vmx_lambda::AwsAdapters::new(&config, sdk).unwrap();
    let state = aws.app_state(&config, aws.providers(&config).unwrap());
    let app = vmx_lambda::with_lambda_context(vmx_api::router_with(state, |r| {
        r.access != vmx_api::Access::Caller
    }));
    proxy.clear();
    // Every kind of admin write: a connection and its name, its discovered limits (the
    // test), an API key created, its capacity changed and the key revoked, the
    // prioritization pools replaced, the connection deleted.
    let (status, created) = send(&app, "create.http.json", "").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, tested) = send(&app, "test.http.json", &id).await;
    assert_eq!(tested["ok"], true, "{status} {tested}");
    let (status, key) = send(&app, "api-key-create.http.json", &id).await;
    assert_eq!(status, 201, "{key}");
    let values = [
        ("CONNECTION_ID", id.as_str()),
        ("API_KEY_ID", key["id"].as_str().unwrap()),
    ];
    let (status, patched) = send_with(&app, "api-key-patch.http.json", &values).await;
    assert_eq!(status, 200, "{patched}");
    let (status, _) = send_with(&app, "api-key-revoke.http.json", &values).await;
    assert!(status == 200 || status == 204, "{status}");
    let (status, pools) = send(&app, "prioritization-put.http.json", "").await;
    assert_eq!(status, 200, "{pools}");
    let (status, _) = send(&app, "delete.http.json", &id).await;
    assert_eq!(status, 204);
    // Every item written falls under the LeadingKeys of ConnectionsRole in template.yaml,
    // and every key pattern there is one these calls needed.
    vmx_conformance::template::assert_writes_allowed(
        "ConnectionsRole",
        &proxy.written_items(),
        true,
    );
}
