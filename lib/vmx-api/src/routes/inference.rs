//! Inference routes (OpenAI-compatible).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::routes::chat;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &state.trusted_proxies,
    );
    let JsonBody(body) =
        <JsonBody as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    chat::handle(&state.gateway, body, ip, |resolved| {
        scope(&caller, resolved)
    })
    .await
}

/// `POST /v1/messages` (Anthropic Messages API).
pub async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &state.trusted_proxies,
    );
    let beta = request
        .headers()
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let JsonBody(body) =
        <JsonBody as axum::extract::FromRequest<AppState>>::from_request(request, &state).await?;
    crate::routes::messages::handle(&state.gateway, body, beta.as_deref(), ip, |resolved| {
        scope(&caller, resolved)
    })
    .await
}

fn scope(caller: &Caller, resolved: &crate::gateway::Resolved) -> Result<(), ApiError> {
    if caller.may_use(&resolved.connection.id, &resolved.connection.name) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "connection_not_allowed",
            message: format!(
                "this API key may not use connection '{}'",
                resolved.connection.name
            ),
        })
    }
}

/// Most connections `GET /v1/models` walks.
const MODELS_SCAN_LIMIT: usize = 1000;

/// `GET /v1/models`: what the caller may use, as `<connection>/<model>` from each
/// connection's `allowedModels`, in OpenAI's list shape.
pub async fn models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let mut data = Vec::new();
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = state.connections.list(100, after.as_deref()).await?;
        for c in &page.items {
            if !caller.may_use(&c.id, &c.name) {
                continue;
            }
            for m in c.allowed_models.iter().flatten() {
                data.push(json!({
                    "id": format!("{}/{m}", c.name),
                    "object": "model",
                    "created": c.created_at.unix_timestamp(),
                    "owned_by": c.provider.id(),
                }));
            }
        }
        seen += page.items.len();
        match page.next_after {
            Some(next) if seen < MODELS_SCAN_LIMIT => after = Some(next),
            _ => break,
        }
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}
