//! Route handlers, one module per resource.

pub mod api_keys;
pub mod chat;
pub mod connections;
pub mod inference;
pub mod messages;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::error::ApiError;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

/// `limit` (1-100, default 50) and `cursor` of a list route; anything else is refused.
pub fn page_params(params: &HashMap<String, String>) -> Result<(usize, Option<String>), ApiError> {
    if let Some(k) = params.keys().find(|k| *k != "limit" && *k != "cursor") {
        return Err(ApiError::bad_request(
            k.clone(),
            format!("{k}: unknown query parameter; allowed: limit, cursor"),
        ));
    }
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "limit",
                    format!("limit: must be an integer from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let after = match params.get("cursor") {
        None => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            ApiError::bad_request("cursor", "cursor: not a cursor returned by this API")
        })?),
    };
    Ok((limit, after))
}

/// An opaque cursor naming the last id of a page.
pub fn encode_cursor(id: &str) -> String {
    B64URL.encode(format!("c1:{id}"))
}

fn decode_cursor(c: &str) -> Option<String> {
    let bytes = B64URL.decode(c).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix("c1:")?;
    (!id.is_empty() && id.len() <= 64 && id.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-'))
        .then(|| id.to_owned())
}

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
