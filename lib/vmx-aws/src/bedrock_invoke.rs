//! `aws-bedrock-invoke`: Anthropic models on Bedrock's `InvokeModel` and
//! `InvokeModelWithResponseStream`, whose body is the Anthropic Messages request, so
//! Anthropic-only features (cache_control, extended thinking, server tools) survive.
//!
//! Two ways in:
//! - [`MessagesProvider`] (`POST /v1/messages`): the caller's Messages body passed through
//!   unchanged except that `model` is removed (the model id goes in the URL), `stream` is
//!   removed (the operation says it) and `anthropic_version: "bedrock-2023-05-31"` is added
//!   when absent. `cache_control`, `thinking`, `tools`, `tool_choice`, `anthropic_beta` and
//!   everything else are untouched. The response and every stream event come back as Bedrock
//!   sent them (a stream chunk's `bytes` is one Anthropic event; `message_stop` carries
//!   Bedrock's `amazon-bedrock-invocationMetrics`). The stream's usage item comes right after
//!   `message_delta`; an Anthropic `error` event ends the stream with its error.
//! - [`ChatProvider`] (`POST /v1/chat/completions`): translated with the anthropic provider's
//!   functions ([`vmx_providers::anthropic::to_messages_request`], `from_message`), the same
//!   field mapping as the `anthropic` provider, except: `user` (-> `metadata.user_id`) is
//!   dropped (Bedrock's Messages schema has no `metadata`), and image/document blocks with a
//!   `url` source are refused with a 400 (Bedrock takes base64 sources only; vmx does not
//!   fetch URLs). A guardrail intervention (`amazon-bedrock-guardrailAction: INTERVENED`)
//!   becomes `finish_reason: "content_filter"` with the trace in `vmx.guardrail`.
//!
//! From the connection, on every call: `performanceConfig.latency` and `guardrailConfig`
//! (identifier, version, trace) as InvokeModel's guardrail and latency parameters.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::SdkError;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types as bt;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use vmx_domain::connection::{AwsConfig, GuardrailTrace, Latency};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, MessagesEvent,
    MessagesProvider, MessagesResponse, MessagesStream, Probe, ProviderError, StreamItem, Usage,
};
use vmx_providers::anthropic::{
    finish_reason, from_message, to_messages_request, usage_from_anthropic,
};

use crate::bedrock_common::{
    CallCtx, Clients, Flow, Out, Receiver, Translate, aws_config, chunk, delta_choice, drive,
    invalid, new_id, now_unix, usage_json,
};
use crate::bedrock_converse::model_required;

/// The `anthropic_version` Bedrock's Anthropic models take in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The `aws-bedrock-invoke` provider: both a [`ChatProvider`] and a [`MessagesProvider`].
pub struct BedrockInvoke {
    clients: Arc<Clients>,
}

impl BedrockInvoke {
    pub fn new(clients: Arc<Clients>) -> Self {
        Self { clients }
    }

    async fn invoke(
        &self,
        config: &AwsConfig,
        model: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, ProviderError> {
        let ctx = CallCtx::new("InvokeModel", config, model);
        let client = self.clients.client(config).await?;
        let call = with_connection(
            config,
            client
                .invoke_model()
                .model_id(model)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(encode(body)?)),
        );
        let timeout = self.clients.options().provider.request_timeout;
        let out = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        match serde_json::from_slice::<Value>(out.body.as_ref()) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(ProviderError::Malformed(
                "the InvokeModel response is JSON but not an object".into(),
            )),
            Err(e) => Err(ProviderError::Malformed(format!(
                "the InvokeModel response is not valid JSON (line {} column {})",
                e.line(),
                e.column()
            ))),
        }
    }

    async fn invoke_stream(
        &self,
        config: &AwsConfig,
        model: &str,
        body: &Map<String, Value>,
    ) -> Result<InvokeReceiver, ProviderError> {
        let ctx = CallCtx::new("InvokeModelWithResponseStream", config, model);
        let client = self.clients.client(config).await?;
        let call = with_connection_stream(
            config,
            client
                .invoke_model_with_response_stream()
                .model_id(model)
                .content_type("application/json")
                .accept("application/json")
                .body(Blob::new(encode(body)?)),
        );
        let timeout = self.clients.options().provider.stream_start_timeout;
        let out = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        Ok(InvokeReceiver { rx: out.body, ctx })
    }
}

