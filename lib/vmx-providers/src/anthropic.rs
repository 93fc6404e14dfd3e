//! Anthropic: OpenAI Chat Completions translated to the Messages API
//! (`POST {base}/v1/messages`, headers `x-api-key` and `anthropic-version: 2023-06-01`), and
//! its responses and SSE events translated back.
//!
//! Request (OpenAI -> Messages):
//! - `system`/`developer` messages -> top-level `system` text blocks (in order, wherever they
//!   appear; `cache_control` on a part or on the message is kept).
//! - `user` content: text -> text blocks; `image_url` with a `data:` URL -> base64 image
//!   source (a PDF data URL -> a document block), with an http(s) URL -> url image source;
//!   `file` with `file_data` -> document block; an Anthropic-native block (`image`,
//!   `document`, `search_result`, ...) passes through; `input_audio` is refused.
//! - `assistant`: text -> text blocks, `tool_calls` -> `tool_use` blocks (arguments parsed
//!   as JSON), `thinking_blocks` (if the caller kept them) passed back first.
//! - `tool` messages -> `tool_result` blocks in a user turn; consecutive tool messages (and a
//!   user message following them) merge into one user turn, tool results first. Consecutive
//!   turns of the same role merge (the Messages API wants alternating turns).
//! - `max_completion_tokens`, else `max_tokens`, else 4096 -> `max_tokens` (required there).
//! - `temperature`, `top_p` kept; `stop` -> `stop_sequences`; `user` -> `metadata.user_id`.
//! - `tools` (function tools) -> `{name, description, input_schema}`, Anthropic-native tools
//!   pass through; `tool_choice` none/auto/required/{function} -> none/auto/any/{tool};
//!   `parallel_tool_calls: false` -> `disable_parallel_tool_use: true`.
//! - Anthropic-only fields pass through: `thinking`, `top_k`, `container`, `mcp_servers`,
//!   `context_management`, `output_config`, `output_format`.
//! - `n` > 1 is refused. Dropped (no Messages equivalent): `frequency_penalty`,
//!   `presence_penalty`, `logit_bias`, `logprobs`, `top_logprobs`, `seed`, `response_format`,
//!   `stream_options`, `store`, `metadata`, `service_tier`, `modalities`, `audio`,
//!   `prediction`, `reasoning_effort`, `web_search_options`.
//!
//! Response (Messages -> OpenAI): text blocks -> `content`, `tool_use` -> `tool_calls`,
//! `thinking` -> `reasoning_content`; `stop_reason` end_turn/stop_sequence/pause_turn -> stop,
//! max_tokens/model_context_window_exceeded -> length, tool_use -> tool_calls, refusal ->
//! content_filter. Usage: `prompt_tokens = input_tokens + cache_read_input_tokens +
//! cache_creation_input_tokens`, `prompt_tokens_details.cached_tokens =
//! cache_read_input_tokens`, the two Anthropic cache counts kept alongside.
//!
//! Stream: `message_start` -> the role chunk; `content_block_start`/`_delta` (text,
//! `tool_use` + `input_json_delta`, thinking) -> delta chunks; `message_delta` -> the
//! finish chunk (and the final output tokens); `message_stop` -> the usage chunk and the
//! usage; `ping` ignored; an `error` event -> an `Err` item.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, MessagesEvent,
    MessagesProvider, MessagesResponse, MessagesStream, Probe, ProviderError, StreamItem, Usage,
};
use vmx_domain::provider::ProviderKind;

use crate::common::{
    ApiKey, Http, chunk, delta_choice, error_from_event, event_json, invalid, json_object, new_id,
    now_unix, u64_field, url_path, usage_json,
};
use crate::ratelimit;
use crate::sse::SseEvent;
use crate::stream::{Flow, Out, Translator, drive};

/// As the official SDKs take it.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the caller gave none (the Messages API requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Request fields that only Anthropic knows, passed through unchanged.
const PASSTHROUGH: &[&str] = &[
    "thinking",
    "top_k",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
];

