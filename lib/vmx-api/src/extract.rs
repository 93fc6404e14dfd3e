//! Request extraction that turns every malformed input into a clear 4xx [`ApiError`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
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
            return Err(ApiError::bad_request("body", "a JSON body is required"));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
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
