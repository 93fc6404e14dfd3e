//! `GET /v1/connections/{id}/discovered-capacity/history` after real limit changes: the
//! rate-limit headers of a stub OpenAI server, and two limit refreshes of a Bedrock
//! connection whose quotas change in between; the notifier hears of each change once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use vmx_api::auth::AdminAuth;
use vmx_api::client_ip::TrustedProxies;
use vmx_api::console::{Console, ConsoleSettings};
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts, Providers};
use vmx_api::refresh::{RefreshOptions, Refresher};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_crypto::{EnvelopeSealer, LocalKeyProvider};
use vmx_domain::capacity::Period;
use vmx_domain::clock::{Clock, SystemClock};
use vmx_domain::connection::{AwsConfig, DiscoveredLimit};
use vmx_domain::discovered::{ChangeNotifier, DiscoveredChange, QuotaSource};
use vmx_domain::inference::ChatProvider;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::{DataKey, SecretString};
use vmx_local::ledger::RedbLedger;
use vmx_local::{LocalApiKeyStore, LocalStore, LocalUsageStore, open_database};

/// A clock the test moves.
struct TestClock(Mutex<OffsetDateTime>);

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

/// Service Quotas as the test sets them: requests per minute of every model.
struct Quotas(Mutex<u64>);

#[async_trait]
impl QuotaSource for Quotas {
    async fn model_limits(&self, _: &AwsConfig, _: &str) -> Result<Vec<DiscoveredLimit>, String> {
        Ok(vec![DiscoveredLimit {
            period: Period::Minute,
            metric: "requests".into(),
            limit: *self.0.lock().unwrap(),
            remaining: None,
            reset: None,
        }])
    }
}

/// Every notification: (connection id, connection name, changes).
#[derive(Default)]
struct Heard(Mutex<Vec<(String, String, Vec<DiscoveredChange>)>>);

#[async_trait]
impl ChangeNotifier for Heard {
    async fn discovered_changed(
        &self,
        id: &str,
        name: &str,
        changes: &[DiscoveredChange],
    ) -> vmx_domain::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push((id.to_owned(), name.to_owned(), changes.to_vec()));
        Ok(())
    }
}

struct Fixture {
    router: axum::Router,
    gateway: Arc<Gateway>,
    clock: Arc<TestClock>,
    heard: Arc<Heard>,
    _dir: tempfile::TempDir,
    _stub: vmx_providers::testing::StubServer,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = open_database(dir.path()).unwrap();
    let store = Arc::new(LocalStore::new(db.clone()).unwrap());
    let sealer = Arc::new(EnvelopeSealer::new(
        Arc::new(LocalKeyProvider::new(DataKey::from_bytes([7; 32]))),
        Duration::from_secs(60),
        100,
    ));
    let service = Arc::new(ConnectionService::new(
        store.clone(),
        sealer,
        Arc::new(SystemClock),
    ));
    let stub = vmx_providers::testing::StubServer::start(ProviderKind::OpenAi).await;
    let mut endpoints = vmx_providers::ProviderEndpoints::default();
    endpoints.set(ProviderKind::OpenAi, stub.base_url.clone());
    let options = vmx_providers::ProviderOptions::default();
    let set = vmx_providers::ProviderSet::new(
        vmx_providers::http_client(&options).unwrap(),
        endpoints,
        options,
    );
    let chat: HashMap<ProviderKind, Arc<dyn ChatProvider>> =
        HashMap::from([(ProviderKind::OpenAi, set.get(ProviderKind::OpenAi).unwrap())]);
    let clock = Arc::new(TestClock(Mutex::new(OffsetDateTime::now_utc())));
    let heard = Arc::new(Heard::default());
    let gateway = Arc::new(
        Gateway::new(
            GatewayPorts {
                connections: service.clone(),
                ledger: Arc::new(RedbLedger::new(db.clone()).unwrap()),
                api_keys: Arc::new(LocalApiKeyStore::new(db.clone()).unwrap()),
                usage: Arc::new(LocalUsageStore::new(db).unwrap()),
                discovered: store,
                providers: Providers {
                    chat,
                    messages: HashMap::new(),
                },
                clock: clock.clone(),
            },
            GatewayOptions::default(),
        )
        .with_notifier(heard.clone()),
    );
    let state = AppState {
        connections: service,
        gateway: gateway.clone(),
        admin: AdminAuth::bearer(&SecretString::from(local_app::TOKEN.to_owned())),
        trusted_proxies: Arc::new(TrustedProxies::default()),
        max_body_bytes: 256 * 1024,
        console: Arc::new(Console::new(
            ConsoleSettings::default(),
            Arc::new(SystemClock),
        )),
    };
    Fixture {
        router: router(state),
        gateway,
        clock,
        heard,
        _dir: dir,
        _stub: stub,
    }
}

impl Fixture {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> local_app::Resp {
        let body = body.map(|b| b.to_string());
        local_app::call(self.router.clone(), method, path, body.as_deref(), &[]).await
    }