/// The Anthropic adapter.
pub struct AnthropicProvider {
    http: Http,
    base: String,
}

impl AnthropicProvider {
    pub(crate) fn new(http: Http, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &ApiKey,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(self
            .http
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", key.header("")?)
            .header("anthropic-version", API_VERSION))
    }
}

#[async_trait]
impl ChatProvider for AnthropicProvider {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = to_messages_request(&request.model, &request.body, false)?;
        let req = self
            .request(reqwest::Method::POST, "/v1/messages", &key)?
            .json(&body)
            .timeout(self.http.opts.request_timeout);
        let (headers, bytes) = self
            .http
            .execute(ProviderKind::Anthropic, req, &key)
            .await?;
        let msg = json_object(&bytes)?;
        if msg.get("type").and_then(Value::as_str) == Some("error") {
            let err = msg.get("error").cloned().unwrap_or(Value::Null);
            return Err(key.scrub_error(error_from_event(&err)));
        }
        let (body, usage) = from_message(&msg)?;
        Ok(ChatCompletion {
            body,
            usage,
            limits: ratelimit::anthropic(&headers),
        })
    }

    async fn chat_stream(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = to_messages_request(&request.model, &request.body, true)?;
        let req = self
            .request(reqwest::Method::POST, "/v1/messages", &key)?
            .json(&body);
        let resp = self
            .http
            .start_stream(ProviderKind::Anthropic, req, &key)
            .await?;
        let limits = ratelimit::anthropic(resp.headers());
        Ok(ChatStream {
            limits,
            items: drive(
                resp,
                AnthropicStream::new(&request.model),
                &self.http.opts,
                key,
            ),
        })
    }

    async fn probe(
        &self,
        credentials: &Credentials,
        _model: Option<&str>,
    ) -> Result<Probe, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let req = self
            .request(reqwest::Method::GET, "/v1/models?limit=1", &key)?
            .timeout(self.http.opts.request_timeout);
        let call = format!("GET {}", url_path(&format!("{}/v1/models", self.base)));
        let (headers, _) = self
            .http
            .execute(ProviderKind::Anthropic, req, &key)
            .await?;
        Ok(Probe {
            limits: ratelimit::anthropic(&headers),
            call,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// The Messages API body for an OpenAI Chat Completions `body`.
pub fn to_messages_request(
    model: &str,
    body: &Map<String, Value>,
    stream: bool,
) -> Result<Value, ProviderError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array", Some("messages")))?;
    if let Some(n) = body.get("n").and_then(Value::as_u64)
        && n > 1
    {
        return Err(invalid(
            "Anthropic returns one choice per request: `n` must be 1",
            Some("n"),
        ));
    }

    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required"), Some("messages")))?;
        match role {
            "system" | "developer" => {
                let mut blocks = content_blocks(m.get("content"), i)?;
                message_cache_control(m, &mut blocks);
                system.extend(blocks);
            }
            "user" => {
                let mut blocks = content_blocks(m.get("content"), i)?;
                message_cache_control(m, &mut blocks);
                push_turn(&mut turns, "user", blocks);
            }
            "assistant" => {
                let mut blocks = assistant_blocks(m, i)?;
                message_cache_control(m, &mut blocks);
                push_turn(&mut turns, "assistant", blocks);
            }
            "tool" => {
                let block = tool_result(m, i)?;
                push_turn(&mut turns, "user", vec![block]);
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}].role '{other}' is not supported by Anthropic"),
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

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("max_tokens".into(), json!(max_tokens(body)?));
    out.insert(
        "messages".into(),
        Value::Array(
            turns
                .into_iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    for name in ["temperature", "top_p"] {
        if let Some(v @ Value::Number(_)) = body.get(name) {
            out.insert(name.into(), v.clone());
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(items.clone()));
        }
        _ => {}
    }
    if let Some(Value::String(user)) = body.get("user") {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    tools(body, &mut out)?;
    for name in PASSTHROUGH {
        if let Some(v) = body.get(*name)
            && !v.is_null()
        {
            out.insert((*name).into(), v.clone());
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(out))
}

fn max_tokens(body: &Map<String, Value>) -> Result<u64, ProviderError> {
    for name in ["max_completion_tokens", "max_tokens"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return v.as_u64().ok_or_else(|| {
                    invalid(
                        format!("`{name}` must be a non-negative integer"),
                        Some(name),
                    )
                });
            }
        }
    }
    Ok(DEFAULT_MAX_TOKENS)
}

/// Appends `blocks` as a turn of `role`, merging with the previous turn of the same role
/// (tool results stay first in a user turn, as the Messages API requires).
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, content)) if *last == role => {
            for b in blocks {
                if is_type(&b, "tool_result") {
                    let at = content
                        .iter()
                        .take_while(|c| is_type(c, "tool_result"))
                        .count();
                    content.insert(at, b);
                } else {
                    content.push(b);
                }
            }
        }
        _ => turns.push((role, blocks)),
    }
}

