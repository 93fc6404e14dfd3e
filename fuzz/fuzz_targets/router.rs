//! Whole requests through the real router (embedded store, local keys, no provider): the
//! first byte picks a route that reads a body (Messages and Chat Completions among them),
//! the rest is the body. No panic, no 5xx, every error in the shared shape.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;
use vmx_api::auth::AdminAuth;
use vmx_api::client_ip::TrustedProxies;
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts, Providers};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_crypto::{EnvelopeSealer, LocalKeyProvider};
use vmx_domain::clock::SystemClock;
use vmx_domain::secret::{DataKey, SecretString};
use vmx_local::ledger::RedbLedger;
use vmx_local::{LocalApiKeyStore, LocalStore, LocalUsageStore, open_database};

const TOKEN: &str = "fuzz-admin-token";

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: Router,
    routes: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open_database(dir.path()).expect("database");
    let store = Arc::new(LocalStore::new(db.clone()).expect("store"));
    let keys = Arc::new(LocalKeyProvider::new(DataKey::from_bytes([7; 32])));
    let sealer = Arc::new(EnvelopeSealer::new(keys, Duration::from_secs(60), 100));
    let connections = Arc::new(ConnectionService::new(
        store.clone(),
        sealer,
        Arc::new(SystemClock),
    ));
    let gateway = Arc::new(Gateway::new(
        GatewayPorts {
            connections: connections.clone(),
            ledger: Arc::new(RedbLedger::new(db.clone()).expect("ledger")),
            api_keys: Arc::new(LocalApiKeyStore::new(db.clone()).expect("keys")),
            usage: Arc::new(LocalUsageStore::new(db).expect("usage")),
            discovered: store,
            providers: Providers {
                chat: HashMap::new(),
                messages: HashMap::new(),
            },
            clock: Arc::new(SystemClock),
        },
        GatewayOptions::default(),
    ));
    let state = AppState {
        connections,
        gateway,
        admin: AdminAuth::bearer(&SecretString::from(TOKEN.to_owned())),
        trusted_proxies: Arc::new(TrustedProxies::default()),
        max_body_bytes: 64 * 1024,
    };
    let router = router(state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let create =
        r#"{"name": "fuzz-claude", "provider": "anthropic", "config": {"apiKey": "sk-fuzz"}}"#;
    let (status, body) = rt.block_on(send(&router, "POST", "/v1/connections", create));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let routes = vec![
        ("POST", "/v1/messages".to_owned()),
        ("POST", "/v1/chat/completions".to_owned()),
        ("POST", "/v1/connections".to_owned()),
        ("PATCH", format!("/v1/connections/{id}")),
        ("POST", "/v1/api-keys".to_owned()),
        ("POST", format!("/v1/connections/{id}/test")),
    ];
    Fixture {
        rt,
        router,
        routes,
        _dir: dir,
    }
}

async fn send(router: &Router, method: &str, path: &str, body: impl Into<Body>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fuzz_target!(|data: &[u8]| {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    let f = FIXTURE.get_or_init(fixture);
    let [pick, body @ ..] = data else {
        return;
    };
    let (method, path) = &f.routes[usize::from(*pick) % f.routes.len()];
    let (status, json) = f.rt.block_on(send(&f.router, method, path, body.to_vec()));
    assert!(status < 500, "{method} {path}: {status} {json}");
    if status >= 400 {
        assert_eq!(json["type"], "error", "{method} {path}: {status} {json}");
        assert!(json["error"]["code"].is_string(), "{json}");
    }
});