    async fn history(&self, id: &str, query: &str) -> local_app::Resp {
        let path = format!("/v1/connections/{id}/discovered-capacity/history{query}");
        let r = self.call(Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r
    }

    fn advance(&self, by: time::Duration) {
        *self.clock.0.lock().unwrap() += by;
    }
}

/// (model, metric, old, new, source) of each change of a history page.
fn rows(page: &Value) -> Vec<(String, String, Value, Value, String)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["model"].as_str().unwrap().to_owned(),
                c["metric"].as_str().unwrap().to_owned(),
                c["old"].clone(),
                c["new"].clone(),
                c["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn row(
    model: &str,
    metric: &str,
    old: Value,
    new: Value,
    source: &str,
) -> (String, String, Value, Value, String) {
    (model.into(), metric.into(), old, new, source.into())
}

#[tokio::test]
async fn history_after_headers_and_two_quota_refreshes() {
    let f = fixture().await;
    let openai = f
        .call(
            Method::POST,
            "/v1/connections",
            Some(json!({"name": "gpt", "provider": "openai", "config": {"apiKey": "sk-x"}})),
        )
        .await;
    let openai_id = openai.body["id"].as_str().unwrap().to_owned();
    let bedrock = f
        .call(
            Method::POST,
            "/v1/connections",
            Some(json!({"name": "claude", "provider": "aws-bedrock",
                "config": {"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx-bedrock-x"},
                "allowedModels": ["anthropic.claude-x"]})),
        )
        .await;
    let bedrock_id = bedrock.body["id"].as_str().unwrap().to_owned();
    assert!(
        f.history(&openai_id, "").await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Headers: the stub reports 5000 requests and 2,000,000 tokens per minute.
    for _ in 0..2 {
        let r = f
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some(json!({"model": "gpt/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        f.advance(time::Duration::seconds(1));
    }
    let page = f.history(&openai_id, "").await;
    let mut got = rows(&page.body);
    got.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        got,
        vec![
            row(
                "gpt-4o-mini",
                "requests",
                Value::Null,
                json!(5000),
                "headers"
            ),
            row(
                "gpt-4o-mini",
                "tokens",
                Value::Null,
                json!(2_000_000),
                "headers"
            ),
        ],
        "the same limits seen twice are one change each"
    );
    assert_eq!(page.body["nextCursor"], Value::Null);
    assert_eq!(page.body["data"][0]["period"], "minute");

    // Quotas: 100, then (an hour later, when the limits are no longer fresh) 200.
    let quotas = Arc::new(Quotas(Mutex::new(100)));
    let refresher = Refresher {
        gateway: f.gateway.clone(),
        quotas: Some(quotas.clone()),
        options: RefreshOptions::default(),
    };
    let deadline = || Instant::now() + Duration::from_secs(60);
    refresher.run(None, deadline()).await.unwrap();
    f.advance(time::Duration::hours(2));
    refresher.run(None, deadline()).await.unwrap();
    *quotas.0.lock().unwrap() = 200;
    f.advance(time::Duration::hours(2));
    refresher.run(None, deadline()).await.unwrap();

    let page = f.history(&bedrock_id, "").await;
    assert_eq!(
        rows(&page.body),
        vec![
            row(
                "anthropic.claude-x",
                "requests",
                json!(100),
                json!(200),
                "refresh"
            ),
            row(
                "anthropic.claude-x",
                "requests",
                Value::Null,
                json!(100),
                "refresh"
            ),
        ],
        "newest first; the unchanged refresh in between is no change"
    );
    let at = |i: usize| page.body["data"][i]["at"].as_str().unwrap().to_owned();
    assert!(at(0) > at(1), "{} then {}", at(0), at(1));

    // Paging: one per page, then the rest after the cursor.
    let first = f.history(&bedrock_id, "?limit=1").await;
    assert_eq!(rows(&first.body), rows(&page.body)[..1].to_vec());
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = f
        .history(&bedrock_id, &format!("?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(rows(&second.body), rows(&page.body)[1..].to_vec());
    assert_eq!(second.body["nextCursor"], Value::Null);
    // The model filter.
    let filtered = f.history(&bedrock_id, "?model=anthropic.claude-x").await;
    assert_eq!(rows(&filtered.body).len(), 2);
    let other = f.history(&bedrock_id, "?model=gpt-4o-mini").await;
    assert!(other.body["data"].as_array().unwrap().is_empty());

    // One notification per recorded change set, with the connection's name.
    let heard = f.heard.0.lock().unwrap().clone();
    let summary: Vec<(String, String, usize)> = heard
        .iter()
        .map(|(id, name, changes)| (id.clone(), name.clone(), changes.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (openai_id.clone(), "gpt".to_owned(), 2),
            (bedrock_id.clone(), "claude".to_owned(), 1),
            (bedrock_id.clone(), "claude".to_owned(), 1),
        ]
    );
    assert_eq!(
        (heard[2].2[0].old, heard[2].2[0].new),
        (Some(100), Some(200))
    );
}

#[tokio::test]
async fn bad_history_queries_are_400_naming_the_parameter() {
    let f = fixture().await;
    let c = f
        .call(
            Method::POST,
            "/v1/connections",
            Some(json!({"name": "gpt", "provider": "openai", "config": {"apiKey": "sk-x"}})),
        )
        .await;
    let id = c.body["id"].as_str().unwrap().to_owned();
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?cursor=nope", "cursor"),
        ("?model=", "model"),
        ("?after=x", "after"),
    ] {
        let path = format!("/v1/connections/{id}/discovered-capacity/history{query}");
        let r = f.call(Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{query}");
    }
    let r = f
        .call(
            Method::GET,
            "/v1/connections/01900000-0000-7000-8000-000000000000/discovered-capacity/history",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}
