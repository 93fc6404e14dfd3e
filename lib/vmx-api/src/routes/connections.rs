//! `/v1/connections` routes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Value, json};
use vmx_domain::connection::Connection;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::JsonBody;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

fn with_etag(status: StatusCode, c: &Connection) -> Response {
    let mut resp = (status, Json(c.view())).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", c.version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let c = state.connections.create(&body).await?;
    state.gateway.invalidate();
    tracing::info!(connection_id = %c.id, provider = %c.provider, "connection created");
    Ok(with_etag(StatusCode::CREATED, &c))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = state.connections.get(&id).await?;
    Ok(with_etag(StatusCode::OK, &c))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = params.keys().find(|k| *k != "limit" && *k != "cursor") {
        return Err(ApiError::bad_request(
            k.clone(),
            format!("{k}: unknown query parameter; allowed: limit, cursor"),
        ));
    }
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    "limit",
                    format!("limit: must be an integer from 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    let after = match params.get("cursor") {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::bad_request("cursor", "cursor: not a cursor returned by this API")
        })?),
    };
    let page = state.connections.list(limit, after.as_deref()).await?;
    let data: Vec<_> = page.items.iter().map(Connection::view).collect();
    let next = page.next_after.map(|id| B64URL.encode(format!("c1:{id}")));
    Ok(Json(json!({"data": data, "nextCursor": next})).into_response())
}

fn decode_cursor(c: &str) -> Option<String> {
    let bytes = B64URL.decode(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix("c1:")?;
    (!id.is_empty() && id.len() <= 64 && id.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-'))
        .then(|| id.to_owned())
}

pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let if_match = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(parse_if_match(v).ok_or_else(|| {
            ApiError::bad_request(
                "If-Match",
                "If-Match: must be the connection's version as returned in ETag, e.g. \"3\"",
            )
        })?),
    };
    let c = state.connections.update(&id, &body, if_match).await?;
    state.gateway.invalidate();
    tracing::info!(connection_id = %c.id, version = c.version, "connection updated");
    Ok(with_etag(StatusCode::OK, &c))
}

fn parse_if_match(v: &HeaderValue) -> Option<u64> {
    let s = v.to_str().ok()?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse().ok().filter(|n| *n > 0)
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.connections.delete(&id).await?;
    state.gateway.invalidate();
    tracing::info!(connection_id = %id, "connection deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/connections/{id}/capacity?top=N`: each enabled window with its limit, use and
/// reset, and the busiest source IPs of source-ip windows.
pub async fn capacity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let top = match params.get("top") {
        None => 10,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=vmx_domain::admission::MAX_TOP_IPS).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "top",
                    format!(
                        "top: must be an integer from 1 to {}",
                        vmx_domain::admission::MAX_TOP_IPS
                    ),
                )
            })?,
    };
    let c = state.connections.get(&id).await?;
    let request = vmx_domain::admission::UsageRequest::new(
        &c.id,
        &c.capacity,
        top,
        state.gateway.clock.now(),
    );
    let usage = state.gateway.ledger.usage(&request).await?;
    let mut view = usage.view();
    if let Value::Object(o) = &mut view {
        o.insert("connectionId".to_owned(), Value::String(c.id.clone()));
        o.insert("name".to_owned(), Value::String(c.name.clone()));
    }
    Ok(Json(view).into_response())
}
