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
use vmx_domain::api_key::NewApiKey;
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

/// Revokes the key (idempotent); it stops working at once in this process and within the
/// cache TTL everywhere else.
pub async fn revoke(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let now = state.gateway.clock.now();
    state.gateway.api_keys.revoke(&id, now).await?;
    state.gateway.invalidate_keys();
    tracing::info!(api_key_id = %id, "api key revoked");
    Ok(StatusCode::NO_CONTENT)
}
