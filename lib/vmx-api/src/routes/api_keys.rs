//! `/v1/api-keys`: gateway API keys for inference callers. A key is shown once, at
//! creation; only its SHA-256 is stored. A key's `connections` (ids or names) are resolved
//! to connection ids at creation and stored as ids, so renaming a connection does not change
//! what a key reaches.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vmx_domain::api_key::{ApiKeyPatch, NewApiKey};
use vmx_domain::secret::ExposeSecret;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId};
use crate::routes::{encode_cursor, page_params};

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let now = state.gateway.clock.now();
    let mut new_key = NewApiKey::parse(&body, now)?;
    if let Some(refs) = new_key.connections.take() {
        new_key.connections = Some(connection_ids(&state, refs).await?);
    }
    let (record, key) = new_key.issue(uuid::Uuid::now_v7().to_string(), now)?;
    state.gateway.api_keys.insert(&record).await?;
    tracing::info!(api_key_id = %record.id, "api key created");
    let mut view = record.view();
    if let Value::Object(o) = &mut view {
        o.insert(
            "key".to_owned(),
            Value::String(key.expose_secret().to_owned()),
        );
    }
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The ids of the connections `refs` name (each an id or a name, looked up as inference
/// routing does: [`ConnectionService::find`]); one that names no connection is refused,
/// naming it (`connections[1]`). Refs of one connection are kept once.
///
/// [`ConnectionService::find`]: crate::service::ConnectionService::find
async fn connection_ids(state: &AppState, refs: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let Some(c) = state.connections.find(r).await? else {
            return Err(vmx_domain::Error::invalid(
                format!("connections[{i}]"),
                format!("no connection with the id or name '{r}'"),
            )
            .into());
        };
        if !ids.contains(&c.id) {
            ids.push(c.id);
        }
    }
    Ok(ids)
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (limit, after) = page_params(&params)?;
    let mut items = state
        .gateway
        .api_keys
        .list(limit + 1, after.as_deref())
        .await?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|k| encode_cursor(&k.id))
    } else {
        None
    };
    let data: Vec<Value> = items.iter().map(|k| k.view()).collect();
    Ok(Json(json!({"data": data, "nextCursor": next})).into_response())
}

pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let record = state
        .gateway
        .api_keys
        .get(&id)
        .await?
        .ok_or(vmx_domain::Error::NotFound { what: "api key" })?;
    Ok(Json(record.view()).into_response())
}

/// `PATCH /v1/api-keys/{id}` with `{"capacity": [...]}` (or `null`/`[]` to remove it):
/// replaces the key's own capacity entries, validated like a connection's (400 naming the
/// field, e.g. `capacity[0].period`). Like a revocation, the change applies at once in this
/// process and at the next admission on other instances
/// ([`crate::gateway::Gateway::announce_key_change`]).
pub async fn patch(
    State(state): State<AppState>,
    PathId(id): PathId,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let patch = ApiKeyPatch::parse(&body)?;
    let record = match patch.capacity {
        Some(capacity) => state.gateway.api_keys.set_capacity(&id, capacity).await?,
        None => state
            .gateway
            .api_keys
            .get(&id)
            .await?
            .ok_or(vmx_domain::Error::NotFound { what: "api key" })?,
    };
    state.gateway.invalidate_keys();
    state.gateway.announce_key_change(&record).await?;
    tracing::info!(api_key_id = %id, "api key updated");
    Ok(Json(record.view()).into_response())
}

/// `GET /v1/api-keys/{id}/usage?from=&to=&granularity=hour|day`: the key's usage on every
/// connection it may use (its scope, or every connection for an unscoped key), one bucket per
/// connection, model and hour or day. Cost: one usage query per connection read, each
/// reading every key's buckets of that connection in the range (the key id is in the
/// buckets' sort key, not an index). Usage of connections deleted since is not listed.
pub async fn usage(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "granularity"))
    {
        return Err(ApiError::bad_request(
            k.clone(),
            format!("{k}: unknown query parameter; allowed: from, to, granularity"),
        ));
    }
    let record = state
        .gateway
        .api_keys
        .get(&id)
        .await?
        .ok_or(vmx_domain::Error::NotFound { what: "api key" })?;
    let range = vmx_domain::usage::UsageRange::parse(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        params.get("granularity").map(String::as_str),
        state.gateway.clock.now(),
    )?;
    let connection_ids = state.gateway.connections_of_key(&record).await?;
    let mut data = Vec::new();
    for connection_id in &connection_ids {
        let buckets = state
            .gateway
            .usage
            .query_by(
                connection_id,
                range.from,
                range.to,
                range.granularity,
                vmx_domain::usage::UsageGroup::ApiKey,
            )
            .await?;
        for b in buckets
            .into_iter()
            .filter(|b| b.api_key_id.as_deref() == Some(record.id.as_str()))
        {
            let mut v = serde_json::to_value(&b).map_err(vmx_domain::Error::internal)?;
            if let Value::Object(o) = &mut v {
                o.insert("connectionId".into(), Value::String(connection_id.clone()));
            }
            data.push(v);
        }
    }
    Ok(Json(json!({
        "apiKeyId": record.id,
        "granularity": range.granularity,
        "from": vmx_domain::connection::rfc3339(range.from),
        "to": vmx_domain::connection::rfc3339(range.to),
        "data": data,
    }))
    .into_response())
}

/// Revokes the key (idempotent); it stops working at once in this process, and at their
/// next request on other instances ([`crate::gateway::Gateway::announce_key_change`]).
pub async fn revoke(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let now = state.gateway.clock.now();
    let record = state.gateway.api_keys.revoke(&id, now).await?;
    state.gateway.invalidate_keys();
    state.gateway.announce_key_change(&record).await?;
    tracing::info!(api_key_id = %id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