fn encode(body: &Map<String, Value>) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body)
        .map_err(|_| invalid("the request body could not be encoded as JSON", None))
}

fn trace(t: GuardrailTrace) -> bt::Trace {
    match t {
        GuardrailTrace::Enabled => bt::Trace::Enabled,
        GuardrailTrace::Disabled => bt::Trace::Disabled,
        GuardrailTrace::EnabledFull => bt::Trace::EnabledFull,
    }
}

fn latency(l: Latency) -> bt::PerformanceConfigLatency {
    match l {
        Latency::Standard => bt::PerformanceConfigLatency::Standard,
        Latency::Optimized => bt::PerformanceConfigLatency::Optimized,
    }
}

type InvokeCall =
    aws_sdk_bedrockruntime::operation::invoke_model::builders::InvokeModelFluentBuilder;
type InvokeStreamCall = aws_sdk_bedrockruntime::operation::invoke_model_with_response_stream::builders::InvokeModelWithResponseStreamFluentBuilder;

/// The connection's guardrail and latency settings on an InvokeModel call.
fn with_connection(config: &AwsConfig, mut call: InvokeCall) -> InvokeCall {
    if let Some(p) = config.performance_config {
        call = call.performance_config_latency(latency(p.latency));
    }
    if let Some(g) = &config.guardrail_config {
        call = call
            .guardrail_identifier(&g.guardrail_identifier)
            .guardrail_version(&g.guardrail_version)
            .trace(trace(g.trace));
    }
    call
}

fn with_connection_stream(config: &AwsConfig, mut call: InvokeStreamCall) -> InvokeStreamCall {
    if let Some(p) = config.performance_config {
        call = call.performance_config_latency(latency(p.latency));
    }
    if let Some(g) = &config.guardrail_config {
        call = call
            .guardrail_identifier(&g.guardrail_identifier)
            .guardrail_version(&g.guardrail_version)
            .trace(trace(g.trace));
    }
    call
}

/// The InvokeModel body for an Anthropic Messages request: `model` and `stream` removed,
/// `anthropic_version` added when absent; everything else untouched.
pub fn invoke_body(mut body: Map<String, Value>) -> Map<String, Value> {
    body.remove("model");
    body.remove("stream");
    if !body.get("anthropic_version").is_some_and(Value::is_string) {
        body.insert("anthropic_version".into(), json!(ANTHROPIC_VERSION));
    }
    body
}

/// The InvokeModel body for an OpenAI Chat Completions request.
pub fn chat_invoke_body(
    model: &str,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, ProviderError> {
    let Value::Object(mut messages) = to_messages_request(model, body, false)? else {
        return Err(invalid("the request could not be translated", None));
    };
    messages.remove("metadata");
    if let Some(list) = messages.get("messages").and_then(Value::as_array) {
        for (i, m) in list.iter().enumerate() {
            if let Some(blocks) = m.get("content").and_then(Value::as_array)
                && blocks.iter().any(has_url_source)
            {
                return Err(invalid(
                    format!("messages[{i}]: Bedrock takes documents as base64: send a data: URL"),
                    Some("messages"),
                ));
            }
        }
    }
    Ok(invoke_body(messages))
}

fn has_url_source(block: &Value) -> bool {
    block.pointer("/source/type").and_then(Value::as_str) == Some("url")
        || block
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|inner| inner.iter().any(has_url_source))
}

/// A Bedrock Anthropic response as an OpenAI completion, with a guardrail intervention as
/// `content_filter` and its trace in `vmx.guardrail`.
fn chat_from_message(model: &str, msg: &Value) -> Result<(Value, Option<Usage>), ProviderError> {
    let (mut body, usage) = from_message(msg)?;
    let intervened = msg
        .get("amazon-bedrock-guardrailAction")
        .and_then(Value::as_str)
        == Some("INTERVENED");
    if let Some(o) = body.as_object_mut() {
        if o.get("model").is_none_or(Value::is_null) {
            o.insert("model".into(), json!(model));
        }
        let trace = msg.pointer("/amazon-bedrock-trace/guardrail").cloned();
        if intervened || trace.is_some() {
            let mut g = match trace {
                Some(Value::Object(t)) => t,
                _ => Map::new(),
            };
            g.insert(
                "action".into(),
                json!(if intervened { "INTERVENED" } else { "NONE" }),
            );
            o.insert("vmx".into(), json!({ "guardrail": g }));
        }
        if intervened
            && let Some(choice) = o
                .get_mut("choices")
                .and_then(|c| c.get_mut(0))
                .and_then(Value::as_object_mut)
        {
            choice.insert("finish_reason".into(), json!("content_filter"));
        }
    }
    Ok((body, usage))
}

