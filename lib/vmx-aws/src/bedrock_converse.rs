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

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types as bt;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use vmx_domain::connection::{AwsConfig, GuardrailTrace, Latency};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
    StreamItem, Usage,
};

use crate::bedrock_common::{
    CallCtx, Clients, Flow, Out, Receiver, Translate, aws_config, chunk, delta_choice, drive,
    from_document, guardrail_json, invalid, new_id, now_unix, to_document, usage_from_converse,
    usage_json,
};

/// The `aws-bedrock` provider.
pub struct BedrockConverse {
    clients: Arc<Clients>,
}

impl BedrockConverse {
    pub fn new(clients: Arc<Clients>) -> Self {
        Self { clients }
    }
}

/// A Converse request, translated from OpenAI.
#[derive(Debug, Clone, Default)]
pub struct ConverseParts {
    pub messages: Vec<bt::Message>,
    pub system: Vec<bt::SystemContentBlock>,
    pub inference: Option<bt::InferenceConfiguration>,
    pub tools: Option<bt::ToolConfiguration>,
    pub additional_fields: Option<Value>,
    pub additional_paths: Vec<String>,
    pub output: Option<bt::OutputConfig>,
}

fn build_err(
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
        let config = aws_config(credentials)?;
        let mut request = request;
        self.clients.inline_chat_images(&mut request.body).await?;
        let parts = to_converse(&request.body)?;
        let ctx = CallCtx::new("Converse", config, &request.model);
        let client = self.clients.client(config).await?;
        let mut call = client
            .converse()
            .model_id(&request.model)
            .set_messages(Some(parts.messages))
            .set_system((!parts.system.is_empty()).then_some(parts.system))
            .set_inference_config(parts.inference)
            .set_tool_config(parts.tools)
            .set_output_config(parts.output)
            .set_additional_model_request_fields(parts.additional_fields.as_ref().map(to_document))
            .set_additional_model_response_field_paths(
                (!parts.additional_paths.is_empty()).then_some(parts.additional_paths),
            );
        if let Some(p) = performance(config) {
            call = call.performance_config(p);
        }
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
        let config = aws_config(credentials)?;
        let mut request = request;
        self.clients.inline_chat_images(&mut request.body).await?;
        let parts = to_converse(&request.body)?;
        let ctx = CallCtx::new("ConverseStream", config, &request.model);
        let client = self.clients.client(config).await?;
        let mut call = client
            .converse_stream()
            .model_id(&request.model)
            .set_messages(Some(parts.messages))
            .set_system((!parts.system.is_empty()).then_some(parts.system))
            .set_inference_config(parts.inference)
            .set_tool_config(parts.tools)
            .set_output_config(parts.output)
            .set_additional_model_request_fields(parts.additional_fields.as_ref().map(to_document))
            .set_additional_model_response_field_paths(
                (!parts.additional_paths.is_empty()).then_some(parts.additional_paths),
            );
        if let Some(p) = performance(config) {
            call = call.performance_config(p);
        }
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

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// The Converse request for an OpenAI Chat Completions `body`.
pub fn to_converse(body: &Map<String, Value>) -> Result<ConverseParts, ProviderError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array", Some("messages")))?;
    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        return Err(invalid(
            "Bedrock returns one choice per request: `n` must be 1",
            Some("n"),
        ));
    }
    let mut parts = ConverseParts::default();
    let mut turns: Vec<(bt::ConversationRole, Vec<bt::ContentBlock>)> = Vec::new();
    let mut has_tool_blocks = false;
    let mut used_tools: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required"), Some("messages")))?;
        match role {
            "system" | "developer" => system_blocks(m, i, &mut parts.system)?,
            "user" => {
                let mut blocks = user_blocks(m.get("content"), i)?;
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::User, blocks);
            }
            "assistant" => {
                let mut blocks = assistant_blocks(m, i)?;
                for b in &blocks {
                    if let bt::ContentBlock::ToolUse(t) = b
                        && !used_tools.contains(&t.name)
                    {
                        used_tools.push(t.name.clone());
                    }
                }
                has_tool_blocks |= !used_tools.is_empty();
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::Assistant, blocks);
            }
            "tool" => {
                has_tool_blocks = true;
                let mut blocks = vec![tool_result(m, i)?];
                message_cache_point(m, &mut blocks)?;
                push_turn(&mut turns, bt::ConversationRole::User, blocks);
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}].role '{other}' is not supported by Bedrock Converse"),
                    Some("messages"),
                ));
            }
        }
    }
    if turns.is_empty() {
        return Err(invalid(
            "at least one user message is required",
            Some("messages"),
        ));
    }
    for (role, content) in turns {
        parts.messages.push(
            bt::Message::builder()
                .role(role)
                .set_content(Some(content))
                .build()
                .map_err(build_err("a message"))?,
        );
    }
    parts.inference = inference(body)?;
    parts.tools = tools(body, has_tool_blocks, &used_tools)?;
    parts.output = output_config(body)?;
    additional(body, &mut parts)?;
    Ok(parts)
}

