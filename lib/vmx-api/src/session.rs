//! Console sessions of the local server: the admin token, typed once into the sign-in page,
//! buys an HttpOnly, SameSite=Strict cookie naming a session that lives in this process's
//! memory until it expires or the person signs out.
//!
//! - The cookie value is 32 random bytes; only its SHA-256 digest is kept, so the table
//!   cannot be used to impersonate anyone.
//! - With the cookie, every method other than GET/HEAD/OPTIONS must carry the session's
//!   CSRF token in `X-CSRF-Token` (compared in constant time), or it is refused with 403
//!   `csrf_failed`.
//! - Wrong tokens are counted per process: after [`MAX_FAILURES`] in a [`FAILURE_WINDOW`]
//!   every sign-in is refused with 429 until the window ends, so the token cannot be guessed
//!   at speed.
//! - The token is read from the request body only; it is never logged, and no response
//!   contains it.
//!
//! In Lambda (API Gateway authorizes admin calls) there are no sessions: the console signs
//! in with Cognito there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use vmx_domain::clock::Clock;
use vmx_domain::connection::rfc3339;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "vmx_session";
/// The header that carries the CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Default session lifetime (`VMX_CONSOLE_SESSION_TTL_SECS`): 8 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// Wrong sign-ins allowed per [`FAILURE_WINDOW`] before sign-in pauses.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Live sessions kept at most; the oldest go first beyond it.
const MAX_SESSIONS: usize = 1000;

/// A live session, as the handlers see it.
#[derive(Clone)]
pub struct ConsoleSession {
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
}

/// The in-memory session table and the sign-in failure counter.
pub struct Sessions {
    ttl: Duration,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_digest: HashMap<[u8; 32], ConsoleSession>,
    window_start: Option<OffsetDateTime>,
    failures: u32,
}

