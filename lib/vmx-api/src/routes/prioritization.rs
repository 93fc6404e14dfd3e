//! `/v1/prioritization`: the prioritization pools (see [`vmx_domain::prioritization`]). One
//! definition for the deployment, replaced as a whole.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use vmx_domain::prioritization::{MAX_POOL_KEYS, PoolShare, Prioritization};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::JsonBody;

/// The definition as the API shows it: the pools, and the `default` pool of every other key.
fn view(definition: &Prioritization) -> Value {
    let d = PoolShare::default_pool();
    json!({
        "pools": definition.pools,
        "defaultPool": {"name": d.name, "minReservation": d.min, "maxReservation": d.max},
    })
}

/// `GET /v1/prioritization`.
pub async fn get(State(state): State<AppState>) -> Result<Response, ApiError> {
    let definition = state.gateway.api_keys.prioritization().await?;
    Ok(Json(view(&definition)).into_response())
}

/// `PUT /v1/prioritization`: validated as a whole (400 naming the field), then stored; other
/// warm instances see it at their next admission ([`crate::gateway::Gateway::announce_pools_change`]).
pub async fn put(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    // The key ids the body names (at most MAX_POOL_KEYS + 1 are looked up; the parser
    // refuses more), then which of them exist.
    let named: BTreeSet<String> = body
        .get("pools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("apiKeys").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .take(MAX_POOL_KEYS + 1)
        .map(str::to_owned)
        .collect();
    let mut known = BTreeSet::new();
    for id in named {
        if state.gateway.api_keys.get(&id).await?.is_some() {
            known.insert(id);
        }
    }
    let definition = Prioritization::parse(&body, |id| known.contains(id))?;
    state
        .gateway
        .api_keys
        .put_prioritization(&definition)
        .await?;
    state.gateway.invalidate_prioritization();
    state.gateway.announce_pools_change().await?;
    tracing::info!(
        pools = definition.pools.len(),
        "prioritization pools replaced"
    );
    Ok(Json(view(&definition)).into_response())
}