fn push_turn(
    turns: &mut Vec<(bt::ConversationRole, Vec<bt::ContentBlock>)>,
    role: bt::ConversationRole,
    blocks: Vec<bt::ContentBlock>,
) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => {
            for b in blocks {
                if b.is_tool_result() {
                    let at = content.iter().take_while(|c| c.is_tool_result()).count();
                    content.insert(at, b);
                } else {
                    content.push(b);
                }
            }
        }
        _ => turns.push((role, blocks)),
    }
}

fn cache_point(cc: &Value) -> Result<bt::CachePointBlock, ProviderError> {
    let mut b = bt::CachePointBlock::builder().r#type(bt::CachePointType::Default);
    match cc.get("ttl").and_then(Value::as_str) {
        Some("1h") => b = b.ttl(bt::CacheTtl::OneHour),
        Some("5m") => b = b.ttl(bt::CacheTtl::FiveMinutes),
        _ => {}
    }
    b.build().map_err(build_err("cache_control"))
}

fn cache_control(v: &Value) -> Option<&Value> {
    v.get("cache_control").filter(|c| !c.is_null())
}

/// A message-level `cache_control` puts a cache point after the message's blocks.
fn message_cache_point(m: &Value, blocks: &mut Vec<bt::ContentBlock>) -> Result<(), ProviderError> {
    if let Some(cc) = cache_control(m)
        && !blocks.is_empty()
        && !matches!(blocks.last(), Some(bt::ContentBlock::CachePoint(_)))
    {
        blocks.push(bt::ContentBlock::CachePoint(cache_point(cc)?));
    }
    Ok(())
}

fn text_of(part: &Value) -> Option<&str> {
    let ty = part.get("type").and_then(Value::as_str)?;
    match ty {
        "text" | "refusal" => part.get(ty).and_then(Value::as_str),
        _ => None,
    }
}

fn system_blocks(
    m: &Value,
    i: usize,
    out: &mut Vec<bt::SystemContentBlock>,
) -> Result<(), ProviderError> {
    let before = out.len();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(bt::SystemContentBlock::Text(s.clone()));
            }
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                let Some(t) = text_of(p) else {
                    return Err(invalid(
                        format!("messages[{i}]: a system message may only hold text parts"),
                        Some("messages"),
                    ));
                };
                if !t.is_empty() {
                    out.push(bt::SystemContentBlock::Text(t.to_owned()));
                }
                if let Some(cc) = cache_control(p) {
                    out.push(bt::SystemContentBlock::CachePoint(cache_point(cc)?));
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("messages[{i}].content must be a string or an array of parts"),
                Some("messages"),
            ));
        }
    }
    if let Some(cc) = cache_control(m)
        && out.len() > before
        && !matches!(out.last(), Some(bt::SystemContentBlock::CachePoint(_)))
    {
        out.push(bt::SystemContentBlock::CachePoint(cache_point(cc)?));
    }
    Ok(())
}

fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<bt::ContentBlock>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![bt::ContentBlock::Text(s.clone())]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                if let Some(b) = part(p, i, j)? {
                    out.push(b);
                    if let Some(cc) = cache_control(p) {
                        out.push(bt::ContentBlock::CachePoint(cache_point(cc)?));
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(invalid(
            format!("messages[{i}].content must be a string or an array of parts"),
            Some("messages"),
        )),
    }
}

