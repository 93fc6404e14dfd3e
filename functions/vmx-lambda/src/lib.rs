//! Lambda glue shared by the function crates.
//!
//! Architecture invariant: this crate and the function crates are the only code that knows
//! Lambda. They translate the API Gateway request context into plain request extensions the
//! router understands ([`vmx_api::auth::CallerIdentity`], the source address as the peer's
//! [`ConnectInfo`]) and build the AWS adapters once per cold start.

use std::sync::Arc;

#[cfg(feature = "testing")]
pub mod testing;

use aws_config::SdkConfig;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use vmx_api::AppState;
use vmx_api::auth::{AdminAuth, CallerIdentity};
use vmx_api::config::Config;
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts, Providers};
use vmx_api::service::ConnectionService;
use vmx_aws::client::{AwsOptions, load_sdk_config};
use vmx_aws::dynamo_ledger::DynamoLedger;
use vmx_aws::dynamo_store::DynamoStore;
use vmx_aws::kms::KmsKeyProvider;
use vmx_aws::{DynamoApiKeyStore, DynamoUsageStore};
use vmx_bedrock::{BedrockOptions, BedrockProviders};
use vmx_crypto::EnvelopeSealer;
use vmx_domain::clock::SystemClock;
use vmx_domain::{Error, Result};

/// The IAM principal API Gateway authenticated, if the route used IAM authorization.
pub fn caller_identity(context: &RequestContext) -> Option<String> {
    match context {
        RequestContext::ApiGatewayV1(c) => c
            .identity
            .user_arn
            .clone()
            .or_else(|| c.identity.caller.clone())
            .filter(|s| !s.is_empty()),
        RequestContext::ApiGatewayV2(c) => c
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()))
            .filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// The console's API prefix: API Gateway checks a Cognito JWT on `ANY /console/api/{proxy+}`
/// and the function serves the request as the admin route without the prefix.
pub const CONSOLE_API_PREFIX: &str = "/console/api";

/// The person a JWT authorizer (Cognito) authenticated: `cognito:<email>`, or
/// `cognito:<sub>` when the token has no email claim.
pub fn jwt_identity(context: &RequestContext) -> Option<String> {
    let RequestContext::ApiGatewayV2(c) = context else {
        return None;
    };
    let claims = &c.authorizer.as_ref()?.jwt.as_ref()?.claims;
    let sub = claims.get("sub").filter(|s| !s.is_empty())?;
    let who = claims.get("email").filter(|e| !e.is_empty()).unwrap_or(sub);
    Some(format!("cognito:{who}"))
}

