//! Test harness: the real router on the embedded store and local key provider.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use vmx_api::auth::AdminAuth;
use vmx_api::client_ip::TrustedProxies;
use vmx_api::console::{Console, ConsoleSettings};
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts, Providers};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_crypto::{EnvelopeSealer, LocalKeyProvider};
use vmx_domain::clock::{Clock, SystemClock};
use vmx_domain::inference::ChatProvider;
use vmx_domain::ports::KeyProvider;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::{DataKey, SealContext, SecretString, WrappedKey};
use vmx_local::ledger::RedbLedger;
use vmx_local::{LocalApiKeyStore, LocalStore, LocalUsageStore, open_database};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// The gateway's clock in these tests: the wall clock's time when the app was built, frozen.
/// Capacity windows are calendar windows (a minute starts at :00 UTC), so on the wall clock
/// a test whose requests straddle a minute boundary would see its first requests in the
/// previous window (on a busy machine, a test takes long enough for that to happen now and
/// then). Frozen, every request of a test falls in the same windows.
pub struct PinnedClock(pub time::OffsetDateTime);

impl PinnedClock {
    pub fn now_utc() -> Self {
        Self(time::OffsetDateTime::now_utc())
    }
}

impl Clock for PinnedClock {
    fn now(&self) -> time::OffsetDateTime {
        self.0
    }
}

pub struct App {
    pub router: Router,
    pub gateway: Arc<Gateway>,
    pub service: Arc<ConnectionService>,
    /// The sealer (its data-key cache counts every unwrap: `cache_stats`).
    pub sealer: Arc<EnvelopeSealer>,
    /// The local key provider, counting its calls.
    pub keys: Arc<CountingKeys>,
    pub dir: tempfile::TempDir,
}

/// The local key provider, counting data-key unwraps (what KMS would be asked for).
pub struct CountingKeys {
    inner: LocalKeyProvider,
    decrypts: AtomicUsize,
}