fn digest(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn random_token() -> Result<String, ApiError> {
    let bytes: [u8; 32] = vmx_crypto::random_bytes()?;
    Ok(B64URL.encode(bytes))
}

impl Sessions {
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ttl,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session: returns the cookie value and the session.
    pub fn start(&self) -> Result<(String, ConsoleSession), ApiError> {
        let cookie = random_token()?;
        let now = self.clock.now();
        let session = ConsoleSession {
            csrf_token: random_token()?,
            expires_at: now + self.ttl,
        };
        let mut inner = self.lock();
        inner.by_digest.retain(|_, s| s.expires_at > now);
        while inner.by_digest.len() >= MAX_SESSIONS {
            let oldest = inner
                .by_digest
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => inner.by_digest.remove(&k),
                None => break,
            };
        }
        inner.by_digest.insert(digest(&cookie), session.clone());
        Ok((cookie, session))
    }

    /// The live session a cookie value names; an expired one is removed.
    pub fn find(&self, cookie: &str) -> Option<ConsoleSession> {
        let key = digest(cookie);
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.by_digest.get(&key) {
            Some(s) if s.expires_at > now => Some(s.clone()),
            Some(_) => {
                inner.by_digest.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session a cookie value names.
    pub fn end(&self, cookie: &str) {
        self.lock().by_digest.remove(&digest(cookie));
    }

    /// `Err(seconds to wait)` while sign-in is paused after too many wrong tokens.
    fn check_throttle(&self) -> Result<(), u64> {
        let now = self.clock.now();
        let inner = self.lock();
        match inner.window_start {
            Some(start) if inner.failures >= MAX_FAILURES && now < start + FAILURE_WINDOW => {
                let left = (start + FAILURE_WINDOW - now).whole_seconds();
                Err(u64::try_from(left).unwrap_or(0).max(1))
            }
            _ => Ok(()),
        }
    }

    fn record_failure(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        match inner.window_start {
            Some(start) if now < start + FAILURE_WINDOW => inner.failures += 1,
            _ => {
                inner.window_start = Some(now);
                inner.failures = 1;
            }
        }
    }
}

/// The value of the `vmx_session` cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value)
}

/// The live session of a request (local server only).
pub fn request_session(state: &AppState, headers: &HeaderMap) -> Option<ConsoleSession> {
    if !matches!(state.admin, AdminAuth::Bearer { .. }) {
        return None;
    }
    state.console.sessions.find(session_cookie(headers)?)
}

fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a state-changing request whose `X-CSRF-Token` is not the session's.
pub fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    session: &ConsoleSession,
) -> Result<(), ApiError> {
    if safe_method(method) {
        return Ok(());
    }
    let presented = headers
        .get(CSRF_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if bool::from(presented.ct_eq(session.csrf_token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "csrf_failed",
            message: format!(
                "a state-changing request with the console session cookie must send the \
                 session's CSRF token in {CSRF_HEADER} (GET /console/session returns it)"
            ),
        })
    }
}

/// Whether the request came over https (`X-Forwarded-Proto` of a proxy, or the URI).
fn over_https(request_headers: &HeaderMap, scheme: Option<&str>) -> bool {
    let forwarded = request_headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    forwarded.is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || scheme.is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

fn cookie_header(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /console/session` `{"token": "<admin token>"}`: starts a session.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let secure = over_https(&headers, uri.scheme_str());
    let token = match body.get("token") {
        Some(Value::String(t)) if !t.is_empty() => t.as_str(),
        _ => {
            return Err(ApiError::bad_request(
                "token",
                "token: the admin token is required",
            ));
        }
    };
    if !matches!(state.admin, AdminAuth::Bearer { .. }) {
        // No admin token here: API Gateway authorizes admin calls (the console signs in
        // with Cognito).
        return Err(ApiError::Unauthorized);
    }
    let sessions = &state.console.sessions;
    if let Err(retry_after_secs) = sessions.check_throttle() {
        return Err(ApiError::SignInThrottled { retry_after_secs });
    }
    if !state.admin.matches(token) {
        sessions.record_failure();
        tracing::warn!("console sign-in refused: wrong admin token");
        return Err(ApiError::Unauthorized);
    }
    let (cookie, session) = sessions.start()?;
    tracing::info!("console session started");
    let mut resp = Json(json!({
        "csrfToken": session.csrf_token,
        "expiresAt": rfc3339(session.expires_at),
    }))
    .into_response();
    if let Some(v) = cookie_header(&cookie, sessions.ttl().as_secs(), secure) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(no_store(resp))
}

/// Middleware of the session routes: a live session (set as an extension), and the CSRF
/// token on state-changing methods.
pub async fn require_session(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let session = request_session(&state, request.headers()).ok_or(ApiError::Unauthorized)?;
    check_csrf(request.method(), request.headers(), &session)?;
    request.extensions_mut().insert(session);
    Ok(next.run(request).await)
}

/// `GET /console/session`: the session's CSRF token and expiry.
pub async fn current(
    State(state): State<AppState>,
    axum::Extension(session): axum::Extension<ConsoleSession>,
) -> Response {
    no_store(
        Json(json!({
            "signedIn": true,
            "csrfToken": session.csrf_token,
            "expiresAt": rfc3339(session.expires_at),
            "name": state.console.name,
        }))
        .into_response(),
    )
}

/// `DELETE /console/session`: ends the session and clears the cookie.
pub async fn sign_out(State(state): State<AppState>, request: Request) -> Response {
    if let Some(cookie) = session_cookie(request.headers()) {
        state.console.sessions.end(cookie);
    }
    let secure = over_https(request.headers(), request.uri().scheme_str());
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(v) = cookie_header("", 0, secure) {
        resp.headers_mut().insert(SET_COOKIE, v);
    }
    tracing::info!("console session ended");
    no_store(resp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; vmx_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("vmx_session_x=1"));
        h.append(COOKIE, HeaderValue::from_static("vmx_session="));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn https_is_seen_through_a_proxy_header_or_the_uri() {
        let mut h = HeaderMap::new();
        assert!(!over_https(&h, None));
        assert!(over_https(&h, Some("https")));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(over_https(&h, None));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!over_https(&h, Some("http")));
    }
}
