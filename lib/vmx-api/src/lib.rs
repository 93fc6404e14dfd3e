//! The HTTP API: one axum [`Router`] that the local server and the Lambda functions both run,
//! plus the application services behind it.
//!
//! Architecture invariant: this crate knows HTTP but not Lambda or AWS. Errors become HTTP
//! responses only in [`error`]; configuration is read only in [`config`].

pub mod auth;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod routes;
pub mod service;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

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
}

impl FromRef<AppState> for AdminAuth {
    fn from_ref(state: &AppState) -> Self {
        state.admin.clone()
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let admin = Router::new()
        .route(
            "/v1/connections",
            get(routes::connections::list).post(routes::connections::create),
        )
        .route(
            "/v1/connections/{id}",
            get(routes::connections::get)
                .patch(routes::connections::patch)
                .delete(routes::connections::delete),
        )
        .route(
            "/v1/connections/{id}/capacity",
            get(routes::connections::capacity),
        )
        .route("/v1/providers", get(routes::providers))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let inference = Router::new()
        .route(
            "/v1/chat/completions",
            post(routes::inference::chat_completions),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_caller,
        ));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .merge(admin)
        .merge(inference)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(move |mut req: Request, next: Next| {
            req.extensions_mut().insert(BodyLimit(limit));
            next.run(req)
        }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| ApiError::Panic.into_response(),
        ))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    ApiError::RouteNotFound(req.uri().path().to_owned()).into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// One log line per request: method, route path, status, latency. Never headers or bodies.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}
