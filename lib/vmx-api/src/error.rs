//! The HTTP layer's one error type, and the one place errors become status codes.
//!
//! Rule: a client sees a stable `code`, a message written for it, and the offending field
//! where there is one. Internal detail (store, crypto, SDK text) is logged here, never sent.
//!
//! Every error body has the same shape, which is also OpenAI's, so the official SDKs raise
//! the right exception classes:
//! `{"error": {"message", "type", "code", "param", "field"?}}` (`param` and `field` both
//! name the offending field: `param` for OpenAI SDKs, `field` for our admin API).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vmx_domain::Error as DomainError;
use vmx_domain::admission::Rejection;
use vmx_domain::inference::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("too many failed sign-in attempts")]
    SignInThrottled { retry_after_secs: u64 },
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("{message}")]
    ModelNotFound { message: String },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("capacity exceeded")]
    Capacity(Rejection),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("internal error")]
    Panic,
    /// The server is serving as many requests as it is configured to (load shedding).
    #[error("overloaded")]
    Overloaded { retry_after_secs: u64 },
}

/// What a response says about an error.
struct Parts {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    /// Tells the OpenAI SDKs not to retry (`x-should-retry: false`) a 5xx that retrying
    /// cannot fix.
    no_retry: bool,
}

impl Parts {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            no_retry: false,
        }
    }
    fn field(mut self, f: impl Into<String>) -> Self {
        self.field = Some(f.into());
        self
    }
    fn retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }
}

/// OpenAI's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().status
    }

    fn parts(&self) -> Parts {
        use StatusCode as S;
        match self {
            Self::Domain(e) => match e {
                DomainError::Invalid { field, message } => Parts::new(
                    S::BAD_REQUEST,
                    "invalid_request",
                    format!("{field}: {message}"),
                )
                .field(field.clone()),
                DomainError::NotFound { what } => {
                    Parts::new(S::NOT_FOUND, "not_found", format!("{what} not found"))
                }
                DomainError::NameTaken(_) => {
                    Parts::new(S::CONFLICT, "name_taken", e.to_string()).field("name")
                }
                DomainError::VersionConflict { .. } => {
                    Parts::new(S::CONFLICT, "version_conflict", e.to_string()).field("version")
                }
                DomainError::Unavailable {
                    retry_after_secs, ..
                } => Parts::new(
                    S::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a backing service is temporarily unavailable; retry later",
                )
                .retry_after(*retry_after_secs),
                DomainError::Crypto { .. } => Parts::new(
                    S::INTERNAL_SERVER_ERROR,
                    "credential_unavailable",
                    "the connection's stored credentials could not be decrypted",
                ),
                DomainError::Internal { .. } => {
                    Parts::new(S::INTERNAL_SERVER_ERROR, "internal_error", "internal error")
                }
            },
            Self::Unauthorized => Parts::new(
                S::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid credentials: send Authorization: Bearer <token>",
            ),
            Self::Forbidden { code, message } => Parts::new(S::FORBIDDEN, code, message.clone()),
            Self::SignInThrottled { retry_after_secs } => Parts::new(
                S::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many wrong admin tokens; sign-in is paused, retry later",
            )
            .retry_after(Some(*retry_after_secs)),
            Self::PayloadTooLarge { limit } => Parts::new(
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
            .field("body"),
            Self::BadRequest { field, message } => Parts {
                field: field.clone(),
                ..Parts::new(S::BAD_REQUEST, "invalid_request", message.clone())
            },
            Self::ModelNotFound { message } => {
                Parts::new(S::NOT_FOUND, "model_not_found", message.clone()).field("model")
            }
            Self::RouteNotFound(path) => {
                Parts::new(S::NOT_FOUND, "not_found", format!("no route for {path}"))
            }
            Self::MethodNotAllowed => Parts::new(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            ),
            Self::Capacity(r) => Parts::new(S::TOO_MANY_REQUESTS, Rejection::CODE, r.message())
                .retry_after(r.retry_after_secs),
            Self::Provider(p) => provider_parts(p),
            Self::Panic => Parts::new(S::INTERNAL_SERVER_ERROR, "internal_error", "internal error"),
            Self::Overloaded { retry_after_secs } => Parts::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is busy with as many requests as it serves at once; retry shortly",
            )
            .retry_after(Some(*retry_after_secs)),
        }
    }

    /// The JSON error body (also used for error events inside a stream).
    pub fn body(&self) -> Value {
        let p = self.parts();
        let mut body = match self {
            Self::Capacity(r) => r.body(),
            _ => json!({"error": {"code": p.code, "message": p.message}}),
        };
        // Anthropic's SDKs read a top-level `"type": "error"`; OpenAI's ignore it.
        body["type"] = json!("error");
        body["error"]["type"] = json!(error_type(p.status));
        body["error"]["param"] = json!(p.field);
        if let Some(f) = p.field {
            body["error"]["field"] = json!(f);
        }
        if let Some(id) = crate::request_id::current() {
            body["error"]["request_id"] = json!(id);
        }
        body
    }
}

/// A response extension on an error response caused by a backing service (DynamoDB, KMS,
/// ...): its metrics `error_class` ([`crate::metrics::backing_error_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingError(pub &'static str);

fn provider_parts(e: &ProviderError) -> Parts {
    use StatusCode as S;
    match e {
        ProviderError::RateLimited {
            retry_after_secs,
            message,
            ..
        } => Parts::new(
            S::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            format!("the provider is rate limiting this connection: {message}"),
        )
        .retry_after(*retry_after_secs),
        ProviderError::Unauthorized { status, message } => Parts {
            no_retry: true,
            ..Parts::new(
                S::BAD_GATEWAY,
                "provider_credentials_rejected",
                format!(
                    "the provider rejected this connection's credentials (HTTP {status}): \
                     {message}; check the connection's configuration"
                ),
            )
        },
        ProviderError::BadRequest {
            status,
            message,
            param,
            ..
        } => Parts {
            field: param.clone(),
            ..Parts::new(
                S::from_u16(*status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(S::BAD_REQUEST),
                "provider_invalid_request",
                format!("the provider rejected the request: {message}"),
            )
        },
        ProviderError::Upstream { status, .. } => Parts::new(
            if *status == 503 {
                S::SERVICE_UNAVAILABLE
            } else {
                S::BAD_GATEWAY
            },
            "provider_error",
            format!("the provider failed (HTTP {status})"),
        ),
        ProviderError::Timeout => Parts::new(
            S::GATEWAY_TIMEOUT,
            "provider_timeout",
            "the provider did not answer in time",
        ),
        ProviderError::Network(_) => Parts::new(
            S::BAD_GATEWAY,
            "provider_unreachable",
            "the provider could not be reached",
        ),
        ProviderError::Malformed(_) => Parts::new(
            S::BAD_GATEWAY,
            "provider_malformed_response",
            "the provider sent a response that could not be read",
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let parts = self.parts();
        // Shed requests are not failures to log one by one (a flood would flood the log).
        if parts.status.is_server_error() && !matches!(self, Self::Overloaded { .. }) {
            // The only place internal detail goes: the log, never the body.
            tracing::error!(error = %self, status = parts.status.as_u16(), "request failed");
        }
        let mut resp = (parts.status, axum::Json(self.body())).into_response();
        let headers = resp.headers_mut();
        if let Some(secs) = parts.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if parts.no_retry {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if matches!(self, Self::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::Domain(e) = &self
            && let Some(class) = crate::metrics::backing_error_class(e)
        {
            // For the request middleware, which counts it in the `errors` metric.
            resp.extensions_mut().insert(BackingError(class));
        }
        resp
    }
}