#[async_trait]
impl ChatProvider for BedrockInvoke {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let config = aws_config(credentials)?;
        let mut request = request;
        self.clients.inline_chat_images(&mut request.body).await?;
        let body = chat_invoke_body(&request.model, &request.body)?;
        let msg = self.invoke(config, &request.model, &body).await?;
        let (body, usage) = chat_from_message(&request.model, &msg)?;
        Ok(ChatCompletion {
            body,
            usage,
            limits: Vec::new(),
        })
    }

    async fn chat_stream(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        let config = aws_config(credentials)?;
        let mut request = request;
        self.clients.inline_chat_images(&mut request.body).await?;
        let body = chat_invoke_body(&request.model, &request.body)?;
        let rx = self.invoke_stream(config, &request.model, &body).await?;
        Ok(ChatStream {
            limits: Vec::new(),
            items: drive(
                rx,
                AnthropicChunks::new(&request.model),
                &self.clients.options().provider,
            ),
        })
    }

    async fn probe(
        &self,
        credentials: &Credentials,
        model: Option<&str>,
    ) -> Result<Probe, ProviderError> {
        let config = aws_config(credentials)?;
        // Assume the role first: a trust-policy problem is reported as such, model or not.
        self.clients.client(config).await?;
        let model = model_required(model)?;
        let body = invoke_body(
            match json!({
                "max_tokens": 1,
                "messages": [{ "role": "user", "content": "ping" }],
            }) {
                Value::Object(o) => o,
                _ => Map::new(),
            },
        );
        self.invoke(config, model, &body).await?;
        Ok(Probe {
            limits: Vec::new(),
            call: format!("bedrock-runtime InvokeModel {model} (max_tokens 1)"),
        })
    }
}

#[async_trait]
impl MessagesProvider for BedrockInvoke {
    async fn messages(
        &self,
        credentials: &Credentials,
        model: &str,
        mut body: Map<String, Value>,
    ) -> Result<MessagesResponse, ProviderError> {
        let config = aws_config(credentials)?;
        self.clients.inline_message_images(&mut body).await?;
        let msg = self.invoke(config, model, &invoke_body(body)).await?;
        let usage = msg.get("usage").map(usage_from_anthropic);
        Ok(MessagesResponse {
            body: msg,
            usage,
            limits: Vec::new(),
        })
    }

    async fn messages_stream(
        &self,
        credentials: &Credentials,
        model: &str,
        mut body: Map<String, Value>,
    ) -> Result<MessagesStream, ProviderError> {
        let config = aws_config(credentials)?;
        self.clients.inline_message_images(&mut body).await?;
        let rx = self
            .invoke_stream(config, model, &invoke_body(body))
            .await?;
        Ok(MessagesStream {
            limits: Vec::new(),
            events: drive(rx, Passthrough::default(), &self.clients.options().provider),
        })
    }
}

/// The Bedrock client for a connection (for tests and tools that want to call Bedrock
/// directly with the same role credentials).
impl BedrockInvoke {
    pub async fn client(&self, credentials: &Credentials) -> Result<Client, ProviderError> {
        self.clients.client(aws_config(credentials)?).await
    }
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// InvokeModelWithResponseStream chunks, each decoded to its Anthropic event JSON.
pub(crate) struct InvokeReceiver {
    rx: EventReceiver<bt::ResponseStream, ResponseStreamError>,
    ctx: CallCtx,
}

fn stream_variant(e: &ResponseStreamError) -> Option<&'static str> {
    Some(match e {
        ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
        ResponseStreamError::ValidationException(_) => "ValidationException",
        ResponseStreamError::InternalServerException(_) => "InternalServerException",
        ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        _ => return None,
    })
}