fn part(p: &Value, i: usize, j: usize) -> Result<Option<bt::ContentBlock>, ProviderError> {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
    match ty {
        "text" | "refusal" => Ok(text_of(p)
            .filter(|t| !t.is_empty())
            .map(|t| bt::ContentBlock::Text(t.to_owned()))),
        "image_url" => Ok(Some(bt::ContentBlock::Image(image(p, i)?))),
        "file" => {
            let file = p.get("file").unwrap_or(&Value::Null);
            let Some(data) = file.get("file_data").and_then(Value::as_str) else {
                return Err(invalid(
                    format!(
                        "messages[{i}]: a file part needs file_data (a base64 data: URL); OpenAI file ids mean nothing to Bedrock"
                    ),
                    Some("messages"),
                ));
            };
            let (mime, bytes) = data_url(data, i)?;
            let format = document_format(&mime).ok_or_else(|| {
                invalid(
                    format!(
                        "messages[{i}]: Bedrock documents are pdf, csv, doc, docx, xls, xlsx, html, txt or md, not {mime}"
                    ),
                    Some("messages"),
                )
            })?;
            let name = document_name(file.get("filename").and_then(Value::as_str), i, j);
            let doc = bt::DocumentBlock::builder()
                .format(format)
                .name(name)
                .source(bt::DocumentSource::Bytes(Blob::new(bytes)))
                .build()
                .map_err(build_err("a file part"))?;
            Ok(Some(bt::ContentBlock::Document(doc)))
        }
        "input_audio" => Err(invalid(
            format!("messages[{i}]: Bedrock Converse does not take input_audio"),
            Some("messages"),
        )),
        other => Err(invalid(
            format!(
                "messages[{i}]: content part type '{other}' is not supported by Bedrock Converse"
            ),
            Some("messages"),
        )),
    }
}

fn image(p: &Value, i: usize) -> Result<bt::ImageBlock, ProviderError> {
    let url = p
        .pointer("/image_url/url")
        .or_else(|| p.get("image_url").filter(|v| v.is_string()))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                format!("messages[{i}]: image_url.url is required"),
                Some("messages"),
            )
        })?;
    if !url.starts_with("data:") {
        return Err(invalid(
            format!(
                "messages[{i}]: Bedrock takes images as bytes: send the image as a base64 data: URL (data:image/png;base64,...) or an https URL"
            ),
            Some("messages"),
        ));
    }
    let (mime, bytes) = data_url(url, i)?;
    let format = match mime.as_str() {
        "image/png" => bt::ImageFormat::Png,
        "image/jpeg" | "image/jpg" => bt::ImageFormat::Jpeg,
        "image/gif" => bt::ImageFormat::Gif,
        "image/webp" => bt::ImageFormat::Webp,
        other => {
            return Err(invalid(
                format!("messages[{i}]: Bedrock images are png, jpeg, gif or webp, not {other}"),
                Some("messages"),
            ));
        }
    };
    bt::ImageBlock::builder()
        .format(format)
        .source(bt::ImageSource::Bytes(Blob::new(bytes)))
        .build()
        .map_err(build_err("an image part"))
}

