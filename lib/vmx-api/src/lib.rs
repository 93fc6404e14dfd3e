//! The HTTP API: one axum [`Router`] that the local server and the Lambda functions both run,
//! plus the application services behind it.
//!
//! Architecture invariant: this crate knows HTTP but not Lambda or AWS (scripts/arch-checks.sh
//! fails CI when an `aws-*` crate enters its normal dependencies). Errors become HTTP
//! responses only in [`error`]; configuration is read only in [`config`].

pub mod accounting;
pub mod auth;
pub mod client_ip;
pub mod config;
pub mod console;
pub mod discovered;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod providers;
pub mod refresh;
pub mod request_id;
pub mod routes;
pub mod service;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::auth::AdminAuth;
use crate::client_ip::TrustedProxies;
use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::gateway::Gateway;
use crate::service::ConnectionService;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub connections: Arc<ConnectionService>,
    pub gateway: Arc<Gateway>,
    pub admin: AdminAuth,
    pub trusted_proxies: Arc<TrustedProxies>,
    pub max_body_bytes: usize,
    /// The web console: assets, sign-in settings and (local server) sessions.
    pub console: Arc<console::Console>,
}

impl FromRef<AppState> for AdminAuth {
    fn from_ref(state: &AppState) -> Self {
        state.admin.clone()
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials: only `/healthz`.
    Public,
    /// The admin token locally, an IAM identity from API Gateway in Lambda.
    Admin,
    /// A gateway API key (or, locally, the admin token).
    Caller,
    /// A console page: locally a console session or a redirect to the sign-in page; in AWS
    /// public (the pages sign in with Cognito, API Gateway checks the console's API calls).
    Page,
    /// The console session itself (`/console/session`): a live session cookie locally, with
    /// the CSRF token on state-changing methods.
    Session,
}

/// One entry of the route table.
pub struct Route {
    pub path: &'static str,
    /// The methods served, for tests that walk the table.
    pub methods: &'static [&'static str],
    pub access: Access,
    handler: MethodRouter<AppState>,
}

fn route(
    path: &'static str,
    methods: &'static [&'static str],
    access: Access,
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        path,
        methods,
        access,
        handler,
    }
}

/// Every route of the API with its access level. The router is built from this table and
/// nothing else, so a test that walks it covers every route, including ones added later.
pub fn route_table() -> Vec<Route> {
    use routes::{api_keys as k, chat, connections as c, messages, models};
    vec![
        route("/healthz", &["GET"], Access::Public, get(routes::healthz)),
        route("/openapi.json", &["GET"], Access::Public, get(openapi::doc)),
        route("/", &["GET"], Access::Public, get(console::root)),
        route("/console", &["GET"], Access::Page, get(console::page)),
        route("/console/", &["GET"], Access::Page, get(console::page)),
        route(
            "/console/{*path}",
            &["GET"],
            Access::Page,
            get(console::page),
        ),
        route(
            "/console/assets/{*path}",
            &["GET"],
            Access::Public,
            get(console::asset),
        ),
        route(
            "/console/config.json",
            &["GET"],
            Access::Public,
            get(console::config),
        ),
        route(
            "/console/session",
            &["POST"],
            Access::Public,
            post(session::sign_in),
        ),
        route(
            "/console/session",
            &["GET", "DELETE"],
            Access::Session,
            get(session::current).delete(session::sign_out),
        ),
        route(
            "/v1/connections",
            &["GET", "POST"],
            Access::Admin,
            get(c::list).post(c::create),
        ),
        route(
            "/v1/connections/check",
            &["POST"],
            Access::Admin,
            post(c::check),
        ),
        route(
            "/v1/connections/{id}",
            &["GET", "PATCH", "DELETE"],
            Access::Admin,
            get(c::get).patch(c::patch).delete(c::delete),
        ),
        route(
            "/v1/connections/{id}/capacity",
            &["GET"],
            Access::Admin,
            get(c::capacity),
        ),
        route(
            "/v1/connections/{id}/usage",
            &["GET"],
            Access::Admin,
            get(c::usage),
        ),
        route(
            "/v1/connections/{id}/discovered-capacity/history",
            &["GET"],
            Access::Admin,
            get(c::discovered_history),
        ),
        route(
            "/v1/connections/{id}/test",
            &["POST"],
            Access::Admin,
            post(c::test),
        ),
        route(
            "/v1/api-keys",
            &["GET", "POST"],
            Access::Admin,
            get(k::list).post(k::create),
        ),
        route(
            "/v1/api-keys/{id}",
            &["GET", "PATCH", "DELETE"],
            Access::Admin,
            get(k::get).patch(k::patch).delete(k::revoke),
        ),
        route(
            "/v1/api-keys/{id}/usage",
            &["GET"],
            Access::Admin,
            get(k::usage),
        ),
        route(
            "/v1/providers",
            &["GET"],
            Access::Admin,
            get(routes::providers),
        ),
        route(
            "/v1/prioritization",
            &["GET", "PUT"],
            Access::Admin,
            get(routes::prioritization::get).put(routes::prioritization::put),
        ),
        route(
            "/v1/messages",
            &["POST"],
            Access::Caller,
            post(messages::messages),
        ),
        route("/v1/models", &["GET"], Access::Caller, get(models::models)),
        route(
            "/v1/chat/completions",
            &["POST"],
            Access::Caller,
            post(chat::chat_completions),
        ),
        route("/metrics", &["GET"], Access::Admin, get(routes::metrics)),
    ]
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    router_with(state, |_| true)
}

/// The routes of the table that `keep` selects (each Lambda function serves its share:
/// the admin function the admin routes, the inference function the caller routes).
pub fn router_with(state: AppState, keep: impl Fn(&Route) -> bool) -> Router {
    let limit = state.max_body_bytes;
    let mut app = Router::new();
    for r in route_table().into_iter().filter(|r| keep(r)) {
        let handler = match r.access {
            Access::Public => r.handler,
            Access::Admin => r.handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_admin,
            )),
            Access::Caller => r.handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_caller,
            )),
            Access::Page => r.handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                console::require_page_session,
            )),
            Access::Session => r.handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                session::require_session,
            )),
        };
        let handler = if r.path == "/" || r.path.starts_with("/console") {
            handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                console::security_headers,
            ))
        } else {
            handler
        };
        app = app.route(r.path, handler);
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |mut req: Request, next: Next| {
            req.extensions_mut().insert(BodyLimit(limit));
            next.run(req)
        }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| ApiError::Panic.into_response(),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    ApiError::RouteNotFound(req.uri().path().to_owned()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// The outermost middleware: the request id ([`request_id`]) set for the request's task and
/// returned in the `x-request-id` header; a backing service's failure counted in the
/// `errors` metric; one log line per request: request id, method, route path, status,
/// latency. Never headers or bodies.
async fn log_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id::from_headers(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut resp = request_id::scope(id.clone(), next.run(req)).await;
    request_id::set_header(resp.headers_mut(), &id);
    let backing = resp.extensions().get::<error::BackingError>().map(|b| b.0);
    if let Some(class) = backing {
        state.gateway.options.metrics.record_backing_error(class);
    }
    tracing::info!(
        request_id = %id,
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        error_class = backing,
        "request"
    );
    resp
}
