//! Admin authentication.
//!
//! Locally, admin routes take `Authorization: Bearer <token>`, compared in constant time.
//! In Lambda, API Gateway authorizes admin routes with IAM; the function crate then attaches
//! a [`CallerIdentity`] taken from the request context, and the router refuses any request
//! that arrives without one (one that did not pass through an authorizer).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use vmx_domain::api_key::ApiKeyRecord;

use crate::AppState;
use crate::error::ApiError;

/// Who API Gateway authenticated (an IAM principal ARN). Set only by the Lambda adapter.
#[derive(Debug, Clone)]
pub struct CallerIdentity(pub String);

/// How admin requests are authenticated.
#[derive(Clone)]
pub enum AdminAuth {
    /// A bearer token (the local server). Only its SHA-256 digest is kept.
    Bearer { digest: [u8; 32] },
    /// API Gateway already checked IAM; require the identity it passed on.
    Gateway,
}

impl AdminAuth {
    pub fn bearer(token: &SecretString) -> Self {
        Self::Bearer {
            digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        }
    }

    /// Whether `token` is the admin bearer token (constant time over digests).
    pub fn matches(&self, token: &str) -> bool {
        match self {
            Self::Bearer { digest } => {
                let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                bool::from(got.ct_eq(digest))
            }
            Self::Gateway => false,
        }
    }

    /// Checks a request's headers and extensions.
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        match self {
            Self::Bearer { .. } => {
                let presented = bearer_token(request).ok_or(ApiError::Unauthorized)?;
                if self.matches(presented) {
                    Ok(())
                } else {
                    Err(ApiError::Unauthorized)
                }
            }
            Self::Gateway => match request.extensions().get::<CallerIdentity>() {
                Some(CallerIdentity(who)) if !who.is_empty() => Ok(()),
                _ => Err(ApiError::Unauthorized),
            },
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware for admin routes. Locally, a request without a bearer token may present a
/// console session cookie instead (with the CSRF token on state-changing methods).
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if bearer_token(&request).is_none()
        && let Some(session) = crate::session::request_session(&state, request.headers())
    {
        crate::session::check_csrf(request.method(), request.headers(), &session)?;
        return Ok(next.run(request).await);
    }
    state.admin.check(&request)?;
    Ok(next.run(request).await)
}

/// Who is calling an inference route.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The local admin token: every connection.
    Admin,
    /// A gateway API key, checked active when the request came in.
    Key(Box<ApiKeyRecord>),
}

impl Caller {
    /// The id of the caller's gateway API key (`None` for the admin token).
    pub fn api_key_id(&self) -> Option<String> {
        match self {
            Self::Admin => None,
            Self::Key(k) => Some(k.id.clone()),
        }
    }

    /// The own capacity entries of the caller's API key (empty for the admin token).
    pub fn api_key_capacity(&self) -> Vec<vmx_domain::capacity::CapacityEntry> {
        match self {
            Self::Admin => Vec::new(),
            Self::Key(k) => k.capacity.clone(),
        }
    }

    /// Whether this caller may use the connection.
    pub fn may_use(&self, connection_id: &str, connection_name: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Key(k) => k.allows(connection_id, connection_name),
        }
    }
}

/// The credential of an inference request: `Authorization: Bearer <key>` (OpenAI SDKs) or
/// `x-api-key: <key>` (Anthropic SDKs).
pub fn presented_key(request: &Request) -> Option<&str> {
    bearer_token(request).or_else(|| {
        request
            .headers()
            .get("x-api-key")?
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

/// Middleware for inference routes: a gateway API key that exists, is not revoked and has
/// not expired; locally also the admin token.
pub async fn require_caller(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = presented_key(&request).ok_or(ApiError::Unauthorized)?;
    let caller = if matches!(state.admin, AdminAuth::Bearer { .. }) && state.admin.matches(token) {
        Caller::Admin
    } else {
        let record = state
            .gateway
            .find_key(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        record
            .check_active(state.gateway.clock.now())
            .map_err(|_| ApiError::Unauthorized)?;
        state.gateway.note_key_used(&record).await;
        Caller::Key(Box::new(record))
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