fn is_type(v: &Value, ty: &str) -> bool {
    v.get("type").and_then(Value::as_str) == Some(ty)
}

/// A message-level `cache_control` (an extension some SDKs send) goes on its last block.
fn message_cache_control(m: &Value, blocks: &mut [Value]) {
    if let Some(cc) = m.get("cache_control")
        && !cc.is_null()
        && let Some(Value::Object(last)) = blocks.last_mut()
    {
        last.insert("cache_control".into(), cc.clone());
    }
}

/// OpenAI message content (a string or parts) as Messages content blocks.
fn content_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "type": "text", "text": s })]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(b) = part(p, i)? {
                    out.push(b);
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

fn part(p: &Value, i: usize) -> Result<Option<Value>, ProviderError> {
    let ty = p.get("type").and_then(Value::as_str).unwrap_or_default();
    let mut block = match ty {
        "text" | "refusal" => {
            let text = p.get(ty).and_then(Value::as_str).unwrap_or_default();
            if text.is_empty() {
                return Ok(None);
            }
            json!({ "type": "text", "text": text })
        }
        "image_url" => {
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
            image_block(url, i)?
        }
        "file" => {
            let file = p.get("file").unwrap_or(&Value::Null);
            let Some(data) = file.get("file_data").and_then(Value::as_str) else {
                return Err(invalid(
                    format!(
                        "messages[{i}]: a file part needs file_data (a data: URL); OpenAI file ids mean nothing to Anthropic"
                    ),
                    Some("messages"),
                ));
            };
            let (mime, b64) = parse_data_url(data).ok_or_else(|| {
                invalid(
                    format!("messages[{i}]: file_data must be a base64 data: URL"),
                    Some("messages"),
                )
            })?;
            json!({
                "type": "document",
                "source": { "type": "base64", "media_type": mime, "data": b64 },
            })
        }
        "input_audio" => {
            return Err(invalid(
                format!("messages[{i}]: Anthropic does not accept audio input"),
                Some("messages"),
            ));
        }
        "" => {
            return Err(invalid(
                format!("messages[{i}]: every content part needs a type"),
                Some("messages"),
            ));
        }
        // An Anthropic-native block (image, document, search_result, thinking, ...).
        _ => return Ok(Some(p.clone())),
    };
    if let Some(cc) = p.get("cache_control")
        && !cc.is_null()
        && let Some(o) = block.as_object_mut()
    {
        o.insert("cache_control".into(), cc.clone());
    }
    Ok(Some(block))
}

fn image_block(url: &str, i: usize) -> Result<Value, ProviderError> {
    if url.starts_with("data:") {
        let (mime, data) = parse_data_url(url).ok_or_else(|| {
            invalid(
                format!(
                    "messages[{i}]: an image data: URL must be base64 (data:<type>;base64,...)"
                ),
                Some("messages"),
            )
        })?;
        let ty = if mime == "application/pdf" {
            "document"
        } else {
            "image"
        };
        return Ok(json!({
            "type": ty,
            "source": { "type": "base64", "media_type": mime, "data": data },
        }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(invalid(
        format!("messages[{i}]: an image URL must be https:// or a data: URL"),
        Some("messages"),
    ))
}

/// `data:<media type>[;params];base64,<data>` -> (media type, data).
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let mime = meta.split(';').next()?.trim();
    (!mime.is_empty() && !data.is_empty()).then_some((mime, data))
}

fn assistant_blocks(m: &Value, i: usize) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    if let Some(Value::Array(thinking)) = m.get("thinking_blocks") {
        blocks.extend(thinking.iter().cloned());
    }
    blocks.extend(content_blocks(m.get("content"), i)?);
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        for (j, call) in calls.iter().enumerate() {
            let id = call.get("id").and_then(Value::as_str).ok_or_else(|| {
                invalid(
                    format!("messages[{i}].tool_calls[{j}].id is required"),
                    Some("messages"),
                )
            })?;
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        format!("messages[{i}].tool_calls[{j}].function.name is required"),
                        Some("messages"),
                    )
                })?;
            let input = tool_arguments(call.pointer("/function/arguments"), i, j)?;
            blocks.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
        }
    }
    Ok(blocks)
}

