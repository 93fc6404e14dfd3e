//! Admin changes reach every warm inference instance at its next request: two separate
//! inference instances (each with its own caches) and an admin instance on one moto table,
//! every step sequential. A rotated provider key is the one the very next call sends; a
//! revoked API key is refused (401), on a connection the instance had cached and on one it
//! had not; a key's new own capacity is enforced; a deleted connection is not found (404);
//! lowered connection capacity is enforced, and raised capacity admits again; new
//! prioritization pools are enforced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use vmx_api::auth::CallerIdentity;
use vmx_api::{Access, router_with};
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::StubServer;

struct Setup {
    admin: Router,
    instances: [Router; 2],
    stub: StubServer,
}

async fn setup(test: &str) -> Option<Setup> {
    vmx_conformance::aws::moto(test)?;
    let sdk = vmx_aws::load_sdk_config(&vmx_aws::client::AwsOptions::default()).await;
    let stub = StubServer::start(ProviderKind::OpenAi).await;
    let vars = [("VMX_OPENAI_BASE_URL", stub.base_url.clone())];
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-propagation", &vars).await;
    let state = || {
        vmx_lambda::AwsAdapters::new(&config, sdk.clone())
            .unwrap()
            .app_state(&config, vmx_api::providers::from_config(&config).unwrap())
    };
    let admin = router_with(state(), |r| r.access != Access::Caller);
    let inference =
        || vmx_lambda::with_lambda_context(router_with(state(), |r| r.access != Access::Admin));
    Some(Setup {
        admin,
        instances: [inference(), inference()],
        stub,
    })
}