/// `data:<mime>;base64,<data>` -> (mime, bytes).
fn data_url(url: &str, i: usize) -> Result<(String, Vec<u8>), ProviderError> {
    let bad = || {
        invalid(
            format!("messages[{i}]: expected a base64 data: URL (data:<type>;base64,<data>)"),
            Some("messages"),
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(bad)?;
    let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
    let mime = meta.strip_suffix(";base64").ok_or_else(bad)?;
    let bytes = B64.decode(data.trim()).map_err(|_| bad())?;
    Ok((mime.to_ascii_lowercase(), bytes))
}

fn document_format(mime: &str) -> Option<bt::DocumentFormat> {
    Some(match mime {
        "application/pdf" => bt::DocumentFormat::Pdf,
        "text/csv" => bt::DocumentFormat::Csv,
        "application/msword" => bt::DocumentFormat::Doc,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => {
            bt::DocumentFormat::Docx
        }
        "application/vnd.ms-excel" => bt::DocumentFormat::Xls,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
            bt::DocumentFormat::Xlsx
        }
        "text/html" => bt::DocumentFormat::Html,
        "text/plain" => bt::DocumentFormat::Txt,
        "text/markdown" => bt::DocumentFormat::Md,
        _ => return None,
    })
}

/// Bedrock document names allow letters, digits, single spaces, hyphens, parentheses and
/// square brackets.
fn document_name(filename: Option<&str>, i: usize, j: usize) -> String {
    let stem = filename
        .map(|f| f.rsplit_once('.').map_or(f, |(s, _)| s))
        .unwrap_or_default();
    let mut name = String::new();
    for c in stem.chars().take(200) {
        let c = if c.is_ascii_alphanumeric() || "-()[]".contains(c) {
            c
        } else {
            ' '
        };
        if !(c == ' ' && (name.is_empty() || name.ends_with(' '))) {
            name.push(c);
        }
    }
    let name = name.trim_end().to_owned();
    if name.is_empty() {
        format!("document-{i}-{j}")
    } else {
        name
    }
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<bt::ContentBlock>, ProviderError> {
    let mut out = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(bt::ContentBlock::Text(s.clone()));
            }
        }
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = text_of(p).filter(|t| !t.is_empty()) {
                    out.push(bt::ContentBlock::Text(t.to_owned()));
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("messages[{i}].content must be a string or an array of parts"),
                Some("messages"),
            ));
        }
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for (k, c) in calls.iter().enumerate() {
            let id = c.get("id").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    format!("messages[{i}].tool_calls[{k}].id is required"),
                    Some("messages"),
                )
            })?;
            let f = c.get("function").unwrap_or(&Value::Null);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    format!("messages[{i}].tool_calls[{k}].function.name is required"),
                    Some("messages"),
                )
            })?;
            let input = match f.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|_| {
                    invalid(
                        format!(
                            "messages[{i}].tool_calls[{k}].function.arguments is not valid JSON"
                        ),
                        Some("messages"),
                    )
                })?,
                Some(v) => v.clone(),
            };
            out.push(bt::ContentBlock::ToolUse(
                bt::ToolUseBlock::builder()
                    .tool_use_id(id)
                    .name(name)
                    .input(to_document(&input))
                    .build()
                    .map_err(build_err("a tool call"))?,
            ));
        }
    }
    Ok(out)
}

fn tool_result(m: &Value, i: usize) -> Result<bt::ContentBlock, ProviderError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                format!("messages[{i}].tool_call_id is required"),
                Some("messages"),
            )
        })?;
    let mut content = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => content.push(bt::ToolResultContentBlock::Text(s.clone())),
        Some(Value::Array(parts)) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = text_of(p) {
                            content.push(bt::ToolResultContentBlock::Text(t.to_owned()));
                        }
                    }
                    Some("image_url") => {
                        content.push(bt::ToolResultContentBlock::Image(image(p, i)?));
                    }
                    _ => {
                        return Err(invalid(
                            format!(
                                "messages[{i}]: a tool message may hold text and image parts only"
                            ),
                            Some("messages"),
                        ));
                    }
                }
            }
        }
        Some(_) => {
            return Err(invalid(
                format!("messages[{i}].content must be a string or an array of parts"),
                Some("messages"),
            ));
        }
    }
    if content.is_empty() {
        content.push(bt::ToolResultContentBlock::Text(String::new()));
    }
    Ok(bt::ContentBlock::ToolResult(
        bt::ToolResultBlock::builder()
            .tool_use_id(id)
            .set_content(Some(content))
            .build()
            .map_err(build_err("a tool result"))?,
    ))
}

