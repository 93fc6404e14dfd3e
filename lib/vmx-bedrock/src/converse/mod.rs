//! `aws-bedrock`: OpenAI Chat Completions on the Bedrock Converse API (`Converse`,
//! `ConverseStream`), which serves every Bedrock model that supports messages.
//!
//! Request (OpenAI -> Converse):
//! - `system`/`developer` messages -> `system` text blocks, in order, wherever they appear.
//! - `user` content: text -> `text`; `image_url` with a base64 `data:` URL (png, jpeg, gif,
//!   webp) -> `image` bytes; `file` with `file_data` (a base64 `data:` URL of pdf, csv, doc,
//!   docx, xls, xlsx, html, txt, md) -> `document` bytes. An https image URL is fetched first
//!   under the image policy of `vmx_providers::image_fetch` (public addresses only,
//!   size-capped; Converse takes image bytes only) and sent as bytes; `input_audio` is refused.
//! - `assistant`: text -> `text`, `tool_calls` -> `toolUse` (arguments parsed as JSON).
//! - `tool` messages -> `toolResult` blocks (text, or text and image parts) in a user turn.
//!   Consecutive turns of one role merge (Converse wants alternating turns), tool results first.
//! - `cache_control` on a part, a message or a tool -> a `cachePoint` after it (`ttl: "1h"`
//!   kept).
//! - `max_completion_tokens`, else `max_tokens` -> `inferenceConfig.maxTokens`;
//!   `temperature`, `top_p` -> `temperature`, `topP`; `stop` -> `stopSequences`.
//! - `tools` (function tools) -> `toolConfig.tools[].toolSpec` (`parameters` ->
//!   `inputSchema.json`, `strict` kept); other tool types are refused. `tool_choice`:
//!   auto -> auto, required -> any, {function} -> tool; none -> no `toolConfig` at all when
//!   the conversation holds no tool blocks, else the tools without a choice (Converse has no
//!   "none"). A conversation with tool calls but no `tools` gets each called tool declared
//!   with an open schema (Converse refuses tool blocks without a `toolConfig`).
//! - `response_format` `json_schema` -> `outputConfig.textFormat` (json schema); `text` and
//!   `json_object` are dropped.
//! - Bedrock control fields are refused with a 400 naming the field ([`crate::control`]):
//!   `amazon-bedrock-*` keys (also inside `additionalModelRequestFields`) and the Converse
//!   parameters `guardrailConfig`, `performanceConfig`, `modelId` and the like; nothing of
//!   the caller's reaches `guardrailConfig`, `performanceConfig` or the model id.
//! - Bedrock extensions passed through: `additionalModelRequestFields` (object),
//!   `additionalModelResponseFieldPaths`; `thinking` and `top_k` go into
//!   `additionalModelRequestFields` (the names Anthropic models take there).
//! - `n` > 1 is refused. Dropped: `frequency_penalty`, `presence_penalty`, `logit_bias`,
//!   `logprobs`, `top_logprobs`, `seed`, `user`, `metadata`, `store`, `service_tier`,
//!   `parallel_tool_calls`, `reasoning_effort`, `modalities`, `audio`, `prediction`,
//!   `stream_options` (usage always comes in the final chunk), `web_search_options`.
//! - From the connection, on every call: `performanceConfig.latency` and `guardrailConfig`
//!   (identifier, version, trace; `ConverseStream` in synchronous processing mode).
//!
//! Response (Converse -> OpenAI): `text` -> `content`, `toolUse` -> `tool_calls`, reasoning
//! text -> `reasoning_content`; `stopReason` end_turn/stop_sequence -> stop, max_tokens/
//! model_context_window_exceeded -> length, tool_use -> tool_calls,
//! guardrail_intervened/content_filtered -> content_filter. Usage: `prompt_tokens =
//! inputTokens + cacheReadInputTokens + cacheWriteInputTokens`, `cached_tokens =
//! cacheReadInputTokens`. The vmx extension field `vmx` carries `guardrail` (the trace, with
//! `action` INTERVENED or NONE) when the connection has a guardrail, and
//! `additionalModelResponseFields` when the model returned some.
//!
//! Stream: `messageStart` -> the role chunk; `contentBlockStart` (toolUse) and
//! `contentBlockDelta` (text, toolUse input, reasoning text) -> delta chunks; `messageStop`
//! -> the finish reason, sent with `metadata` (so it can carry `vmx.guardrail`), followed by
//! the usage-only chunk and the usage.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::types as bt;
use vmx_domain::connection::{AwsConfig, GuardrailTrace, Latency};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
};
use vmx_providers::content::invalid;
use vmx_providers::drive::drive;

use crate::clients::{Clients, aws_config};
use crate::document::to_document;
use crate::errors::CallCtx;

mod request;
mod response;
mod stream;

pub use request::{ConverseParts, to_converse};
pub use response::{finish_reason, from_converse, usage_from_converse};
use stream::{ConverseReceiver, ConverseStream};

/// The `aws-bedrock` provider.
pub struct BedrockConverse {
    clients: Arc<Clients>,
}

impl BedrockConverse {
    pub fn new(clients: Arc<Clients>) -> Self {
        Self { clients }
    }
}