/// Tool-call `arguments` (a JSON string) as the object Anthropic and Gemini take.
pub(crate) fn tool_arguments(
    args: Option<&Value>,
    i: usize,
    j: usize,
) -> Result<Value, ProviderError> {
    let bad = || {
        invalid(
            format!("messages[{i}].tool_calls[{j}].function.arguments must be a JSON object"),
            Some("messages"),
        )
    };
    match args {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad()),
        },
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(bad()),
    }
}

fn tool_result(m: &Value, i: usize) -> Result<Value, ProviderError> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                format!("messages[{i}].tool_call_id is required"),
                Some("messages"),
            )
        })?;
    let content = match m.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(v @ Value::Array(_)) => Value::Array(content_blocks(Some(v), i)?),
        Some(_) => {
            return Err(invalid(
                format!("messages[{i}].content must be a string or an array of parts"),
                Some("messages"),
            ));
        }
    };
    let mut block = json!({ "type": "tool_result", "tool_use_id": id, "content": content });
    if let Some(cc) = m.get("cache_control")
        && !cc.is_null()
        && let Some(o) = block.as_object_mut()
    {
        o.insert("cache_control".into(), cc.clone());
    }
    Ok(block)
}

fn tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ProviderError> {
    let list = match body.get("tools") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Ok(()),
    };
    let mut converted = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            converted.push(t.clone()); // an Anthropic tool (web search, code execution, ...)
            continue;
        }
        let f = t.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("tools[{i}].function.name is required"),
                Some("tools"),
            )
        })?;
        let mut tool = Map::new();
        tool.insert("name".into(), Value::String(name.to_owned()));
        if let Some(Value::String(d)) = f.get("description") {
            tool.insert("description".into(), Value::String(d.clone()));
        }
        let schema = match f.get("parameters") {
            Some(p @ Value::Object(_)) => p.clone(),
            _ => json!({ "type": "object", "properties": {} }),
        };
        tool.insert("input_schema".into(), schema);
        if let Some(cc) = t.get("cache_control").or_else(|| f.get("cache_control"))
            && !cc.is_null()
        {
            tool.insert("cache_control".into(), cc.clone());
        }
        converted.push(Value::Object(tool));
    }
    out.insert("tools".into(), Value::Array(converted));

    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Some(json!({ "type": "none" })),
            "auto" => Some(json!({ "type": "auto" })),
            "required" => Some(json!({ "type": "any" })),
            other => {
                return Err(invalid(
                    format!("tool_choice '{other}' is not one of none, auto, required"),
                    Some("tool_choice"),
                ));
            }
        },
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid("tool_choice.function.name is required", Some("tool_choice"))
                    })?;
                Some(json!({ "type": "tool", "name": name }))
            }
            // Already in Anthropic's form.
            Some("auto" | "any" | "tool" | "none") => Some(Value::Object(o.clone())),
            _ => {
                return Err(invalid(
                    "tool_choice must be none, auto, required or {type: function, function: {name}}",
                    Some("tool_choice"),
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                "tool_choice must be a string or an object",
                Some("tool_choice"),
            ));
        }
    };
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if !is_type(c, "none")
            && let Some(o) = c.as_object_mut()
        {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------------------

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Anthropic's `usage` as [`Usage`]: the prompt includes cache reads and cache writes.
pub fn usage_from_anthropic(u: &Value) -> Usage {
    let n = |name: &str| u64_field(u, name).unwrap_or(0);
    let read = n("cache_read_input_tokens");
    let creation = n("cache_creation_input_tokens");
    Usage {
        prompt_tokens: n("input_tokens") + read + creation,
        completion_tokens: n("output_tokens"),
        cached_tokens: read,
        cache_creation_tokens: creation,
    }
}

/// The OpenAI `usage` object, with Anthropic's cache counts kept alongside.
fn openai_usage(u: &Usage) -> Value {
    let mut v = usage_json(u, None);
    if let Some(o) = v.as_object_mut() {
        o.insert("cache_read_input_tokens".into(), json!(u.cached_tokens));
        o.insert(
            "cache_creation_input_tokens".into(),
            json!(u.cache_creation_tokens),
        );
    }
    v
}

/// A Messages API response as an OpenAI `chat.completion`.
pub fn from_message(msg: &Value) -> Result<(Value, Option<Usage>), ProviderError> {
    let blocks = msg
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("the message has no content array".into()))?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": b.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {
                        "name": b.get("name").cloned().unwrap_or(Value::Null),
                        "arguments": input.to_string(),
                    },
                }));
            }
            _ => {} // server tool blocks, redacted thinking: no OpenAI equivalent
        }
    }
    let usage = msg.get("usage").map(usage_from_anthropic);
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
    let finish = msg
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    let mut body = json!({
        "id": msg.get("id").and_then(Value::as_str).map_or_else(|| new_id("msg_"), str::to_owned),
        "object": "chat.completion",
        "created": now_unix(),
        "model": msg.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
    });
    if let (Some(u), Some(o)) = (&usage, body.as_object_mut()) {
        o.insert("usage".into(), openai_usage(u));
    }
    Ok((body, usage))
}

