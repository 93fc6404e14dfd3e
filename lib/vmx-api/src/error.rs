//! The HTTP layer's one error type, and the one place errors become status codes.
//!
//! Rule: a client sees a stable `code`, a message written for it, and the offending `field`
//! where there is one. Internal detail (store, crypto, SDK text) is logged here, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use vmx_domain::Error as DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error")]
    Panic,
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Domain(e) => match e {
                DomainError::Invalid { .. } => StatusCode::BAD_REQUEST,
                DomainError::NotFound { .. } => StatusCode::NOT_FOUND,
                DomainError::NameTaken(_) | DomainError::VersionConflict { .. } => {
                    StatusCode::CONFLICT
                }
                DomainError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                DomainError::Crypto { .. } | DomainError::Internal { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Panic => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// (code, client message, field, retry-after seconds)
    fn parts(&self) -> (&'static str, String, Option<String>, Option<u64>) {
        match self {
            Self::Domain(e) => match e {
                DomainError::Invalid { field, message } => (
                    "invalid_request",
                    format!("{field}: {message}"),
                    Some(field.clone()),
                    None,
                ),
                DomainError::NotFound { what } => {
                    ("not_found", format!("{what} not found"), None, None)
                }
                DomainError::NameTaken(_) => {
                    ("name_taken", e.to_string(), Some("name".into()), None)
                }
                DomainError::VersionConflict { .. } => (
                    "version_conflict",
                    e.to_string(),
                    Some("version".into()),
                    None,
                ),
                DomainError::Unavailable {
                    retry_after_secs, ..
                } => (
                    "unavailable",
                    "a backing service is temporarily unavailable; retry later".into(),
                    None,
                    Some(retry_after_secs.unwrap_or(1)),
                ),
                DomainError::Crypto { .. } => (
                    "credential_unavailable",
                    "the connection's stored credentials could not be decrypted".into(),
                    None,
                    None,
                ),
                DomainError::Internal { .. } => {
                    ("internal_error", "internal error".into(), None, None)
                }
            },
            Self::Unauthorized => (
                "unauthorized",
                "missing or invalid credentials: send Authorization: Bearer <token>".into(),
                None,
                None,
            ),
            Self::PayloadTooLarge { limit } => (
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
                Some("body".into()),
                None,
            ),
            Self::BadRequest { field, message } => {
                ("invalid_request", message.clone(), field.clone(), None)
            }
            Self::RouteNotFound(path) => ("not_found", format!("no route for {path}"), None, None),
            Self::MethodNotAllowed => (
                "method_not_allowed",
                "method not allowed on this route".into(),
                None,
                None,
            ),
            Self::Panic => ("internal_error", "internal error".into(), None, None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The only place internal detail goes: the log, never the body.
            tracing::error!(error = %self, status = status.as_u16(), "request failed");
        }
        let (code, message, field, retry_after) = self.parts();
        let mut body = json!({"error": {"code": code, "message": message}});
        if let Some(f) = field {
            body["error"]["field"] = json!(f);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, Self::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