/// A Converse or ConverseStream call (two builder types with the same setters) with the
/// translated request and the connection's latency setting.
macro_rules! with_request {
    ($call:expr, $model:expr, $parts:expr, $config:expr) => {{
        let parts: ConverseParts = $parts;
        let mut call = $call
            .model_id($model)
            .set_messages(Some(parts.messages))
            .set_system((!parts.system.is_empty()).then_some(parts.system))
            .set_inference_config(parts.inference)
            .set_tool_config(parts.tools)
            .set_output_config(parts.output)
            .set_additional_model_request_fields(parts.additional_fields.as_ref().map(to_document))
            .set_additional_model_response_field_paths(
                (!parts.additional_paths.is_empty()).then_some(parts.additional_paths),
            );
        if let Some(p) = performance($config) {
            call = call.performance_config(p);
        }
        call
    }};
}

pub(crate) fn build_err(
    what: &str,
) -> impl Fn(aws_smithy_types::error::operation::BuildError) -> ProviderError {
    let what = what.to_owned();
    move |e| invalid(format!("{what}: {e}"), Some("messages"))
}

#[async_trait]
impl ChatProvider for BedrockConverse {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let (config, request) = self.clients.chat_request(credentials, request).await?;
        let parts = to_converse(&request.body)?;
        let ctx = CallCtx::new("Converse", config, &request.model);
        let client = self.clients.client(config).await?;
        let mut call = with_request!(client.converse(), &request.model, parts, config);
        if let Some(g) = guardrail(config) {
            call = call.guardrail_config(g);
        }
        let timeout = self.clients.options().provider.request_timeout;
        let out = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        let (body, usage) = from_converse(&request.model, config, &out)?;
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
        let parts = to_converse(&request.body)?;
        let ctx = CallCtx::new("ConverseStream", config, &request.model);
        let client = self.clients.client(config).await?;
        let mut call = with_request!(client.converse_stream(), &request.model, parts, config);
        if let Some(g) = &config.guardrail_config {
            call = call.guardrail_config(
                bt::GuardrailStreamConfiguration::builder()
                    .guardrail_identifier(&g.guardrail_identifier)
                    .guardrail_version(&g.guardrail_version)
                    .trace(trace(g.trace))
                    .stream_processing_mode(bt::GuardrailStreamProcessingMode::Sync)
                    .build(),
            );
        }
        let opts = &self.clients.options().provider;
        let out = match tokio::time::timeout(opts.stream_start_timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        let translator = ConverseStream::new(&request.model, config.guardrail_config.is_some());
        Ok(ChatStream {
            limits: Vec::new(),
            items: drive(
                ConverseReceiver {
                    rx: out.stream,
                    ctx,
                },
                translator,
                opts,
            ),
        })
    }

    async fn probe(
        &self,
        credentials: &Credentials,
        model: Option<&str>,
    ) -> Result<Probe, ProviderError> {
        let config = aws_config(credentials)?;
        let client = self.clients.client(config).await?;
        let model = model_required(model)?;
        let ctx = CallCtx::new("Converse", config, model);
        let message = bt::Message::builder()
            .role(bt::ConversationRole::User)
            .content(bt::ContentBlock::Text("ping".into()))
            .build()
            .map_err(build_err("probe"))?;
        let mut call = client
            .converse()
            .model_id(model)
            .messages(message)
            .inference_config(bt::InferenceConfiguration::builder().max_tokens(1).build());
        if let Some(p) = performance(config) {
            call = call.performance_config(p);
        }
        if let Some(g) = guardrail(config) {
            call = call.guardrail_config(g);
        }
        let timeout = self.clients.options().provider.request_timeout;
        match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(ProviderError::Timeout),
            Ok(r) => r.map_err(|e| ctx.error(&e))?,
        };
        Ok(Probe {
            limits: Vec::new(),
            call: format!("bedrock-runtime Converse {model} (maxTokens 1)"),
        })
    }
}

/// A probe needs a model: Bedrock has no call that proves model access without one.
pub(crate) fn model_required(model: Option<&str>) -> Result<&str, ProviderError> {
    model
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ProviderError::BadRequest {
            status: 400,
            message: "the connection's IAM role was assumed; name a model (or set allowedModels) \
                  to check that the role may invoke it on Bedrock"
                .into(),
            param: Some("model".into()),
            code: Some("model_required".into()),
        })
}

pub(crate) fn performance(config: &AwsConfig) -> Option<bt::PerformanceConfiguration> {
    config.performance_config.map(|p| {
        bt::PerformanceConfiguration::builder()
            .latency(match p.latency {
                Latency::Standard => bt::PerformanceConfigLatency::Standard,
                Latency::Optimized => bt::PerformanceConfigLatency::Optimized,
            })
            .build()
    })
}

fn trace(t: GuardrailTrace) -> bt::GuardrailTrace {
    match t {
        GuardrailTrace::Enabled => bt::GuardrailTrace::Enabled,
        GuardrailTrace::Disabled => bt::GuardrailTrace::Disabled,
        GuardrailTrace::EnabledFull => bt::GuardrailTrace::EnabledFull,
    }
}

fn guardrail(config: &AwsConfig) -> Option<bt::GuardrailConfiguration> {
    config.guardrail_config.as_ref().map(|g| {
        bt::GuardrailConfiguration::builder()
            .guardrail_identifier(&g.guardrail_identifier)
            .guardrail_version(&g.guardrail_version)
            .trace(trace(g.trace))
            .build()
    })
}