impl Receiver for InvokeReceiver {
    type Event = Value;

    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Value>, ProviderError>> {
        Box::pin(async move {
            loop {
                let event = self.rx.recv().await.map_err(|e| {
                    let variant = match &e {
                        SdkError::ServiceError(s) => stream_variant(s.err()),
                        _ => None,
                    };
                    self.ctx.stream_error(&e, variant)
                })?;
                let Some(event) = event else {
                    return Ok(None);
                };
                let bt::ResponseStream::Chunk(part) = event else {
                    continue; // a future event type
                };
                let Some(bytes) = part.bytes else {
                    continue;
                };
                return match serde_json::from_slice::<Value>(bytes.as_ref()) {
                    Ok(v @ Value::Object(_)) => Ok(Some(v)),
                    _ => Err(ProviderError::Malformed(
                        "a stream chunk is not an Anthropic event (JSON object)".into(),
                    )),
                };
            }
        })
    }
}

fn event_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Anthropic's cumulative usage counts over a stream.
#[derive(Debug, Default, Clone, Copy)]
struct UsageAcc {
    input: u64,
    usage: Usage,
}

impl UsageAcc {
    fn take(&mut self, u: &Value) {
        let n = |name: &str| u.get(name).and_then(Value::as_u64);
        if let Some(v) = n("input_tokens") {
            self.input = v;
        }
        if let Some(v) = n("cache_read_input_tokens") {
            self.usage.cached_tokens = v;
        }
        if let Some(v) = n("cache_creation_input_tokens") {
            self.usage.cache_creation_tokens = v;
        }
        if let Some(v) = n("output_tokens") {
            self.usage.completion_tokens = v;
        }
        self.usage.prompt_tokens =
            self.input + self.usage.cached_tokens + self.usage.cache_creation_tokens;
    }
}

/// An Anthropic `error` event inside a stream.
fn stream_event_error(v: &Value) -> ProviderError {
    let err = v.get("error").unwrap_or(&Value::Null);
    let kind = err.get("type").and_then(Value::as_str).unwrap_or_default();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the model reported an error in the stream")
        .chars()
        .take(500)
        .collect::<String>();
    match kind {
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after_secs: None,
            message,
            limits: Vec::new(),
        },
        "overloaded_error" => ProviderError::Upstream {
            status: 503,
            message,
        },
        _ => ProviderError::Upstream {
            status: 502,
            message,
        },
    }
}

/// Events passed through for the Messages API, with the usage right after `message_delta`
/// (once it is known, and before `message_stop`, after which a consumer may stop reading);
/// an `error` event fails the stream.
#[derive(Default)]
struct Passthrough {
    usage: UsageAcc,
    stopped: bool,
}

impl Translate<Value> for Passthrough {
    type Item = MessagesEvent;

    fn on_event(&mut self, v: Value, out: &mut Out<MessagesEvent>) -> Result<Flow, ProviderError> {
        let name = event_type(&v).to_owned();
        match name.as_str() {
            "error" => return Err(stream_event_error(&v)),
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage.take(u);
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage.take(u);
                }
            }
            _ => {}
        }
        let done = name == "message_stop";
        let after_delta = name == "message_delta";
        out.push_back(Ok(MessagesEvent::Event { name, data: v }));
        if after_delta {
            out.push_back(Ok(MessagesEvent::Usage(self.usage.usage)));
        }
        if done {
            self.stopped = true;
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, _out: &mut Out<MessagesEvent>) -> Result<(), ProviderError> {
        if self.stopped {
            return Ok(());
        }
        Err(ProviderError::Malformed(
            "the stream ended before message_stop".into(),
        ))
    }
}

/// Anthropic events -> OpenAI chunks (the chat completions path).
struct AnthropicChunks {
    id: String,
    model: String,
    created: i64,
    usage: UsageAcc,
    /// Content block index -> OpenAI tool call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
}

impl AnthropicChunks {
    fn new(model: &str) -> Self {
        Self {
            id: new_id("msg_"),
            model: model.to_owned(),
            created: now_unix(),
            usage: UsageAcc::default(),
            tools: HashMap::new(),
            next_tool: 0,
        }
    }

