//! The web console's routes: the one HTML shell for every page, the assets
//! (`vmx_console`), `config.json`, and the security headers of every console response.
//!
//! The pages are ES modules that pick the screen from the URL, so every page URL answers
//! the same shell. On the local server a page needs a console session (see [`crate::session`])
//! or redirects to the sign-in page; in AWS the pages are public files and the console's API
//! calls carry a Cognito token that API Gateway checks.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vmx_console::Assets;
use vmx_domain::clock::Clock;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::config::Config;
use crate::error::ApiError;
use crate::session::{self, Sessions};

/// The pages that open without a session: signing in, and Cognito's return.
pub const SIGN_IN_PATH: &str = "/console/sign-in";
pub const CALLBACK_PATH: &str = "/console/callback";

/// The Cognito hosted UI the console signs in with (AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cognito {
    /// `https://<prefix>.auth.<region>.amazoncognito.com`, no trailing slash.
    pub domain: String,
    pub client_id: String,
}

/// What the console is built from (read from [`Config`]).
pub struct ConsoleSettings {
    pub assets: Assets,
    pub session_ttl: Duration,
    /// Shown in the header: `local`, or the stack name.
    pub name: String,
    pub cognito: Option<Cognito>,
    /// The role that assumes Bedrock connection roles (for the trust-policy snippet).
    pub bedrock_principal_arn: Option<String>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            assets: Assets::embedded(),
            session_ttl: session::DEFAULT_TTL,
            name: "local".to_owned(),
            cognito: None,
            bedrock_principal_arn: None,
        }
    }
}

impl ConsoleSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            assets: match &config.console_dir {
                Some(dir) => Assets::dir(dir),
                None => Assets::embedded(),
            },
            session_ttl: config.console_session_ttl,
            name: config
                .stack_name
                .clone()
                .unwrap_or_else(|| "local".to_owned()),
            cognito: match (&config.cognito_domain, &config.cognito_client_id) {
                (Some(domain), Some(client_id)) => Some(Cognito {
                    domain: domain.clone(),
                    client_id: client_id.clone(),
                }),
                _ => None,
            },
            bedrock_principal_arn: config.bedrock_principal_arn.clone(),
        }
    }
}

/// The console's state, part of [`AppState`].
pub struct Console {
    pub assets: Assets,
    pub sessions: Sessions,
    pub name: String,
    pub cognito: Option<Cognito>,
    pub bedrock_principal_arn: Option<String>,
    csp: HeaderValue,
}

impl Console {
    pub fn new(settings: ConsoleSettings, clock: Arc<dyn Clock>) -> Self {
        let connect = match &settings.cognito {
            Some(c) => format!("'self' {}", c.domain),
            None => "'self'".to_owned(),
        };
        let csp = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        );
        Self {
            assets: settings.assets,
            sessions: Sessions::new(settings.session_ttl, clock),
            name: settings.name,
            cognito: settings.cognito,
            bedrock_principal_arn: settings.bedrock_principal_arn,
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
        }
    }
}

/// Middleware of every console route: CSP without inline script, no framing, no sniffing,
/// no referrer.
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", state.console.csp.clone());
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

/// Middleware of the pages: on the local server, a page other than sign-in and the Cognito
/// callback needs a live session, or the browser is sent (303) to the sign-in page with the
/// page to come back to.
pub async fn require_page_session(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let open = path == SIGN_IN_PATH || path == CALLBACK_PATH;
    if open
        || !matches!(state.admin, AdminAuth::Bearer { .. })
        || session::request_session(&state, req.headers()).is_some()
    {
        return next.run(req).await;
    }
    let back = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
    redirect(
        StatusCode::SEE_OTHER,
        &format!("{SIGN_IN_PATH}?next={}", percent_encode(back)),
    )
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Percent-encodes all but unreserved characters and `/`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /`: to the console.
pub async fn root() -> Response {
    redirect(StatusCode::FOUND, "/console/")
}

fn asset_response(state: &AppState, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let asset = state
        .console
        .assets
        .get(path)
        .ok_or_else(|| ApiError::RouteNotFound(format!("/console/assets/{path}")))?;
    Ok(asset.respond(headers).map(axum::body::Body::from))
}

/// Every page: the shell (`assets/index.html`); the scripts choose the screen.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    asset_response(&state, "index.html", &headers)
}

/// `GET /console/assets/{*path}`.
pub async fn asset(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    asset_response(&state, &path, &headers)
}

/// `GET /console/config.json`: how this console signs in; no secrets.
pub async fn config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let console = &state.console;
    let mut body = match (&state.admin, &console.cognito) {
        (AdminAuth::Bearer { .. }, _) => {
            json!({"mode": "local", "name": console.name, "apiBase": ""})
        }
        (AdminAuth::Gateway, Some(c)) => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            json!({
                "mode": "cognito",
                "name": console.name,
                "apiBase": "/console/api",
                "cognito": {
                    "domain": c.domain,
                    "clientId": c.client_id,
                    "redirectUri": format!("https://{host}{CALLBACK_PATH}"),
                    "scopes": ["openid", "email"],
                },
            })
        }
        // Deployed without a user pool: the admin API takes SigV4 only.
        (AdminAuth::Gateway, None) => json!({"mode": "iam", "name": console.name, "apiBase": ""}),
    };
    if let (Some(arn), Value::Object(o)) = (&console.bedrock_principal_arn, &mut body) {
        o.insert("bedrockPrincipalArn".to_owned(), Value::String(arn.clone()));
    }
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_percent_encoded() {
        assert_eq!(
            percent_encode("/console/?provider=openai&q=a b"),
            "/console/%3Fprovider%3Dopenai%26q%3Da%20b"
        );
    }
}
