//! Request extraction that turns every malformed input into a clear 4xx [`ApiError`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body, parsed into a `Value` for field-by-field validation.
pub struct JsonBody(pub Value);

/// The body limit, put into request extensions by the router so rejections can name it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match OptionalJsonBody::from_request(req, state).await? {
            OptionalJsonBody(Some(v)) => Ok(JsonBody(v)),
            OptionalJsonBody(None) => Err(ApiError::bad_request("body", "a JSON body is required")),
        }
    }
}

/// A JSON body that may be absent (empty or whitespace only).
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(crate::config::DEFAULT_MAX_BODY);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::bad_request("body", "the request body could not be read")
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| OptionalJsonBody(Some(v)))
            .map_err(|e| {
                ApiError::bad_request(
                    "body",
                    format!(
                        "malformed JSON at line {} column {}: {}",
                        e.line(),
                        e.column(),
                        match e.classify() {
                            serde_json::error::Category::Eof => "unexpected end of input",
                            serde_json::error::Category::Syntax => "syntax error",
                            serde_json::error::Category::Data => "invalid data",
                            serde_json::error::Category::Io => "read error",
                        }
                    ),
                )
            })
    }
}

/// The `{id}` of a route, with a malformed (e.g. not UTF-8) id as a JSON 400 naming `id`
/// instead of axum's plain-text rejection.
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| PathId(id))
            .map_err(|_| ApiError::bad_request("id", "id: must be a valid identifier"))
    }
}
