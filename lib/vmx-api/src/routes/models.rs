//! `GET /v1/models`: the models a caller may use.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

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
