//! `/v1/connections` routes.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vmx_domain::connection::Connection;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody, PathId};
use crate::routes::{encode_cursor, page_params};
use crate::service::ListFilter;

/// Longest `q` (name search) of a list.
const MAX_QUERY_CHARS: usize = 200;

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

pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let c = state.connections.get(&id).await?;
    Ok(with_etag(StatusCode::OK, &c))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut params = params;
    let provider = match params.remove("provider") {
        None => None,
        Some(p) => Some(vmx_domain::connection::parse_provider(&p, "provider")?),
    };
    let q = params.remove("q");
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS)
    {
        return Err(ApiError::bad_request(
            "q",
            format!("q: at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let filter = ListFilter::new(provider, q.as_deref());
    let (limit, after) = page_params(&params).map_err(|e| match e {
        ApiError::BadRequest { field: Some(f), .. } if f != "limit" && f != "cursor" => {
            ApiError::bad_request(
                f.clone(),
                format!("{f}: unknown query parameter; allowed: limit, cursor, provider, q"),
            )
        }
        e => e,
    })?;
    let page = state
        .connections
        .list_filtered(limit, after.as_deref(), &filter)
        .await?;
    let data: Vec<_> = page.items.iter().map(Connection::view).collect();
    let next = page.next_after.as_deref().map(encode_cursor);
    Ok(Json(json!({"data": data, "nextCursor": next})).into_response())
}

pub async fn patch(
    State(state): State<AppState>,
    PathId(id): PathId,
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
    state.gateway.announce_change(&c.id).await?;
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
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    state.connections.delete(&id).await?;
    state.gateway.invalidate();
    state.gateway.announce_change(&id).await?;
    tracing::info!(connection_id = %id, "connection deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/connections/{id}/capacity?top=N`: each enabled window with its limit, use and
/// reset, the busiest source IPs of source-ip windows, and with prioritization pools each
/// pool's use of the connection-wide windows.
pub async fn capacity(
    State(state): State<AppState>,
    PathId(id): PathId,
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
    let mut request = vmx_domain::admission::UsageRequest::new(
        &c.id,
        &c.capacity,
        top,
        state.gateway.clock.now(),
    );
    // Per-pool use, when pools are defined, on the windows they split (the definition is
    // cached, like admission's; the pool counters come with the same ledger read).
    if request
        .windows
        .iter()
        .any(|w| w.dimension.is_none() && (w.requests.is_some() || w.tokens.is_some()))
    {
        request = request.with_pools(&*state.gateway.pools().await?);
    }
    let usage = state.gateway.ledger.usage(&request).await?;
    let mut view = usage.view();
    if let Value::Object(o) = &mut view {
        o.insert("connectionId".to_owned(), Value::String(c.id.clone()));
        o.insert("name".to_owned(), Value::String(c.name.clone()));
    }
    Ok(Json(view).into_response())
}

/// `GET /v1/connections/{id}/usage?from=&to=&granularity=hour|day&groupBy=model|apiKey`.
pub async fn usage(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "granularity" | "groupBy"))
    {
        return Err(ApiError::bad_request(
            k.clone(),
            format!("{k}: unknown query parameter; allowed: from, to, granularity, groupBy"),
        ));
    }
    let group = vmx_domain::usage::UsageGroup::parse(params.get("groupBy").map(String::as_str))?;
    let c = state.connections.get(&id).await?;
    let range = vmx_domain::usage::UsageRange::parse(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        params.get("granularity").map(String::as_str),
        state.gateway.clock.now(),
    )?;
    let buckets = state
        .gateway
        .usage
        .query_by(&c.id, range.from, range.to, range.granularity, group)
        .await?;
    Ok(Json(json!({
        "connectionId": c.id,
        "granularity": range.granularity,
        "from": vmx_domain::connection::rfc3339(range.from),
        "to": vmx_domain::connection::rfc3339(range.to),
        "data": buckets,
    }))
    .into_response())
}

/// `POST /v1/connections/{id}/test` (optional body `{"model": "..."}`): checks the stored
/// credentials with the provider's cheapest call.
pub async fn test(
    State(state): State<AppState>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    let model = match body {
        None => None,
        Some(v) => match v.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if !m.is_empty() => Some(m.clone()),
            Some(_) => return Err(ApiError::bad_request("model", "model: must be a string")),
        },
    };
    let c = state.connections.get(&id).await?;
    let outcome = state.gateway.test_connection(&c, model.as_deref()).await?;
    Ok(Json(outcome).into_response())
}

/// `POST /v1/connections/check` `{"provider", "config", "model"?}`: tries a configuration
/// that is not saved (quick add checks each key before saving) with the provider's cheapest
/// call. The same outcome as the test of a saved connection; the key is never echoed.
pub async fn check(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = vmx_domain::connection::CheckInput::parse(&body)?;
    let outcome = state.gateway.check_config(input).await?;
    Ok(Json(outcome).into_response())
}

/// Longest `model` filter of the history (the store keeps no longer model ids).
const MAX_MODEL_BYTES: usize = vmx_domain::discovered::MODEL_MAX_BYTES;

/// `GET /v1/connections/{id}/discovered-capacity/history?limit=&cursor=&model=`: the
/// connection's discovered-limit changes, newest first, paged like the lists.
pub async fn discovered_history(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "limit" | "cursor" | "model"))
    {
        return Err(ApiError::bad_request(
            k.clone(),
            format!("{k}: unknown query parameter; allowed: limit, cursor, model"),
        ));
    }
    let model = match params.get("model") {
        None => None,
        Some(m) if m.is_empty() || m.len() > MAX_MODEL_BYTES => {
            return Err(ApiError::bad_request(
                "model",
                format!("model: must be 1-{MAX_MODEL_BYTES} bytes"),
            ));
        }
        Some(m) => Some(m.as_str()),
    };
    let limit = match params.get("limit") {
        None => crate::routes::DEFAULT_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::routes::MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "limit",
                    format!(
                        "limit: must be an integer from 1 to {}",
                        crate::routes::MAX_PAGE
                    ),
                )
            })?,
    };
    let after = match params.get("cursor") {
        None => None,
        Some(c) => Some(decode_history_cursor(c).ok_or_else(|| {
            ApiError::bad_request("cursor", "cursor: not a cursor returned by this API")
        })?),
    };
    let c = state.connections.get(&id).await?;
    // One more than asked tells whether another page follows.
    let mut changes = state
        .gateway
        .discovered
        .discovered_history(&c.id, model, limit + 1, after.as_deref())
        .await?;
    let next = (changes.len() > limit).then(|| {
        changes.truncate(limit);
        changes
            .last()
            .map(|last| encode_history_cursor(&last.key()))
    });
    Ok(Json(json!({
        "connectionId": c.id,
        "data": changes,
        "nextCursor": next.flatten(),
    }))
    .into_response())
}

fn encode_history_cursor(key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("h1:{key}"))
}

/// The history key a cursor names: `<20 digits>#...`, no longer than a key can be.
fn decode_history_cursor(c: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let key = text.strip_prefix("h1:")?;
    let (digits, rest) = key.split_at_checked(20)?;
    (digits.bytes().all(|b| b.is_ascii_digit())
        && rest.starts_with('#')
        && key.len() <= 20 + MAX_MODEL_BYTES + 64)
        .then(|| key.to_owned())
}