async fn call(app: &Router, mut req: Request<Body>) -> (u16, Value) {
    req.extensions_mut().insert(CallerIdentity(
        "arn:aws:iam::123456789012:user/admin".into(),
    ));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn admin(s: &Setup, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    call(&s.admin, req).await
}

async fn chat(app: &Router, key: &str, connection: &str) -> (u16, Value) {
    let body = json!({"model": format!("{connection}/gpt-4o-mini"),
        "messages": [{"role": "user", "content": "Say hello"}]});
    let req = Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A `PATCH` through the admin route, which must succeed.
async fn patch(s: &Setup, path: &str, body: Value) {
    let (status, body) = admin(s, "PATCH", path, Some(body)).await;
    assert_eq!(status, 200, "{path}: {body}");
}

/// A new API key reaching every connection (id, key), through the admin route.
async fn new_key(s: &Setup) -> (String, String) {
    let (status, created) = admin(s, "POST", "/v1/api-keys", Some(json!({"name": "app"}))).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

async fn create(s: &Setup, name: &str, api_key: &str) -> String {
    let (status, created) = admin(
        s,
        "POST",
        "/v1/connections",
        Some(
            json!({"name": name, "provider": "openai", "config": {"apiKey": api_key},
            "capacity": [{"period": "lifetime", "requests": 1000}]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// The provider key the stub saw on its last call.
fn last_provider_key(s: &Setup) -> String {
    let last = s.stub.last_request().expect("a provider call");
    last.header("authorization").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn admin_changes_reach_warm_instances_at_the_next_request() {
    let Some(s) = setup("admin_changes_reach_warm_instances_at_the_next_request").await else {
        return;
    };
    let prod = create(&s, "prod", "sk-old").await;
    let other = create(&s, "other", "sk-other").await;
    create(&s, "spare", "sk-spare").await;
    let (_, key) = new_key(&s).await;
    let (doomed_id, doomed) = new_key(&s).await;
    let (limited_id, limited) = new_key(&s).await;
    // Both instances warm: the keys and both connections cached.
    for app in &s.instances {
        for (k, c) in [
            (&key, "prod"),
            (&doomed, "prod"),
            (&limited, "prod"),
            (&key, "other"),
        ] {
            let (status, body) = chat(app, k, c).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    assert_eq!(last_provider_key(&s), "Bearer sk-other");

    // Rotation: the next call of each warm instance sends the new key.
    patch(
        &s,
        &format!("/v1/connections/{prod}"),
        json!({"config": {"apiKey": "sk-new"}}),
    )
    .await;
    for app in &s.instances {
        let (status, body) = chat(app, &key, "prod").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(last_provider_key(&s), "Bearer sk-new");
    }

    // Revocation: warm the revoked key again on both (the rotation dropped key lookups),
    // revoke it, and the next call of each instance is refused: on the first instance on
    // a connection it has cached (the admission returns the raised version), on the second
    // on one it has never loaded (a connection loaded anew re-reads a cached key first).
    for app in &s.instances {
        assert_eq!(chat(app, &doomed, "prod").await.0, 200);
    }
    let (status, body) = admin(&s, "DELETE", &format!("/v1/api-keys/{doomed_id}"), None).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let before = s.stub.requests().len();
    for (app, connection) in s.instances.iter().zip(["prod", "spare"]) {
        let (status, body) = chat(app, &doomed, connection).await;
        assert_eq!(status, 401, "{connection}: {body}");
        // The other key still works.
        assert_eq!(chat(app, &key, "prod").await.0, 200);
    }
    assert_eq!(
        s.stub.requests().len(),
        before + 2,
        "no call with the revoked key"
    );

    // A key's own capacity (PATCH /v1/api-keys/{id}): one request a day. The first
    // instance's next call takes it, its call after is refused; the second instance, warm
    // with the key's old record (no own limit), refuses its very next call too.
    patch(
        &s,
        &format!("/v1/api-keys/{limited_id}"),
        json!({"capacity": [{"period": "day", "requests": 1}]}),
    )
    .await;
    let [first, second] = &s.instances;
    assert_eq!(chat(first, &limited, "prod").await.0, 200);
    let (status, body) = chat(first, &limited, "prod").await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = chat(second, &limited, "prod").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["limit"]["scope"], "apiKey", "{body}");

    // Deletion: the next call of each instance finds no connection.
    for app in &s.instances {
        assert_eq!(chat(app, &key, "other").await.0, 200);
    }
    let (status, body) = admin(&s, "DELETE", &format!("/v1/connections/{other}"), None).await;
    assert_eq!(status, 204, "{body}");
    for app in &s.instances {
        let (status, body) = chat(app, &key, "other").await;
        assert_eq!(status, 404, "{body}");
    }

    // Capacity lowered below what the lifetime window has used: enforced at once.
    patch(
        &s,
        &format!("/v1/connections/{prod}"),
        json!({"capacity": [{"period": "lifetime", "requests": 1}]}),
    )
    .await;
    let before = s.stub.requests().len();
    for app in &s.instances {
        let (status, body) = chat(app, &key, "prod").await;
        assert_eq!(status, 429, "{body}");
    }
    assert_eq!(
        s.stub.requests().len(),
        before,
        "no call past the new limit"
    );

    // Capacity raised again: the instances, which refused under the limit of 1, admit
    // their very next call (the failed write returned the new version).
    patch(
        &s,
        &format!("/v1/connections/{prod}"),
        json!({"capacity": [{"period": "lifetime", "requests": 1000}]}),
    )
    .await;
    for app in &s.instances {
        let (status, body) = chat(app, &key, "prod").await;
        assert_eq!(status, 200, "{body}");
    }

    // Prioritization pools: a pool holding one key, at most 3 % of a connection's 100
    // lifetime requests. The first instance's calls stop at the pool's ceiling; the
    // second, whose cached definition has no pools, refuses its very next call too.
    let (pooled_id, pooled) = new_key(&s).await;
    let pooled_connection = create(&s, "pooled", "sk-pooled").await;
    patch(
        &s,
        &format!("/v1/connections/{pooled_connection}"),
        json!({"capacity": [{"period": "lifetime", "requests": 100}]}),
    )
    .await;
    for app in &s.instances {
        assert_eq!(chat(app, &pooled, "pooled").await.0, 200);
    }
    let (status, body) = admin(
        &s,
        "PUT",
        "/v1/prioritization",
        Some(
            json!({"pools": [{"name": "batch", "rank": 1, "apiKeys": [pooled_id],
            "minReservation": 0, "maxReservation": 3}]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let [first, second] = &s.instances;
    let mut admitted = 0;
    let body = loop {
        let (status, body) = chat(first, &pooled, "pooled").await;
        if status != 200 {
            assert_eq!(status, 429, "{body}");
            break body;
        }
        admitted += 1;
        assert!(admitted <= 3, "past the pool's ceiling");
    };
    assert_eq!(body["error"]["limit"]["pool"], "batch", "{body}");
    let (status, body) = chat(second, &pooled, "pooled").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["limit"]["pool"], "batch", "{body}");
}
