//! Route handlers, one module per resource.

pub mod chat;
pub mod connections;
pub mod inference;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use vmx_domain::provider::ProviderKind;

use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn providers(State(_): State<AppState>) -> Json<Value> {
    let data: Vec<_> = ProviderKind::ALL.iter().map(|p| p.descriptor()).collect();
    Json(json!({ "data": data }))
}
