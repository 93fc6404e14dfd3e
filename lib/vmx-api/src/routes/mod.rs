//! Route handlers, one module per resource or inference route (each handler lives in the
//! module named after its route: `chat::chat_completions`, `messages::messages`,
//! `models::models`), and what the list and inference routes share.

pub mod api_keys;
pub mod chat;
pub mod connections;
pub mod messages;
pub mod models;
pub mod prioritization;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use crate::auth::Caller;
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::gateway::{Resolved, split_model};

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

use std::net::IpAddr;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use serde_json::{Map, Value, json};
use vmx_domain::connection::Connection;
use vmx_domain::provider::ProviderKind;

use crate::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn providers(State(_): State<AppState>) -> Json<Value> {
    let data: Vec<_> = ProviderKind::ALL.iter().map(|p| p.descriptor()).collect();
    Json(json!({ "data": data }))
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text of this process's metrics
/// ([`crate::metrics`]); 404 in a process that writes them as CloudWatch EMF instead.
pub async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, ApiError> {
    let text = state
        .gateway
        .options
        .metrics
        .prometheus_text()
        .ok_or(ApiError::Domain(vmx_domain::Error::NotFound {
            what: "a Prometheus endpoint in this process (its metrics go to CloudWatch as EMF)",
        }))?;
    let mut resp = axum::response::IntoResponse::into_response(text);
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    Ok(resp)
}

/// The source address and the JSON body of an inference request.
pub(crate) async fn inference_request(
    state: &AppState,
    request: Request,
) -> Result<(IpAddr, Value), ApiError> {
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &state.trusted_proxies,
    );
    let JsonBody(body) = JsonBody::from_request(request, state).await?;
    Ok((ip, body))
}

/// What the bodies of the inference routes share, validated.
pub(crate) struct InferenceBody {
    pub connection: String,
    pub model: String,
    /// What the caller sent as `model`, echoed back in responses.
    pub alias: String,
    pub body: Map<String, Value>,
    pub stream: bool,
}

/// An inference body: an object with `model` as `<connection>/<model>` (`example` names
/// one), a non-empty `messages` array of at most `max_messages` (each passing
/// `check_message` with its index), an optional boolean `stream`.
pub(crate) fn parse_inference_body(
    body: Value,
    max_messages: usize,
    example: &str,
    check_message: impl Fn(usize, &Value) -> Result<(), ApiError>,
) -> Result<InferenceBody, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request("body", "body: must be a JSON object"));
    };
    let alias = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_request("model", "model: must be a string")),
        None => return Err(ApiError::bad_request("model", "model: is required")),
    };
    let (connection, model) = split_model(&alias).ok_or_else(|| {
        ApiError::bad_request(
            "model",
            format!("model: must be <connection>/<model>, e.g. {example}"),
        )
    })?;
    let (connection, model) = (connection.to_owned(), model.to_owned());
    match body.get("messages") {
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ApiError::bad_request(
                "messages",
                "messages: must not be empty",
            ));
        }
        Some(Value::Array(m)) if m.len() > max_messages => {
            return Err(ApiError::bad_request(
                "messages",
                format!("messages: at most {max_messages} messages are allowed"),
            ));
        }
        Some(Value::Array(m)) => {
            for (i, msg) in m.iter().enumerate() {
                check_message(i, msg)?;
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "messages",
                "messages: must be an array",
            ));
        }
        None => return Err(ApiError::bad_request("messages", "messages: is required")),
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("stream", "stream: must be a boolean")),
    };
    Ok(InferenceBody {
        connection,
        model,
        alias,
        body,
        stream,
    })
}

/// Whether the caller's API key may use the connection: asked by [`Gateway::resolve`]
/// before any decryption; a connection out of scope answers as one that does not exist.
///
/// [`Gateway::resolve`]: crate::gateway::Gateway::resolve
pub(crate) fn in_scope(caller: &Caller, connection: &Connection) -> bool {
    caller.may_use(&connection.id, &connection.name)
}

/// Attempts of [`admit_current`]; the last one proceeds with what it read, changed or not.
const ADMIT_ROUNDS: usize = 3;

/// Resolves the request's connection for `caller`, checks it (`prepare`, which also picks
/// the provider adapter), and admits the request into its capacity, on the current
/// configuration: when the admission's configuration version shows that the cached
/// connection (or a key reaching it) changed, the admission was refunded and the caches
/// dropped ([`Gateway::admit`]), so the key is read again (401 once revoked), the connection
/// is loaded again (404 once deleted; the new credentials and capacity otherwise) and the
/// request admitted again. A connection loaded anew for a key read from this process's
/// cache re-reads the key first, so a revocation that raised only the version of
/// connections this process had not cached is not missed either.
///
/// [`Gateway::admit`]: crate::gateway::Gateway::admit
#[allow(clippy::too_many_arguments)]
pub(crate) async fn admit_current<P>(
    gateway: &std::sync::Arc<crate::gateway::Gateway>,
    caller: &Caller,
    source_ip: std::net::IpAddr,
    connection: &str,
    model: &str,
    route: vmx_domain::output::Route,
    body: &mut serde_json::Map<String, Value>,
    started: std::time::Instant,
    prepare: impl Fn(&Resolved) -> Result<P, ApiError>,
) -> Result<
    (
        std::sync::Arc<Resolved>,
        P,
        vmx_domain::admission::Admitted,
        crate::accounting::Accounting,
    ),
    ApiError,
> {
    let mut caller = caller.clone();
    let mut round = 1;
    loop {
        let (resolved, loaded) = gateway
            .resolve_loaded(connection, |c| in_scope(&caller, c))
            .await?;
        if loaded && caller.key_cached() {
            caller = caller.recheck(gateway).await?;
            if !in_scope(&caller, &resolved.connection) {
                return Err(crate::gateway::no_connection(connection));
            }
        }
        let prepared = prepare(&resolved)?;
        let origin = crate::accounting::Origin {
            source_ip,
            api_key_id: caller.api_key_id(),
            api_key_capacity: caller.api_key_capacity(),
        };
        let admitted = crate::accounting::Accounting::admit(
            gateway,
            &resolved,
            model,
            route,
            body,
            origin,
            started,
            round < ADMIT_ROUNDS,
        )
        .await?;
        if let Some((admitted, accounting)) = admitted {
            return Ok((resolved, prepared, admitted, accounting));
        }
        caller = caller.recheck(gateway).await?;
        round += 1;
    }
}

/// The connection's `allowedModels`, when non-empty, must list the model.
pub(crate) fn check_model_allowed(resolved: &Resolved, model: &str) -> Result<(), ApiError> {
    match &resolved.connection.allowed_models {
        Some(list) if !list.is_empty() && !list.iter().any(|m| m == model) => {
            Err(ApiError::Forbidden {
                code: "model_not_allowed",
                message: format!(
                    "model '{model}' is not in the allowed models of connection '{}'",
                    resolved.connection.name
                ),
            })
        }
        _ => Ok(()),
    }
}