impl CountingKeys {
    pub fn decrypts(&self) -> usize {
        self.decrypts.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl KeyProvider for CountingKeys {
    async fn generate_data_key(
        &self,
        context: &SealContext<'_>,
    ) -> vmx_domain::Result<(DataKey, WrappedKey)> {
        self.inner.generate_data_key(context).await
    }
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &SealContext<'_>,
    ) -> vmx_domain::Result<DataKey> {
        self.decrypts.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(wrapped, context).await
    }
}

pub fn app_in(dir: tempfile::TempDir, max_body: usize) -> App {
    app_with(dir, max_body, HashMap::new())
}

pub fn app_with(
    dir: tempfile::TempDir,
    max_body: usize,
    providers: HashMap<ProviderKind, Arc<dyn ChatProvider>>,
) -> App {
    app_with_providers(
        dir,
        max_body,
        Providers {
            chat: providers,
            messages: HashMap::new(),
        },
    )
}

pub fn app_with_providers(dir: tempfile::TempDir, max_body: usize, providers: Providers) -> App {
    app_with_console(
        dir,
        max_body,
        providers,
        Console::new(ConsoleSettings::default(), Arc::new(SystemClock)),
    )
}

/// The app with a console of the test's making (its own clock, settings).
pub fn app_with_console(
    dir: tempfile::TempDir,
    max_body: usize,
    providers: Providers,
    console: Console,
) -> App {
    let db = open_database(dir.path()).unwrap();
    let store = Arc::new(LocalStore::new(db.clone()).unwrap());
    let ledger = Arc::new(RedbLedger::new(db.clone()).unwrap());
    let api_keys = Arc::new(LocalApiKeyStore::new(db.clone()).unwrap());
    let usage = Arc::new(LocalUsageStore::new(db).unwrap());
    let keys = Arc::new(CountingKeys {
        inner: LocalKeyProvider::new(DataKey::from_bytes([42; 32])),
        decrypts: AtomicUsize::new(0),
    });
    let sealer = Arc::new(EnvelopeSealer::new(
        keys.clone(),
        Duration::from_secs(60),
        100,
    ));
    let service = Arc::new(ConnectionService::new(
        store.clone(),
        sealer.clone(),
        Arc::new(SystemClock),
    ));
    let gateway = Arc::new(Gateway::new(
        GatewayPorts {
            connections: service.clone(),
            ledger,
            api_keys,
            usage,
            discovered: store,
            providers,
            clock: Arc::new(PinnedClock::now_utc()),
        },
        GatewayOptions {
            // As the local server: `GET /metrics` serves them.
            metrics: Arc::new(vmx_api::metrics::Metrics::prometheus()),
            ..GatewayOptions::default()
        },
    ));
    let state = AppState {
        connections: service.clone(),
        gateway,
        admin: AdminAuth::bearer(&SecretString::from(TOKEN.to_owned())),
        trusted_proxies: Arc::new(TrustedProxies::default()),
        max_body_bytes: max_body,
        console: Arc::new(console),
    };
    App {
        gateway: state.gateway.clone(),
        router: router(state),
        service,
        sealer,
        keys,
        dir,
    }
}

pub fn app() -> App {
    app_in(tempfile::tempdir().unwrap(), 256 * 1024)
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends one request through a router (admin token added unless `headers` has one).
pub async fn call(
    router: Router,
    method: Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    let mut has_auth = false;
    for (k, v) in headers {
        has_auth |= k.eq_ignore_ascii_case("authorization");
        req = req.header(*k, *v);
    }
    if !has_auth {
        req = req.header("authorization", format!("Bearer {TOKEN}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

impl App {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        call(self.router.clone(), method, path, body, headers).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path, Some(&body.to_string()), &[])
            .await
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None, &[]).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::PATCH, path, Some(&body.to_string()), &[])
            .await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// A small `/v1/chat/completions` call of `model` with the gateway API key `key`.
    pub async fn chat_as(&self, key: &str, model: &str) -> Resp {
        let body = serde_json::json!({"model": model,
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
        let auth = format!("Bearer {key}");
        self.call(
            Method::POST,
            "/v1/chat/completions",
            Some(&body.to_string()),
            &[("authorization", auth.as_str())],
        )
        .await
    }
}

/// The five API-key providers, for [`stub_app`].
pub const STUB_KINDS: [ProviderKind; 5] = [
    ProviderKind::OpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Groq,
    ProviderKind::Perplexity,
];

/// The router over the real provider adapters, pointed at stub provider servers (one per
/// API-key provider, plus the Anthropic Messages passthrough), with `options` as the provider
/// timeouts and bounds. Keep the stubs alive as long as the app.
pub async fn stub_app(
    options: vmx_providers::ProviderOptions,
    max_body: usize,
) -> (App, Vec<vmx_providers::testing::StubServer>) {
    let mut endpoints = vmx_providers::ProviderEndpoints::default();
    let mut stubs = Vec::new();
    for kind in STUB_KINDS {
        let stub = vmx_providers::testing::StubServer::start(kind).await;
        endpoints.set(kind, stub.base_url.clone());
        stubs.push(stub);
    }
    let set = vmx_providers::ProviderSet::new(
        vmx_providers::http_client(&options).unwrap(),
        endpoints,
        options,
    );
    let chat: HashMap<ProviderKind, Arc<dyn ChatProvider>> = STUB_KINDS
        .iter()
        .map(|k| (*k, set.get(*k).unwrap()))
        .collect();
    let mut messages = HashMap::new();
    messages.insert(ProviderKind::Anthropic, set.anthropic_messages());
    let app = app_with_providers(
        tempfile::tempdir().unwrap(),
        max_body,
        Providers { chat, messages },
    );
    (app, stubs)
}

/// Serves `router` on a loopback TCP port the way the `vmx` binary does (`axum::serve`, hyper's
/// HTTP/1 and HTTP/2 defaults, peer addresses attached), for tests of what only a real socket
/// shows (header limits). The server task ends with the runtime.
pub async fn serve_tcp(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, service).await;
    });
    addr
}
