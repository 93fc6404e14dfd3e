//! `POST /v1/messages`: the Anthropic Messages API, passed through to `anthropic` and
//! `aws-bedrock-invoke` connections with Anthropic-only fields (cache_control, thinking,
//! tool use, server tools) untouched. `model` is `<connection>/<model>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::Value;
use vmx_domain::inference::{MessagesEvent, ProviderError};
use vmx_domain::output::Route;
use vmx_domain::provider::ProviderKind;

use crate::AppState;
use crate::accounting::{Encoded, Meter, StreamEncoder, sse_response};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::routes::{
    InferenceBody, admit_current, check_model_allowed, inference_request, parse_inference_body,
};

/// `POST /v1/messages` (Anthropic Messages API).
pub async fn messages(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let beta = request
        .headers()
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (ip, body) = inference_request(&state, request).await?;
    handle(&state.gateway, body, beta.as_deref(), ip, &caller).await
}

/// The providers that serve the Messages API.
pub const MESSAGES_PROVIDERS: [ProviderKind; 2] =
    [ProviderKind::Anthropic, ProviderKind::AwsBedrockInvoke];

fn parse(body: Value, max_messages: usize, beta: Option<&str>) -> Result<InferenceBody, ApiError> {
    let example = "prod-claude/claude-sonnet-4-5";
    let mut req = parse_inference_body(body, max_messages, example, |_, _| Ok(()))?;
    let body = &mut req.body;
    if let Some(v) = body.get("max_tokens")
        && v.as_u64().is_none_or(|n| n == 0)
    {
        return Err(ApiError::bad_request(
            "max_tokens",
            "max_tokens: must be a positive integer",
        ));
    }
    // The caller's `anthropic-beta` header travels in the body (Bedrock's form); the
    // Anthropic adapter turns it back into the header.
    if let Some(beta) = beta {
        let mut list: Vec<Value> = match body.remove("anthropic_beta") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for b in beta.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            list.push(Value::String(b.to_owned()));
        }
        body.insert("anthropic_beta".into(), Value::Array(list));
    }
    Ok(req)
}

/// Parse, route, check, admit, then run.
async fn handle(
    gateway: &Arc<Gateway>,
    body: Value,
    beta: Option<&str>,
    source_ip: IpAddr,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut req = parse(body, gateway.options.max_messages, beta)?;
    let (resolved, provider, admitted, accounting) = admit_current(
        gateway,
        caller,
        source_ip,
        &req.connection,
        &req.model,
        Route::Messages,
        &mut req.body,
        started,
        |resolved| {
            let kind = resolved.connection.provider;
            let provider = gateway.messages_provider(kind).ok_or_else(|| {
                ApiError::bad_request(
                    "model",
                    format!(
                        "model: the Messages API is served for {} connections; connection '{}' uses '{kind}' (use /v1/chat/completions)",
                        MESSAGES_PROVIDERS.map(|p| p.id()).join(" and "),
                        resolved.connection.name
                    ),
                )
            })?;
            check_model_allowed(resolved, &req.model)?;
            Ok(provider)
        },
    )
    .await?;
    let credentials = &resolved.credentials;
    if !req.stream {
        return match provider.messages(credentials, &req.model, req.body).await {
            Ok(done) => Ok(accounting
                .respond(&admitted, req.alias, done.body, done.usage, done.limits)
                .await),
            Err(e) => Err(accounting.refused(&admitted, e).await),
        };
    }
    let started = match provider
        .messages_stream(credentials, &req.model, req.body)
        .await
    {
        Ok(s) => s,
        Err(e) => return Err(accounting.refused(&admitted, e).await),
    };
    let encoder = EventEncoder { alias: req.alias };
    let (events, limits) = (started.events, started.limits);
    Ok(sse_response(events, limits, &admitted, accounting, encoder))
}

/// The Anthropic wire format of a Messages stream: named SSE events as the provider sent
/// them, `model` in `message_start` set to what the caller sent; the stream is complete at
/// `message_stop`.
struct EventEncoder {
    alias: String,
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl StreamEncoder for EventEncoder {
    type Item = MessagesEvent;

    fn encode(&mut self, item: MessagesEvent, meter: &mut Meter) -> Encoded {
        let (name, mut data) = match item {
            MessagesEvent::Usage(u) => {
                meter.usage = Some(u);
                return Encoded::Skip;
            }
            MessagesEvent::Event { name, data } => (name, data),
        };
        if name == "message_start"
            && let Some(Value::Object(m)) = data.get_mut("message")
        {
            m.insert("model".into(), Value::String(self.alias.clone()));
        }
        if name == "content_block_delta" {
            meter.produced(data.get("delta").map_or(0, |d| d.to_string().len()));
        }
        let bytes = sse(&name, &data);
        if name == "message_stop" {
            Encoded::Last(bytes)
        } else {
            Encoded::Send(bytes)
        }
    }

    fn error(&self, body: &Value) -> Bytes {
        sse("error", body)
    }

    /// Ended without `message_stop` and without an error item: the stream was cut.
    fn end(&self) -> Result<Bytes, ProviderError> {
        Err(ProviderError::Malformed(
            "the stream ended before message_stop".into(),
        ))
    }
}
