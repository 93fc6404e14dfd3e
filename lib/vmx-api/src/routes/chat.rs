//! `POST /v1/chat/completions`: OpenAI Chat Completions through a connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Map, Value};
use vmx_domain::inference::{ProviderError, StreamItem, Usage};
use vmx_domain::output::Route;

use crate::AppState;
use crate::accounting::{Encoded, Meter, StreamEncoder, sse_response};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::routes::{
    InferenceBody, admit_current, check_model_allowed, inference_request, parse_inference_body,
};

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let (ip, body) = inference_request(&state, request).await?;
    handle(&state.gateway, body, ip, &caller).await
}

/// A validated chat request body: its connection and provider model, and the body itself.
pub struct ChatBody {
    pub connection: String,
    pub model: String,
    /// What the caller sent as `model`, echoed back in responses.
    pub alias: String,
    pub body: Map<String, Value>,
    pub stream: bool,
    pub include_usage: bool,
}

pub fn parse_chat_body(body: Value, max_messages: usize) -> Result<ChatBody, ApiError> {
    let example = "prod-openai/gpt-4o-mini";
    let InferenceBody {
        connection,
        model,
        alias,
        body,
        stream,
    } = parse_inference_body(body, max_messages, example, |i, msg| {
        let ok = msg
            .get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty());
        if ok {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: is required"),
            ))
        }
    })?;
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = body.get(key)
            && !v.is_null()
            && v.as_u64().is_none_or(|n| n == 0)
        {
            return Err(ApiError::bad_request(
                key,
                format!("{key}: must be a positive integer"),
            ));
        }
    }
    Ok(ChatBody {
        connection,
        model,
        alias,
        body,
        stream,
        include_usage,
    })
}

/// The OpenAI wire format of a completion stream: `data: <chunk>` events, `data: [DONE]`
/// at the end, `model` set to what the caller sent.
struct ChunkEncoder {
    include_usage: bool,
    alias: String,
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

impl StreamEncoder for ChunkEncoder {
    type Item = StreamItem;

    fn encode(&mut self, item: StreamItem, meter: &mut Meter) -> Encoded {
        match item {
            StreamItem::Usage(u) => {
                meter.usage = Some(u);
                Encoded::Skip
            }
            StreamItem::Chunk(chunk) => self
                .chunk(chunk, meter)
                .map_or(Encoded::Skip, Encoded::Send),
        }
    }

    fn error(&self, body: &Value) -> Bytes {
        sse(&body.to_string())
    }

    fn end(&self) -> Result<Bytes, ProviderError> {
        Ok(Bytes::from_static(b"data: [DONE]\n\n"))
    }
}

impl ChunkEncoder {
    /// Rewrites one chunk for the caller; `None` when nothing is left to send.
    fn chunk(&self, mut chunk: Value, meter: &mut Meter) -> Option<Bytes> {
        let Value::Object(o) = &mut chunk else {
            return None;
        };
        if let Some(u) = o.get("usage").filter(|u| !u.is_null()) {
            if meter.usage.is_none() {
                meter.usage = usage_of(u);
            }
            if !self.include_usage {
                o.remove("usage");
            }
        }
        let empty_choices = o
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty_choices && !o.contains_key("usage") {
            return None;
        }
        for choice in o
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(delta) = choice.get("delta") {
                let n = delta
                    .get("content")
                    .and_then(Value::as_str)
                    .map_or(0, str::len)
                    + delta.get("tool_calls").map_or(0, |t| t.to_string().len());
                if n > 0 {
                    meter.produced(n);
                }
            }
        }
        o.insert("model".to_owned(), Value::String(self.alias.clone()));
        Some(sse(&chunk.to_string()))
    }
}

/// OpenAI `usage` JSON -> [`Usage`].
pub fn usage_of(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    Some(Usage {
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens").unwrap_or(0),
        cached_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_creation_tokens: 0,
    })
}

/// Parse, route, check, admit, then run.
async fn handle(
    gateway: &Arc<Gateway>,
    body: Value,
    source_ip: IpAddr,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req = parse_chat_body(body, gateway.options.max_messages)?;
    let mut body = req.body;
    let (resolved, provider, admitted, accounting) = admit_current(
        gateway,
        caller,
        source_ip,
        &req.connection,
        &req.model,
        Route::ChatCompletions,
        &mut body,
        started,
        |resolved| {
            check_model_allowed(resolved, &req.model)?;
            // Fail fast, before charging capacity, when no adapter serves the provider.
            gateway.provider(resolved.connection.provider)
        },
    )
    .await?;
    let request = Gateway::provider_request(&req.model, body);
    let credentials = &resolved.credentials;
    if !req.stream {
        return match provider.chat(credentials, request).await {
            Ok(done) => Ok(accounting
                .respond(&admitted, req.alias, done.body, done.usage, done.limits)
                .await),
            Err(e) => Err(accounting.refused(&admitted, e).await),
        };
    }
    // Streaming: SSE out, usage accounted when it ends.
    let started = match provider.chat_stream(credentials, request).await {
        Ok(s) => s,
        Err(e) => return Err(accounting.refused(&admitted, e).await),
    };
    let encoder = ChunkEncoder {
        include_usage: req.include_usage,
        alias: req.alias,
    };
    let (items, limits) = (started.items, started.limits);
    Ok(sse_response(items, limits, &admitted, accounting, encoder))
}
