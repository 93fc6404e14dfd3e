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
    /// A gateway API key, checked active when the request came in; `cached`: its record
    /// came from this process's cache rather than from the store.
    Key {
        record: Box<ApiKeyRecord>,
        cached: bool,
    },
}

impl Caller {
    /// The id of the caller's gateway API key (`None` for the admin token).
    pub fn api_key_id(&self) -> Option<String> {
        match self {
            Self::Admin => None,
            Self::Key { record, .. } => Some(record.id.clone()),
        }
    }

    /// The own capacity entries of the caller's API key (empty for the admin token).
    pub fn api_key_capacity(&self) -> Vec<vmx_domain::capacity::CapacityEntry> {
        match self {
            Self::Admin => Vec::new(),
            Self::Key { record, .. } => record.capacity.clone(),
        }
    }

    /// Whether this caller may use the connection.
    pub fn may_use(&self, connection_id: &str, connection_name: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Key { record, .. } => record.allows(connection_id, connection_name),
        }
    }

    /// Whether the caller is a key whose record came from this process's cache.
    pub fn key_cached(&self) -> bool {
        matches!(self, Self::Key { cached: true, .. })
    }

    /// The caller checked again against the store (after its cached lookups were dropped,
    /// or before its first use of a connection loaded anew): a key is read anew and must
    /// still be active (401 otherwise); the admin token is unchanged.
    pub async fn recheck(&self, gateway: &crate::gateway::Gateway) -> Result<Self, ApiError> {
        match self {
            Self::Admin => Ok(Self::Admin),
            Self::Key { record, .. } => {
                gateway.invalidate_key(&record.id);
                let (record, cached) = gateway
                    .lookup_key_hash(record.hash.clone())
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                record
                    .check_active(gateway.clock.now())
                    .map_err(|_| ApiError::Unauthorized)?;
                Ok(Self::Key {
                    record: Box::new(record),
                    cached,
                })
            }
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
        let (record, cached) = state
            .gateway
            .lookup_key(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        record
            .check_active(state.gateway.clock.now())
            .map_err(|_| ApiError::Unauthorized)?;
        state.gateway.note_key_used(&record).await;
        Caller::Key {
            record: Box::new(record),
            cached,
        }
    };
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}