fn inference(
    body: &Map<String, Value>,
) -> Result<Option<bt::InferenceConfiguration>, ProviderError> {
    let mut b = bt::InferenceConfiguration::builder();
    let mut any = false;
    for name in ["max_completion_tokens", "max_tokens"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v
                    .as_u64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(
                            format!("`{name}` must be a non-negative integer"),
                            Some(name),
                        )
                    })?;
                b = b.max_tokens(n);
                any = true;
                break;
            }
        }
    }
    for (name, set) in [("temperature", true), ("top_p", false)] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let f = v
                    .as_f64()
                    .ok_or_else(|| invalid(format!("`{name}` must be a number"), Some(name)))?;
                #[allow(clippy::cast_possible_truncation)]
                let f = f as f32;
                b = if set { b.temperature(f) } else { b.top_p(f) };
                any = true;
            }
        }
    }
    match body.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            b = b.stop_sequences(s.clone());
            any = true;
        }
        Some(Value::Array(items)) => {
            for s in items {
                let s = s
                    .as_str()
                    .ok_or_else(|| invalid("`stop` must hold strings", Some("stop")))?;
                b = b.stop_sequences(s);
                any = true;
            }
        }
        Some(_) => return Err(invalid("`stop` must be a string or an array", Some("stop"))),
    }
    Ok(any.then(|| b.build()))
}

/// Converse refuses tool blocks in the history without a `toolConfig`: when the caller sent
/// no tools but the conversation used some, each used tool is declared with an open schema.
fn history_tools(used: &[String]) -> Result<Option<bt::ToolConfiguration>, ProviderError> {
    if used.is_empty() {
        return Ok(None);
    }
    let mut tools = Vec::with_capacity(used.len());
    for name in used {
        let spec = bt::ToolSpecification::builder()
            .name(name)
            .description("A tool used earlier in this conversation.")
            .input_schema(bt::ToolInputSchema::Json(to_document(
                &json!({ "type": "object", "properties": {} }),
            )))
            .build()
            .map_err(build_err("a tool"))?;
        tools.push(bt::Tool::ToolSpec(spec));
    }
    bt::ToolConfiguration::builder()
        .set_tools(Some(tools))
        .build()
        .map(Some)
        .map_err(build_err("tools"))
}

fn tools(
    body: &Map<String, Value>,
    has_tool_blocks: bool,
    used_tools: &[String],
) -> Result<Option<bt::ToolConfiguration>, ProviderError> {
    let list = match body.get("tools") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return history_tools(used_tools),
    };
    let mut converted = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(
                format!("tools[{i}]: Bedrock Converse takes function tools only"),
                Some("tools"),
            ));
        }
        let f = t.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("tools[{i}].function.name is required"),
                Some("tools"),
            )
        })?;
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => json!({ "type": "object", "properties": {} }),
        };
        let mut spec = bt::ToolSpecification::builder()
            .name(name)
            .input_schema(bt::ToolInputSchema::Json(to_document(&schema)));
        if let Some(Value::String(d)) = f.get("description") {
            spec = spec.description(d);
        }
        if let Some(Value::Bool(s)) = f.get("strict") {
            spec = spec.strict(*s);
        }
        converted.push(bt::Tool::ToolSpec(
            spec.build().map_err(build_err("a tool"))?,
        ));
        if let Some(cc) = cache_control(t).or_else(|| cache_control(f)) {
            converted.push(bt::Tool::CachePoint(cache_point(cc)?));
        }
    }
    let choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" if !has_tool_blocks => return Ok(None),
            "none" => None,
            "auto" => Some(bt::ToolChoice::Auto(bt::AutoToolChoice::builder().build())),
            "required" => Some(bt::ToolChoice::Any(bt::AnyToolChoice::builder().build())),
            other => {
                return Err(invalid(
                    format!("tool_choice '{other}' is not one of none, auto, required"),
                    Some("tool_choice"),
                ));
            }
        },
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid("tool_choice.function.name is required", Some("tool_choice"))
                })?;
            Some(bt::ToolChoice::Tool(
                bt::SpecificToolChoice::builder()
                    .name(name)
                    .build()
                    .map_err(build_err("tool_choice"))?,
            ))
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice must be none, auto, required or {type: function, function: {name}}",
                Some("tool_choice"),
            ));
        }
    };
    bt::ToolConfiguration::builder()
        .set_tools(Some(converted))
        .set_tool_choice(choice)
        .build()
        .map(Some)
        .map_err(build_err("tools"))
}

