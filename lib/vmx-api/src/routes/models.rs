//! `GET /v1/models`: the models a caller may use.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// `GET /v1/models`: what the caller may use, as `<connection>/<model>` from each
/// connection's `allowedModels`, in OpenAI's list shape. The connections come from the
/// gateway's cached catalog ([`crate::gateway::Gateway::catalog`]), not a store read per call.
pub async fn models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let catalog = state.gateway.catalog().await?;
    let data: Vec<_> = catalog
        .iter()
        .filter(|c| caller.may_use(&c.id, &c.name))
        .flat_map(|c| {
            c.allowed_models.iter().map(|m| {
                json!({
                    "id": format!("{}/{m}", c.name),
                    "object": "model",
                    "created": c.created_at.unix_timestamp(),
                    "owned_by": c.provider.id(),
                })
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}
