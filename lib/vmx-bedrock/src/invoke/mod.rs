//! `aws-bedrock-invoke`: Anthropic models on Bedrock's `InvokeModel` and
//! `InvokeModelWithResponseStream`, whose body is the Anthropic Messages request, so
//! Anthropic-only features (cache_control, extended thinking, server tools) survive.
//!
//! Two ways in:
//! - [`MessagesProvider`] (`POST /v1/messages`): the caller's Messages body passed through
//!   unchanged (once [`crate::control`] has refused Bedrock control fields) except that
//!   `model` is removed (the model id goes in the URL), `stream` is
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
//! (identifier, version, trace) as InvokeModel's guardrail and latency parameters. A body
//! that sets a Bedrock control field (`amazon-bedrock-*`, e.g. `amazon-bedrock-guardrailConfig`)
//! is refused on both ways in ([`crate::control`]).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types as bt;
use serde_json::{Map, Value, json};
use vmx_domain::connection::{AwsConfig, GuardrailTrace, Latency};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, MessagesProvider,
    MessagesResponse, MessagesStream, Probe, ProviderError, Usage,
};
use vmx_providers::anthropic::{from_message, to_messages_request, usage_from_anthropic};
use vmx_providers::content::invalid;
use vmx_providers::drive::drive;

use crate::clients::{Clients, aws_config};
use crate::control::refuse_control_fields;
use crate::converse::model_required;
use crate::errors::CallCtx;

mod stream;

use stream::{AnthropicChunks, InvokeReceiver, Passthrough};

/// The `anthropic_version` Bedrock's Anthropic models take in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// An InvokeModel or InvokeModelWithResponseStream call (two builder types with the same
/// setters) with the JSON `body` and the connection's guardrail and latency settings.
macro_rules! invoke_call {
    ($call:expr, $config:expr, $model:expr, $body:expr) => {{
        let config: &AwsConfig = $config;
        let mut call = $call
            .model_id($model)
            .content_type("application/json")
            .accept("application/json")
            .body(Blob::new(encode($body)?));
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
    }};
}

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
        let call = invoke_call!(client.invoke_model(), config, model, body);
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
        let call = invoke_call!(
            client.invoke_model_with_response_stream(),
            config,
            model,
            body
        );
        let timeout = self.clients.options().provider.stream_start_timeout;
        let out = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        Ok(InvokeReceiver::new(out.body, ctx))
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
    refuse_control_fields(body)?;
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
        let (config, request) = self.clients.chat_request(credentials, request).await?;
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
        let (config, request) = self.clients.chat_request(credentials, request).await?;
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
        refuse_control_fields(&body)?;
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
        refuse_control_fields(&body)?;
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