fn output_config(body: &Map<String, Value>) -> Result<Option<bt::OutputConfig>, ProviderError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if rf.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Ok(None);
    }
    let js = rf.get("json_schema").unwrap_or(&Value::Null);
    let schema = js.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
        invalid(
            "response_format.json_schema.schema must be an object",
            Some("response_format"),
        )
    })?;
    let mut def = bt::JsonSchemaDefinition::builder().schema(schema.to_string());
    if let Some(Value::String(n)) = js.get("name") {
        def = def.name(n);
    }
    if let Some(Value::String(d)) = js.get("description") {
        def = def.description(d);
    }
    let format = bt::OutputFormat::builder()
        .r#type(bt::OutputFormatType::JsonSchema)
        .structure(bt::OutputFormatStructure::JsonSchema(
            def.build().map_err(build_err("response_format"))?,
        ))
        .build()
        .map_err(build_err("response_format"))?;
    Ok(Some(
        bt::OutputConfig::builder().text_format(format).build(),
    ))
}

fn additional(body: &Map<String, Value>, parts: &mut ConverseParts) -> Result<(), ProviderError> {
    let mut fields = match body.get("additionalModelRequestFields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(invalid(
                "additionalModelRequestFields must be an object",
                Some("additionalModelRequestFields"),
            ));
        }
    };
    for name in ["thinking", "top_k"] {
        if let Some(v) = body.get(name).filter(|v| !v.is_null()) {
            fields.entry(name).or_insert_with(|| v.clone());
        }
    }
    if !fields.is_empty() {
        parts.additional_fields = Some(Value::Object(fields));
    }
    match body.get("additionalModelResponseFieldPaths") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for p in a {
                let p = p.as_str().ok_or_else(|| {
                    invalid(
                        "additionalModelResponseFieldPaths must hold strings",
                        Some("additionalModelResponseFieldPaths"),
                    )
                })?;
                parts.additional_paths.push(p.to_owned());
            }
        }
        Some(_) => {
            return Err(invalid(
                "additionalModelResponseFieldPaths must be an array of strings",
                Some("additionalModelResponseFieldPaths"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------------------

/// Converse's `stopReason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop: &bt::StopReason) -> &'static str {
    match stop.as_str() {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, malformed_*
    }
}

fn intervened(stop: &bt::StopReason) -> bool {
    matches!(stop, bt::StopReason::GuardrailIntervened)
}

/// The `vmx` extension object: the guardrail trace (and whether it intervened) when the
/// connection has a guardrail or a trace came back; extra model fields.
fn vmx_extension(
    has_guardrail: bool,
    stop: Option<&bt::StopReason>,
    trace: Option<&bt::GuardrailTraceAssessment>,
    additional: Option<&aws_smithy_types::Document>,
) -> Option<Value> {
    let mut vmx = Map::new();
    let did_intervene = stop.is_some_and(intervened);
    if has_guardrail || trace.is_some() || did_intervene {
        let mut g = trace.map_or_else(Map::new, |t| match guardrail_json(t) {
            Value::Object(o) => o,
            _ => Map::new(),
        });
        g.insert(
            "action".into(),
            json!(if did_intervene { "INTERVENED" } else { "NONE" }),
        );
        vmx.insert("guardrail".into(), Value::Object(g));
    }
    if let Some(a) = additional {
        vmx.insert("additionalModelResponseFields".into(), from_document(a));
    }
    (!vmx.is_empty()).then_some(Value::Object(vmx))
}

/// A Converse response as an OpenAI `chat.completion`.
pub fn from_converse(
    model: &str,
    config: &AwsConfig,
    out: &aws_sdk_bedrockruntime::operation::converse::ConverseOutput,
) -> Result<(Value, Option<Usage>), ProviderError> {
    let Some(bt::ConverseOutput::Message(msg)) = &out.output else {
        return Err(ProviderError::Malformed(
            "the Converse response has no message".into(),
        ));
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in &msg.content {
        match b {
            bt::ContentBlock::Text(t) => text.push_str(t),
            bt::ContentBlock::ToolUse(t) => tool_calls.push(json!({
                "id": t.tool_use_id,
                "type": "function",
                "function": { "name": t.name, "arguments": from_document(&t.input).to_string() },
            })),
            bt::ContentBlock::ReasoningContent(bt::ReasoningContentBlock::ReasoningText(r)) => {
                reasoning.push_str(&r.text);
            }
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert(
        "content".into(),
        if text.is_empty() && !tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(text)
        },
    );
    message.insert("refusal".into(), Value::Null);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    let usage = out.usage.as_ref().map(usage_from_converse);
    let mut body = json!({
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(&out.stop_reason),
        }],
    });
    if let Some(o) = body.as_object_mut() {
        if let Some(u) = &usage {
            o.insert("usage".into(), usage_json(u));
        }
        if let Some(vmx) = vmx_extension(
            config.guardrail_config.is_some(),
            Some(&out.stop_reason),
            out.trace.as_ref().and_then(|t| t.guardrail.as_ref()),
            out.additional_model_response_fields.as_ref(),
        ) {
            o.insert("vmx".into(), vmx);
        }
    }
    Ok((body, usage))
}

// ---------------------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------------------

struct ConverseReceiver {
    rx: EventReceiver<bt::ConverseStreamOutput, ConverseStreamOutputError>,
    ctx: CallCtx,
}

fn stream_variant(e: &ConverseStreamOutputError) -> Option<&'static str> {
    Some(match e {
        ConverseStreamOutputError::ThrottlingException(_) => "ThrottlingException",
        ConverseStreamOutputError::ValidationException(_) => "ValidationException",
        ConverseStreamOutputError::InternalServerException(_) => "InternalServerException",
        ConverseStreamOutputError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ConverseStreamOutputError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        _ => return None,
    })
}

impl Receiver for ConverseReceiver {
    type Event = bt::ConverseStreamOutput;

    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Self::Event>, ProviderError>> {
        Box::pin(async move {
            self.rx.recv().await.map_err(|e| {
                let variant = match &e {
                    aws_sdk_bedrockruntime::error::SdkError::ServiceError(s) => {
                        stream_variant(s.err())
                    }
                    _ => None,
                };
                self.ctx.stream_error(&e, variant)
            })
        })
    }
}

/// ConverseStream events -> OpenAI chunks.
struct ConverseStream {
    id: String,
    model: String,
    created: i64,
    has_guardrail: bool,
    /// Content block index -> OpenAI tool call index.
    tools: HashMap<i32, u64>,
    next_tool: u64,
    stop: Option<bt::StopReason>,
    finished: bool,
}

impl ConverseStream {
    fn new(model: &str, has_guardrail: bool) -> Self {
        Self {
            id: new_id("chatcmpl-"),
            model: model.to_owned(),
            created: now_unix(),
            has_guardrail,
            tools: HashMap::new(),
            next_tool: 0,
            stop: None,
            finished: false,
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

    fn finish(&mut self, out: &mut Out<StreamItem>, trace: Option<&bt::GuardrailTraceAssessment>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let reason = self.stop.as_ref().map_or("stop", finish_reason);
        let mut c = chunk(
            &self.id,
            self.created,
            &self.model,
            delta_choice(json!({}), Some(reason)),
        );
        if let Some(vmx) = vmx_extension(self.has_guardrail, self.stop.as_ref(), trace, None)
            && let Some(o) = c.as_object_mut()
        {
            o.insert("vmx".into(), vmx);
        }
        out.push_back(Ok(StreamItem::Chunk(c)));
    }
}

impl Translate<bt::ConverseStreamOutput> for ConverseStream {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: bt::ConverseStreamOutput,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
        match event {
            bt::ConverseStreamOutput::MessageStart(_) => {
                self.push(out, json!({ "role": "assistant", "content": "" }), None);
            }
            bt::ConverseStreamOutput::ContentBlockStart(e) => {
                if let Some(bt::ContentBlockStart::ToolUse(t)) = &e.start {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(e.content_block_index, index);
                    let call = json!({
                        "index": index,
                        "id": t.tool_use_id,
                        "type": "function",
                        "function": { "name": t.name, "arguments": "" },
                    });
                    self.push(out, json!({ "tool_calls": [call] }), None);
                }
            }
            bt::ConverseStreamOutput::ContentBlockDelta(e) => match &e.delta {
                Some(bt::ContentBlockDelta::Text(t)) if !t.is_empty() => {
                    self.push(out, json!({ "content": t }), None);
                }
                Some(bt::ContentBlockDelta::ToolUse(d)) if !d.input.is_empty() => {
                    if let Some(&index) = self.tools.get(&e.content_block_index) {
                        let call = json!({ "index": index, "function": { "arguments": d.input } });
                        self.push(out, json!({ "tool_calls": [call] }), None);
                    }
                }
                Some(bt::ContentBlockDelta::ReasoningContent(
                    bt::ReasoningContentBlockDelta::Text(t),
                )) if !t.is_empty() => {
                    self.push(out, json!({ "reasoning_content": t }), None);
                }
                _ => {} // signatures, redacted reasoning, citations, images
            },
            bt::ConverseStreamOutput::MessageStop(e) => {
                self.stop = Some(e.stop_reason);
            }
            bt::ConverseStreamOutput::Metadata(m) => {
                let trace = m.trace.as_ref().and_then(|t| t.guardrail.as_ref());
                self.finish(out, trace);
                let usage = m
                    .usage
                    .as_ref()
                    .map(usage_from_converse)
                    .unwrap_or_default();
                let mut c = chunk(&self.id, self.created, &self.model, json!([]));
                if let Some(o) = c.as_object_mut() {
                    o.insert("usage".into(), usage_json(&usage));
                }
                out.push_back(Ok(StreamItem::Chunk(c)));
                out.push_back(Ok(StreamItem::Usage(usage)));
                return Ok(Flow::Done);
            }
            _ => {} // contentBlockStop, future event types
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        if self.stop.is_some() {
            self.finish(out, None);
            return Ok(());
        }
        Err(ProviderError::Malformed(
            "the ConverseStream ended before messageStop".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn translates_roles_tools_and_inference() {
        let parts = to_converse(&body(json!({
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "user", "content": "thanks"}
            ],
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": ["X"],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        })))
        .expect("translates");
        assert_eq!(parts.system.len(), 1);
        assert_eq!(parts.messages.len(), 3, "tool result and user merged");
        let user = &parts.messages[0].content;
        assert!(user[0].is_text());
        assert!(user[1].is_cache_point());
        assert!(user[2].is_image());
        assert!(parts.messages[1].content[0].is_tool_use());
        let last = &parts.messages[2].content;
        assert!(last[0].is_tool_result());
        assert!(last[1].is_text());
        let inf = parts.inference.expect("inference");
        assert_eq!(inf.max_tokens, Some(100));
        assert_eq!(inf.stop_sequences, Some(vec!["X".to_owned()]));
        let tools = parts.tools.expect("tools");
        assert!(matches!(tools.tool_choice, Some(bt::ToolChoice::Any(_))));
        assert_eq!(
            parts.additional_fields,
            Some(json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}))
        );
    }

    #[test]
    fn refuses_remote_images_and_many_choices() {
        let e = to_converse(&body(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]})))
        .expect_err("refused");
        assert!(matches!(e, ProviderError::BadRequest { status: 400, .. }));
        let e = to_converse(&body(
            json!({"n": 2, "messages": [{"role": "user", "content": "x"}]}),
        ))
        .expect_err("refused");
        assert!(matches!(e, ProviderError::BadRequest { .. }));
    }

    #[test]
    fn tool_choice_none_without_tool_history_drops_tools() {
        let parts = to_converse(&body(json!({
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "none"
        })))
        .expect("translates");
        assert!(parts.tools.is_none());
    }

    #[test]
    fn tool_history_without_tools_declares_the_used_tools() {
        let parts = to_converse(&body(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "1"}
        ]})))
        .expect("translates");
        let tools = parts.tools.expect("declared");
        assert_eq!(tools.tools.len(), 1);
        assert!(tools.tool_choice.is_none());
    }

    #[test]
    fn document_names_are_sanitized() {
        assert_eq!(
            document_name(Some("my_report v2.pdf"), 0, 0),
            "my report v2"
        );
        assert_eq!(document_name(Some("..."), 1, 2), "document-1-2");
    }
}