/// The path of a request under [`CONSOLE_API_PREFIX`], without the prefix.
fn console_api_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(CONSOLE_API_PREFIX)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Replaces the path of the request's URI, keeping its query.
fn set_path(req: &mut Request, path: &str) {
    let path = if path.is_empty() { "/" } else { path };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// The source IP from the request context.
pub fn source_ip(context: &RequestContext) -> Option<String> {
    match context {
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
        _ => None,
    }
}

/// The stage prefix lambda_http put in front of the request's path, if any.
///
/// A REST API event's `path` never holds the stage, and lambda_http prefixes it with
/// `/<stage>` unless the path already starts with `/<stage>/` or
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` is set: it added one exactly when the URI has one
/// more `/` than the event's path (percent-encoding adds none). An HTTP API event's raw path
/// holds its stage when the stage is not `$default`.
fn added_stage(context: &RequestContext, uri_path: &str, raw_path: Option<&str>) -> Option<String> {
    let stage = match context {
        RequestContext::ApiGatewayV1(c) => {
            let slashes = |s: &str| s.bytes().filter(|b| *b == b'/').count();
            let raw = raw_path?;
            if slashes(uri_path) != slashes(raw) + 1 {
                return None;
            }
            c.stage.clone()
        }
        RequestContext::ApiGatewayV2(c) => c.stage.clone(),
        _ => None,
    };
    stage.filter(|s| !s.is_empty() && s != "$default")
}

/// Removes `/<stage>` from the front of the request's path.
fn strip_stage(req: &mut Request, stage: &str) {
    let prefix = format!("/{stage}");
    let Some(rest) = req.uri().path().strip_prefix(&prefix) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return;
    }
    let rest = rest.to_owned();
    set_path(req, &rest);
}

/// Middleware: moves identity and source IP from the Lambda request context into the
/// extensions the router reads. A request without an authorizer identity gets none, and the
/// router's admin check then refuses it. The source IP API Gateway or the function URL saw
/// (`identity.sourceIp`, `http.sourceIp`) becomes the peer address, so the router's
/// trusted-proxy rule (`VMX_TRUSTED_PROXIES`, [`vmx_api::client_ip::client_ip`]) applies as it
/// does to a TCP peer locally.
///
/// Under [`CONSOLE_API_PREFIX`] the identity is the JWT authorizer's (Cognito) instead of
/// IAM's, and the prefix is removed before routing; a request there without JWT claims is
/// refused with 401 here.
pub async fn context_to_extensions(mut req: Request, next: Next) -> Response {
    let raw_path = Some(req.raw_http_path().to_owned()).filter(|p| !p.is_empty());
    let (iam, jwt, ip, stage) = match req.request_context_ref() {
        Some(ctx) => (
            caller_identity(ctx),
            jwt_identity(ctx),
            source_ip(ctx),
            added_stage(ctx, req.uri().path(), raw_path.as_deref()),
        ),
        None => (None, None, None, None),
    };
    if let Some(stage) = stage {
        strip_stage(&mut req, &stage);
    }
    let identity = match console_api_path(req.uri().path()).map(str::to_owned) {
        Some(rest) => {
            let Some(who) = jwt else {
                return axum::response::IntoResponse::into_response(
                    vmx_api::error::ApiError::Unauthorized,
                );
            };
            set_path(&mut req, &rest);
            Some(who)
        }
        None => iam,
    };
    if let Some(who) = identity {
        req.extensions_mut().insert(CallerIdentity(who));
    }
    if let Some(ip) = ip.and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
        req.extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::new(ip, 0)));
    }
    next.run(req).await
}

/// Wraps a router so that [`context_to_extensions`] runs before routing (a `Router::layer`
/// would run after it, too late to strip the stage from the path).
pub fn with_lambda_context(router: axum::Router) -> axum::Router {
    let layer = axum::middleware::from_fn(context_to_extensions);
    axum::Router::new().fallback_service(tower::Layer::layer(&layer, router))
}

/// JSON logs to stdout, as Lambda's JSON log format expects; never request bodies. The level
/// is Lambda's `AWS_LAMBDA_LOG_LEVEL` (the function's `LoggingConfig`) when set, else
/// `VMX_LOG`.
pub fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = config.lambda_log_level.unwrap_or(&config.log_filter);
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time();
    if config.log_json.unwrap_or(true) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The process's AWS SDK configuration (vmx's own identity; retries from `config`), loaded
/// once per cold start.
pub async fn sdk_config(config: &Config) -> SdkConfig {
    load_sdk_config(&AwsOptions::with_max_attempts(config.aws_max_attempts)).await
}

/// The AWS adapters every function needs, built once per cold start.
pub struct AwsAdapters {
    pub sdk: SdkConfig,
    pub store: Arc<DynamoStore>,
    pub ledger: Arc<DynamoLedger>,
    pub api_keys: Arc<DynamoApiKeyStore>,
    pub usage: Arc<DynamoUsageStore>,
    pub sealer: Arc<EnvelopeSealer>,
    /// Told of discovered-capacity changes: EventBridge when `VMX_EVENT_BUS_NAME` is set.
    pub notifier: Arc<dyn vmx_domain::discovered::ChangeNotifier>,
}

impl AwsAdapters {
    /// The adapters over `sdk` ([`sdk_config`] in a function; tests point it at moto through
    /// a counting proxy), on the table and key `config` names.
    pub fn new(config: &Config, sdk: SdkConfig) -> Result<Self> {
        let table = config
            .table_name
            .clone()
            .ok_or_else(|| Error::invalid("VMX_TABLE_NAME", "is required in Lambda"))?;
        let key_id = config
            .kms_key_id
            .clone()
            .ok_or_else(|| Error::invalid("VMX_KMS_KEY_ID", "is required in Lambda"))?;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let keys = Arc::new(KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk), key_id));
        let notifier: Arc<dyn vmx_domain::discovered::ChangeNotifier> = match &config.event_bus_name
        {
            Some(bus) => Arc::new(vmx_aws::EventBridgeNotifier::from_sdk(&sdk, bus)),
            None => Arc::new(vmx_domain::discovered::NoNotifier),
        };
        Ok(Self {
            notifier,
            store: Arc::new(DynamoStore::new(ddb.clone(), table.clone())),
            ledger: Arc::new(DynamoLedger::new(ddb.clone(), table.clone())),
            api_keys: Arc::new(DynamoApiKeyStore::new(ddb.clone(), table.clone())),
            usage: Arc::new(DynamoUsageStore::new(ddb, table)),
            sealer: Arc::new(EnvelopeSealer::new(
                keys,
                config.key_cache_ttl,
                config.key_cache_capacity,
            )),
            sdk,
        })
    }

    /// Every provider adapter of a function: the API-key providers from `config` and the
    /// two Bedrock providers over the function's SDK configuration.
    pub fn providers(&self, config: &Config) -> Result<Providers> {
        let mut providers = vmx_api::providers::from_config(config)?;
        let options = BedrockOptions {
            provider: vmx_api::providers::provider_options(config),
            ..Default::default()
        };
        providers.extend(BedrockProviders::new(&self.sdk, options, None).adapters());
        Ok(providers)
    }

    /// The services and gateway of a function, over these adapters.
    pub fn app_state(&self, config: &Config, providers: Providers) -> AppState {
        let clock = Arc::new(SystemClock);
        let console = Arc::new(vmx_api::console::Console::new(
            vmx_api::console::ConsoleSettings::from_config(config),
            clock.clone(),
        ));
        let connections = Arc::new(ConnectionService::new(
            self.store.clone(),
            self.sealer.clone(),
            clock.clone(),
        ));
        let gateway = Gateway::new(
            GatewayPorts {
                connections: connections.clone(),
                ledger: self.ledger.clone(),
                api_keys: self.api_keys.clone(),
                usage: self.usage.clone(),
                discovered: self.store.clone(),
                providers,
                clock,
            },
            GatewayOptions {
                connection_cache_ttl: config.connection_cache_ttl,
                default_output_tokens: config.default_output_tokens,
                ipv6_prefix_len: config.ipv6_prefix_len,
                // A frozen Lambda environment could lose a background task: account
                // before the response completes.
                background_accounting: false,
                caches: vmx_api::gateway::CacheOptions::from_config(config),
                // CloudWatch Embedded Metric Format lines on stdout: no API call.
                metrics: Arc::new(vmx_api::metrics::Metrics::emf()),
                ..GatewayOptions::default()
            },
        );
        let gateway = Arc::new(gateway.with_notifier(self.notifier.clone()));
        AppState {
            connections,
            gateway,
            admin: AdminAuth::Gateway,
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            max_body_bytes: config.max_body_bytes,
            console,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;
    use vmx_api::client_ip::TrustedProxies;

    /// A REST API (v1) proxy event for `GET <path>` on `stage`, from `source_ip`, with an
    /// `X-Forwarded-For` header when `xff` is set.
    fn rest_event(path: &str, stage: &str, source_ip: &str, xff: Option<&str>) -> String {
        let headers = match xff {
            Some(x) => format!(
                r#"{{"Host": "abc123.execute-api.us-east-1.amazonaws.com", "X-Forwarded-For": "{x}"}}"#
            ),
            None => r#"{"Host": "abc123.execute-api.us-east-1.amazonaws.com"}"#.to_owned(),
        };
        format!(
            r#"{{"resource": "{path}", "path": "{path}", "httpMethod": "GET", "headers": {headers},
            "queryStringParameters": null, "pathParameters": null, "stageVariables": null,
            "requestContext": {{"resourcePath": "{path}", "httpMethod": "GET", "path": "/{stage}{path}",
              "accountId": "123456789012", "stage": "{stage}", "requestId": "r1", "apiId": "abc123",
              "identity": {{"sourceIp": "{source_ip}"}}}},
            "body": null, "isBase64Encoded": false}}"#
        )
    }

    /// The path the router saw and the client address `client_ip` gives it under `trusted`.
    async fn seen(event: &str, trusted: &str) -> String {
        let trusted = TrustedProxies::parse(trusted).unwrap();
        let echo = move |req: Request| {
            let trusted = trusted.clone();
            async move {
                let ip = vmx_api::client_ip::client_ip(req.extensions(), req.headers(), &trusted);
                format!("{} {ip}", req.uri().path())
            }
        };
        let app = with_lambda_context(
            axum::Router::new()
                .route("/v1/models", get(echo.clone()))
                .route("/models", get(echo)),
        );
        let req = lambda_http::request::from_str(event)
            .unwrap()
            .map(axum::body::Body::new);
        let resp = app.oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn rest_events_route_without_the_stage_whatever_its_name() {
        for stage in ["prod", "v1", "models"] {
            let event = rest_event("/v1/models", stage, "198.51.100.7", None);
            assert_eq!(
                seen(&event, "").await,
                "/v1/models 198.51.100.7",
                "stage {stage}"
            );
        }
    }

    #[tokio::test]
    async fn the_source_ip_is_the_peer_and_trusted_proxies_apply() {
        // No trusted proxy: API Gateway's sourceIp, whatever X-Forwarded-For says.
        let event = rest_event("/v1/models", "prod", "198.51.100.7", Some("1.2.3.4"));
        assert_eq!(seen(&event, "").await, "/v1/models 198.51.100.7");
        // Behind a trusted proxy (CloudFront's range here): the right-most untrusted hop; the
        // client's forged left-most entry is ignored.
        let event = rest_event(
            "/v1/models",
            "prod",
            "130.176.1.10",
            Some("1.2.3.4, 203.0.113.9, 130.176.2.20"),
        );
        assert_eq!(
            seen(&event, "130.176.0.0/16").await,
            "/v1/models 203.0.113.9"
        );
        // A sourceIp that is not a trusted proxy: its X-Forwarded-For is not believed.
        let event = rest_event("/v1/models", "prod", "198.51.100.7", Some("203.0.113.9"));
        assert_eq!(
            seen(&event, "130.176.0.0/16").await,
            "/v1/models 198.51.100.7"
        );
    }
}