    fn push(&self, out: &mut Out<StreamItem>, delta: Value, finish: Option<&str>) {
        let c = chunk(
            &self.id,
            self.created,
            &self.model,
            delta_choice(delta, finish),
        );
        out.push_back(Ok(StreamItem::Chunk(c)));
    }
}

impl Translate<Value> for AnthropicChunks {
    type Item = StreamItem;

    fn on_event(&mut self, v: Value, out: &mut Out<StreamItem>) -> Result<Flow, ProviderError> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event_type(&v) {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    id.clone_into(&mut self.id);
                }
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    model.clone_into(&mut self.model);
                }
                if let Some(u) = m.get("usage") {
                    self.usage.take(u);
                }
                self.push(out, json!({ "role": "assistant", "content": "" }), None);
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let text = |name: &str| {
                    block
                        .get(name)
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                };
                match event_type(block) {
                    "text" => {
                        if let Some(t) = text("text") {
                            self.push(out, json!({ "content": t }), None);
                        }
                    }
                    "thinking" => {
                        if let Some(t) = text("thinking") {
                            self.push(out, json!({ "reasoning_content": t }), None);
                        }
                    }
                    "tool_use" => {
                        let tool_index = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, tool_index);
                        let call = json!({
                            "index": tool_index,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {
                                "name": block.get("name").cloned().unwrap_or(Value::Null),
                                "arguments": "",
                            },
                        });
                        self.push(out, json!({ "tool_calls": [call] }), None);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let s = |name: &str| delta.get(name).and_then(Value::as_str).unwrap_or("");
                match event_type(delta) {
                    "text_delta" if !s("text").is_empty() => {
                        self.push(out, json!({ "content": s("text") }), None);
                    }
                    "thinking_delta" if !s("thinking").is_empty() => {
                        self.push(out, json!({ "reasoning_content": s("thinking") }), None);
                    }
                    "input_json_delta" if !s("partial_json").is_empty() => {
                        if let Some(&tool_index) = self.tools.get(&index) {
                            let call = json!({
                                "index": tool_index,
                                "function": { "arguments": s("partial_json") },
                            });
                            self.push(out, json!({ "tool_calls": [call] }), None);
                        }
                    }
                    _ => {} // signature_delta, citations_delta
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage.take(u);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.push(out, json!({}), Some(finish_reason(reason)));
                }
            }
            "message_stop" => {
                let usage = self.usage.usage;
                let mut c = chunk(&self.id, self.created, &self.model, json!([]));
                if let Some(o) = c.as_object_mut() {
                    o.insert("usage".into(), usage_json(&usage));
                }
                out.push_back(Ok(StreamItem::Chunk(c)));
                out.push_back(Ok(StreamItem::Usage(usage)));
                return Ok(Flow::Done);
            }
            "error" => return Err(stream_event_error(&v)),
            _ => {} // ping, content_block_stop
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, _out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        Err(ProviderError::Malformed(
            "the stream ended before message_stop".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn invoke_body_moves_model_and_keeps_anthropic_fields() {
        let body = obj(json!({
            "model": "claude",
            "stream": true,
            "max_tokens": 10,
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}]
        }));
        let out = invoke_body(body.clone());
        assert!(!out.contains_key("model"));
        assert!(!out.contains_key("stream"));
        assert_eq!(out["anthropic_version"], json!(ANTHROPIC_VERSION));
        assert_eq!(out["system"], body["system"]);
        assert_eq!(out["thinking"], body["thinking"]);
    }

    #[test]
    fn chat_body_refuses_url_images() {
        let e = chat_invoke_body(
            "m",
            &obj(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
            ]}]})),
        )
        .expect_err("refused");
        assert!(matches!(e, ProviderError::BadRequest { status: 400, .. }));
    }

    #[test]
    fn guardrail_intervention_is_content_filter() {
        let msg = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "blocked"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1},
            "amazon-bedrock-guardrailAction": "INTERVENED",
            "amazon-bedrock-trace": {"guardrail": {"input": {"g": {}}}}
        });
        let (body, _) = chat_from_message("claude", &msg).expect("translates");
        assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(body["vmx"]["guardrail"]["action"], "INTERVENED");
        assert!(body["vmx"]["guardrail"]["input"].is_object());
    }
}