// ---------------------------------------------------------------------------------------
// Stream translation
// ---------------------------------------------------------------------------------------

/// Messages API stream events -> OpenAI chunks.
pub(crate) struct AnthropicStream {
    id: String,
    model: String,
    created: i64,
    usage: Usage,
    input_tokens: u64,
    /// Content block index -> OpenAI tool call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
}

impl AnthropicStream {
    pub(crate) fn new(model: &str) -> Self {
        Self {
            id: new_id("msg_"),
            model: model.to_owned(),
            created: now_unix(),
            usage: Usage::default(),
            input_tokens: 0,
            tools: HashMap::new(),
            next_tool: 0,
        }
    }

    fn push(&self, out: &mut Out, delta: Value, finish: Option<&str>) {
        let c = chunk(
            &self.id,
            self.created,
            &self.model,
            json!([delta_choice(0, delta, finish)]),
        );
        out.push_back(Ok(StreamItem::Chunk(c)));
    }

    /// Takes the counts an event's `usage` carries (later counts replace earlier ones: they
    /// are cumulative).
    fn take_usage(&mut self, u: &Value) {
        if let Some(v) = u64_field(u, "input_tokens") {
            self.input_tokens = v;
        }
        if let Some(v) = u64_field(u, "cache_read_input_tokens") {
            self.usage.cached_tokens = v;
        }
        if let Some(v) = u64_field(u, "cache_creation_input_tokens") {
            self.usage.cache_creation_tokens = v;
        }
        if let Some(v) = u64_field(u, "output_tokens") {
            self.usage.completion_tokens = v;
        }
        self.usage.prompt_tokens =
            self.input_tokens + self.usage.cached_tokens + self.usage.cache_creation_tokens;
    }
}

impl Translator for AnthropicStream {
    fn on_event(&mut self, event: SseEvent, out: &mut Out) -> Result<Flow, ProviderError> {
        let v = event_json(&event.data)?;
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        match ty {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    id.clone_into(&mut self.id);
                }
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    model.clone_into(&mut self.model);
                }
                if let Some(u) = m.get("usage") {
                    self.take_usage(u);
                }
                self.push(out, json!({ "role": "assistant", "content": "" }), None);
            }
            "content_block_start" => {
                let index = u64_field(&v, "index").unwrap_or(0);
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            self.push(out, json!({ "content": t }), None);
                        }
                    }
                    Some("thinking") => {
                        if let Some(t) = block.get("thinking").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            self.push(out, json!({ "reasoning_content": t }), None);
                        }
                    }
                    Some("tool_use") => {
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
                let index = u64_field(&v, "index").unwrap_or(0);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let s = |name: &str| delta.get(name).and_then(Value::as_str).unwrap_or("");
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.push(out, json!({ "content": s("text") }), None),
                    Some("thinking_delta") => {
                        self.push(out, json!({ "reasoning_content": s("thinking") }), None);
                    }
                    Some("input_json_delta") => {
                        if let Some(&tool_index) = self.tools.get(&index)
                            && !s("partial_json").is_empty()
                        {
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
                    self.take_usage(u);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.push(out, json!({}), Some(finish_reason(reason)));
                }
            }
            "message_stop" => {
                let mut c = chunk(&self.id, self.created, &self.model, json!([]));
                if let Some(o) = c.as_object_mut() {
                    o.insert("usage".into(), openai_usage(&self.usage));
                }
                out.push_back(Ok(StreamItem::Chunk(c)));
                out.push_back(Ok(StreamItem::Usage(self.usage)));
                return Ok(Flow::Done);
            }
            "error" => {
                return Err(error_from_event(v.get("error").unwrap_or(&Value::Null)));
            }
            _ => {} // ping, content_block_stop, future event types
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&mut self, _out: &mut Out) -> Result<(), ProviderError> {
        Err(ProviderError::Malformed(
            "the stream ended before message_stop".into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Messages API passthrough
// ---------------------------------------------------------------------------------------

/// The body of a passthrough call: the caller's request with the provider model id; an
/// `anthropic_beta` list in the body (how the gateway carries the caller's `anthropic-beta`
/// header, and how Bedrock takes it) becomes the `anthropic-beta` header.
fn passthrough_body(
    model: &str,
    mut body: Map<String, Value>,
    stream: bool,
) -> (Map<String, Value>, Option<String>) {
    body.insert("model".into(), Value::String(model.to_owned()));
    body.insert("stream".into(), Value::Bool(stream));
    let betas = body.remove("anthropic_beta").and_then(|b| match b {
        Value::Array(items) => {
            let list: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            (!list.is_empty()).then(|| list.join(","))
        }
        Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    });
    (body, betas)
}

#[async_trait]
impl MessagesProvider for AnthropicProvider {
    async fn messages(
        &self,
        credentials: &Credentials,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<MessagesResponse, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let (body, betas) = passthrough_body(model, body, false);
        let mut req = self
            .request(reqwest::Method::POST, "/v1/messages", &key)?
            .json(&body)
            .timeout(self.http.opts.request_timeout);
        if let Some(b) = betas {
            req = req.header("anthropic-beta", b);
        }
        let (headers, bytes) = self
            .http
            .execute(ProviderKind::Anthropic, req, &key)
            .await?;
        let msg = json_object(&bytes)?;
        if msg.get("type").and_then(Value::as_str) == Some("error") {
            let err = msg.get("error").cloned().unwrap_or(Value::Null);
            return Err(key.scrub_error(error_from_event(&err)));
        }
        let usage = msg.get("usage").map(usage_from_anthropic);
        Ok(MessagesResponse {
            body: msg,
            usage,
            limits: ratelimit::anthropic(&headers),
        })
    }

    async fn messages_stream(
        &self,
        credentials: &Credentials,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<MessagesStream, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let (body, betas) = passthrough_body(model, body, true);
        let mut req = self
            .request(reqwest::Method::POST, "/v1/messages", &key)?
            .json(&body);
        if let Some(b) = betas {
            req = req.header("anthropic-beta", b);
        }
        let resp = self
            .http
            .start_stream(ProviderKind::Anthropic, req, &key)
            .await?;
        let limits = ratelimit::anthropic(resp.headers());
        let items = drive(resp, Passthrough::default(), &self.http.opts, key);
        Ok(MessagesStream {
            limits,
            events: Box::pin(items.map(|item| {
                item.map(|i| match i {
                    StreamItem::Usage(u) => MessagesEvent::Usage(u),
                    StreamItem::Chunk(mut v) => MessagesEvent::Event {
                        name: v
                            .get("event")
                            .and_then(Value::as_str)
                            .unwrap_or("message")
                            .to_owned(),
                        data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
                    },
                })
            })),
        })
    }
}

/// Passes Anthropic's events through unchanged (each as `{"event", "data"}`), tracking the
/// usage; `message_stop` ends the stream, an `error` event fails it.
#[derive(Default)]
pub struct Passthrough {
    usage: Option<Value>,
}

impl Passthrough {
    /// Handles one decoded event; public for the Bedrock InvokeModel stream, whose chunks
    /// carry the same events.
    pub fn event(
        &mut self,
        name: &str,
        data: Value,
    ) -> Result<(Vec<StreamItem>, bool), ProviderError> {
        match name {
            "error" => {
                let err = data.get("error").cloned().unwrap_or(Value::Null);
                return Err(error_from_event(&err));
            }
            "message_start" => {
                self.usage = data.pointer("/message/usage").cloned();
            }
            "message_delta" => {
                if let (Some(Value::Object(total)), Some(Value::Object(delta))) =
                    (self.usage.as_mut(), data.get("usage"))
                {
                    for (k, v) in delta {
                        if !v.is_null() {
                            total.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        // The usage goes out before `message_stop`, so a consumer that stops reading at the
        // last event still has it.
        let done = name == "message_stop";
        let mut items = Vec::with_capacity(2);
        if done {
            items.push(StreamItem::Usage(
                self.usage
                    .as_ref()
                    .map(usage_from_anthropic)
                    .unwrap_or_default(),
            ));
        }
        items.push(StreamItem::Chunk(json!({"event": name, "data": data})));
        Ok((items, done))
    }
}

impl Translator for Passthrough {
    fn on_event(&mut self, event: SseEvent, out: &mut Out) -> Result<Flow, ProviderError> {
        let name = event.event.unwrap_or_else(|| "message".to_owned());
        if name == "ping" {
            out.push_back(Ok(StreamItem::Chunk(
                json!({"event": "ping", "data": {"type": "ping"}}),
            )));
            return Ok(Flow::Continue);
        }
        let data = event_json(&event.data)?;
        let (items, done) = self.event(&name, data)?;
        out.extend(items.into_iter().map(Ok));
        Ok(if done { Flow::Done } else { Flow::Continue })
    }

    fn on_eof(&mut self, _out: &mut Out) -> Result<(), ProviderError> {
        Err(ProviderError::Malformed(
            "the stream ended before message_stop".into(),
        ))
    }
}
