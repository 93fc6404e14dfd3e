//! Gemini through its **native** API: `POST {base}/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, the key in the `x-goog-api-key` header (never in the URL,
//! where it could end up in access logs and error messages).
//!
//! # Why native, not Google's OpenAI-compatible endpoint
//!
//! The issue asks to choose by which gives correct usage in streams and tools. The native API
//! wins on both, by the compatibility layer's own public bug reports:
//! - **Tools in streams.** The compatibility endpoint's streamed `tool_calls` deltas omit
//!   `index` (openai-python #2806, vercel/ai and AstrBot reports), which the official OpenAI
//!   SDKs' stream accumulators reject or silently drop; and it ends a streamed tool call with
//!   `finish_reason: "stop"` where the same request unstreamed says `"tool_calls"`
//!   (python-genai #2868), which ends agent loops early. Natively a `functionCall` part arrives
//!   whole (name and complete `args` object) in one event, so the adapter emits well-formed,
//!   indexed deltas and the right finish reason itself.
//! - **Usage.** Native `usageMetadata` comes with every streamed chunk (cumulative; the last
//!   is final) and itemizes what the compatibility layer folds or drops:
//!   `cachedContentTokenCount` (part of `promptTokenCount`), `thoughtsTokenCount` (billed as
//!   output, not part of `candidatesTokenCount`) and `toolUsePromptTokenCount` (input, not part
//!   of `promptTokenCount`). The adapter maps them explicitly: `prompt_tokens = prompt +
//!   toolUsePrompt`, `completion_tokens = candidates + thoughts` (so that `total_tokens`
//!   equals Google's `totalTokenCount`), `cached_tokens = cachedContent`,
//!   `completion_tokens_details.reasoning_tokens = thoughts`.
//! - **Thought signatures.** Gemini 3 requires a function call's `thoughtSignature` to come
//!   back with it on the next turn. Natively it is a field of the part; the adapter carries
//!   it in the tool call as `extra_content.google.thought_signature` (the name Google's
//!   compatibility layer uses, so clients written for it keep working) and puts it back.
//!
//! The price is a translation (below), which the Anthropic adapter needs anyway.
//!
//! # Translation
//! Request: `system`/`developer` -> `systemInstruction`; `user` -> role `user` (text,
//! `image_url` data: URL -> `inlineData`, http(s)/gs:// -> `fileData`, `input_audio` and
//! `file` data -> `inlineData`); `assistant` -> role `model` (text, `tool_calls` ->
//! `functionCall` parts); `tool` -> a `functionResponse` part (the function's name found from
//! the assistant's call; a JSON-object result as is, anything else as `{"result": ...}`);
//! consecutive turns of one role merge. `temperature`, `top_p`, `top_k`,
//! `max_completion_tokens`/`max_tokens`, `stop`, `n`, `presence_penalty`,
//! `frequency_penalty`, `seed`, `logprobs`/`top_logprobs` and `response_format`
//! (json_object -> JSON mime type, json_schema -> `responseJsonSchema`) ->
//! `generationConfig`; function `tools` -> `functionDeclarations` with
//! `parametersJsonSchema`, other (native) tool objects such as `{"googleSearch": {}}` pass
//! through; `tool_choice` -> `toolConfig.functionCallingConfig` (none/auto/required/{function}
//! -> NONE/AUTO/ANY/ANY+allowedFunctionNames). Native fields pass through:
//! `generationConfig` (merged), `thinkingConfig`, `safetySettings`, `cachedContent`, `labels`.
//! Dropped: `logit_bias`, `user`, `metadata`, `store`, `stream_options`, `service_tier`,
//! `parallel_tool_calls`, `reasoning_effort`.
//!
//! Response: text parts -> `content`, `thought` parts -> `reasoning_content`, `functionCall` ->
//! `tool_calls` (`finish_reason: "tool_calls"`); `finishReason` STOP -> stop, MAX_TOKENS ->
//! length, SAFETY/RECITATION/BLOCKLIST/PROHIBITED_CONTENT/SPII/IMAGE_SAFETY -> content_filter;
//! a blocked prompt (no candidates) -> content_filter. Streams have no terminator: a stream is
//! complete when it ends after a `finishReason`; the usage chunk is emitted then.
//!
//! Errors: a bad key is a 400 with reason `API_KEY_INVALID` (mapped to `Unauthorized`); a
//! 429's `QuotaFailure` details become limits and `RetryInfo.retryDelay` the Retry-After.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
    StreamItem, Usage,
};
use vmx_domain::provider::ProviderKind;

use crate::anthropic::{parse_data_url, tool_arguments};
use crate::common::{
    ApiKey, Http, chunk, delta_choice, error_from_event, event_json, invalid, json_object, limits,
    new_id, now_unix, u64_field, url_path, usage_json,
};
use crate::sse::SseEvent;
use crate::stream::{Flow, Out, Translator, drive};

/// Gemini's host, as the official SDKs take it.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The API version path segment.
pub const API_VERSION: &str = "v1beta";

/// The Gemini adapter.
pub struct GeminiProvider {
    http: Http,
    base: String,
}

impl GeminiProvider {
    pub(crate) fn new(http: Http, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn post(
        &self,
        model: &str,
        action: &str,
        key: &ApiKey,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = format!(
            "{}/{API_VERSION}/{}:{action}",
            self.base,
            model_path(model)?
        );
        Ok(self
            .http
            .client
            .post(url)
            .header("x-goog-api-key", key.header("")?)
            .json(body))
    }
}

#[async_trait]
impl ChatProvider for GeminiProvider {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = to_generate_content_request(&request.body)?;
        let req = self
            .post(&request.model, "generateContent", &key, &body)?
            .timeout(self.http.opts.request_timeout);
        let (headers, bytes) = self.http.execute(ProviderKind::Gemini, req, &key).await?;
        let resp = json_object(&bytes)?;
        let (body, usage) = from_generate_content(&resp, &request.model)?;
        Ok(ChatCompletion {
            body,
            usage,
            limits: limits(ProviderKind::Gemini, &headers),
        })
    }

    async fn chat_stream(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = to_generate_content_request(&request.body)?;
        let req = self.post(&request.model, "streamGenerateContent?alt=sse", &key, &body)?;
        let resp = self
            .http
            .start_stream(ProviderKind::Gemini, req, &key)
            .await?;
        let limits = limits(ProviderKind::Gemini, resp.headers());
        Ok(ChatStream {
            limits,
            items: drive(
                resp,
                GeminiStream::new(&request.model),
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
        let url = format!("{}/{API_VERSION}/models", self.base);
        let call = format!("GET {}", url_path(&url));
        let req = self
            .http
            .client
            .get(format!("{url}?pageSize=1"))
            .header("x-goog-api-key", key.header("")?)
            .timeout(self.http.opts.request_timeout);
        let (headers, _) = self.http.execute(ProviderKind::Gemini, req, &key).await?;
        Ok(Probe {
            limits: limits(ProviderKind::Gemini, &headers),
            call,
        })
    }
}

/// `models/{id}` (or `tunedModels/{id}`) for a model id, refusing anything that could
/// change the URL's meaning.
pub fn model_path(model: &str) -> Result<String, ProviderError> {
    let m = model.strip_prefix("models/").unwrap_or(model);
    let (collection, id) = match m.strip_prefix("tunedModels/") {
        Some(rest) => ("tunedModels", rest),
        None => ("models", m),
    };
    let ok = !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(invalid(
            format!("'{model}' is not a Gemini model id"),
            Some("model"),
        ));
    }
    Ok(format!("{collection}/{id}"))
}

// ---------------------------------------------------------------------------------------
// Request translation
// ---------------------------------------------------------------------------------------

/// The `generateContent` body for an OpenAI Chat Completions `body`.
pub fn to_generate_content_request(body: &Map<String, Value>) -> Result<Value, ProviderError> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array", Some("messages")))?;
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("messages[{i}].role is required"), Some("messages")))?;
        match role {
            "system" | "developer" => system.extend(parts(m.get("content"), i)?),
            "user" => push_content(&mut contents, "user", parts(m.get("content"), i)?),
            "assistant" => {
                let mut out = parts(m.get("content"), i)?;
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, call) in calls.iter().enumerate() {
                        let name = call
                            .pointer("/function/name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                invalid(
                                    format!(
                                        "messages[{i}].tool_calls[{j}].function.name is required"
                                    ),
                                    Some("messages"),
                                )
                            })?;
                        if let Some(id) = call.get("id").and_then(Value::as_str) {
                            call_names.insert(id.to_owned(), name.to_owned());
                        }
                        let args = tool_arguments(call.pointer("/function/arguments"), i, j)?;
                        let mut part = json!({ "functionCall": { "name": name, "args": args } });
                        if let Some(sig) = call
                            .pointer("/extra_content/google/thought_signature")
                            .and_then(Value::as_str)
                            && let Some(o) = part.as_object_mut()
                        {
                            o.insert("thoughtSignature".into(), json!(sig));
                        }
                        out.push(part);
                    }
                }
                push_content(&mut contents, "model", out);
            }
            "tool" => {
                let name = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| m.get("name").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        invalid(
                            format!(
                                "messages[{i}]: the tool_call_id matches no earlier assistant tool call"
                            ),
                            Some("messages"),
                        )
                    })?;
                let response = function_response(m.get("content"));
                push_content(
                    &mut contents,
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                );
            }
            other => {
                return Err(invalid(
                    format!("messages[{i}].role '{other}' is not supported by Gemini"),
                    Some("messages"),
                ));
            }
        }
    }
    if contents.is_empty() {
        return Err(invalid(
            "at least one user message is required",
            Some("messages"),
        ));
    }

    let mut out = Map::new();
    out.insert(
        "contents".into(),
        Value::Array(
            contents
                .into_iter()
                .map(|(role, parts)| json!({ "role": role, "parts": parts }))
                .collect(),
        ),
    );
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(body)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    tools(body, &mut out)?;
    for (names, to) in [
        (["safetySettings", "safety_settings"], "safetySettings"),
        (["cachedContent", "cached_content"], "cachedContent"),
        (["labels", "labels"], "labels"),
    ] {
        if let Some(v) = names
            .iter()
            .find_map(|n| body.get(*n))
            .filter(|v| !v.is_null())
        {
            out.insert(to.into(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

fn push_content(
    contents: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => contents.push((role, parts)),
    }
}

fn parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, ProviderError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({ "text": s })]),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for p in items {
                if let Some(part) = part(p, i)? {
                    out.push(part);
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
    let bad = |what: &str| invalid(format!("messages[{i}]: {what}"), Some("messages"));
    match p.get("type").and_then(Value::as_str) {
        Some(ty @ ("text" | "refusal")) => {
            let text = p.get(ty).and_then(Value::as_str).unwrap_or_default();
            Ok((!text.is_empty()).then(|| json!({ "text": text })))
        }
        Some("image_url") => {
            let url = p
                .pointer("/image_url/url")
                .or_else(|| p.get("image_url").filter(|v| v.is_string()))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("image_url.url is required"))?;
            if url.starts_with("data:") {
                let (mime, data) =
                    parse_data_url(url).ok_or_else(|| bad("a data: URL must be base64"))?;
                return Ok(Some(
                    json!({ "inlineData": { "mimeType": mime, "data": data } }),
                ));
            }
            if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://")
            {
                let mut file = json!({ "fileUri": url });
                if let (Some(mime), Some(o)) = (guess_mime(url), file.as_object_mut()) {
                    o.insert("mimeType".into(), json!(mime));
                }
                return Ok(Some(json!({ "fileData": file })));
            }
            Err(bad("an image URL must be https://, gs:// or a data: URL"))
        }
        Some("input_audio") => {
            let data = p
                .pointer("/input_audio/data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("input_audio.data is required"))?;
            let format = p
                .pointer("/input_audio/format")
                .and_then(Value::as_str)
                .unwrap_or("wav");
            Ok(Some(
                json!({ "inlineData": { "mimeType": format!("audio/{format}"), "data": data } }),
            ))
        }
        Some("file") => {
            let data = p
                .pointer("/file/file_data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("a file part needs file_data (a data: URL)"))?;
            let (mime, data) =
                parse_data_url(data).ok_or_else(|| bad("file_data must be a base64 data: URL"))?;
            Ok(Some(
                json!({ "inlineData": { "mimeType": mime, "data": data } }),
            ))
        }
        Some(other) => Err(bad(&format!(
            "content parts of type '{other}' are not supported by Gemini"
        ))),
        None => Err(bad("every content part needs a type")),
    }
}

fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next()?.to_ascii_lowercase();
    let ext = path.rsplit('.').next()?;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// A tool message's content as a `functionResponse.response` (which must be an object).
fn function_response(content: Option<&Value>) -> Value {
    let text = match content {
        None | Some(Value::Null) => return json!({}),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(v @ Value::Object(_)) => return v.clone(),
        Some(other) => return json!({ "result": other }),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    }
}

fn generation_config(body: &Map<String, Value>) -> Result<Map<String, Value>, ProviderError> {
    let mut c = match body
        .get("generationConfig")
        .or_else(|| body.get("generation_config"))
    {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    let number = |name: &str| body.get(name).filter(|v| v.is_number()).cloned();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
        ("n", "candidateCount"),
        ("top_logprobs", "logprobs"),
    ] {
        if let Some(v) = number(from) {
            c.insert(to.into(), v);
        }
    }
    for name in ["max_completion_tokens", "max_tokens"] {
        match body.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| {
                    invalid(
                        format!("`{name}` must be a non-negative integer"),
                        Some(name),
                    )
                })?;
                c.insert("maxOutputTokens".into(), json!(n));
                break;
            }
        }
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            c.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            c.insert("stopSequences".into(), Value::Array(items.clone()));
        }
        _ => {}
    }
    if body.get("logprobs") == Some(&Value::Bool(true)) {
        c.insert("responseLogprobs".into(), Value::Bool(true));
    }
    if let Some(rf) = body.get("response_format").filter(|v| v.is_object()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                c.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                c.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = rf.pointer("/json_schema/schema") {
                    c.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {}
        }
    }
    if let Some(t) = body
        .get("thinkingConfig")
        .or_else(|| body.get("thinking_config"))
        .filter(|v| v.is_object())
    {
        c.insert("thinkingConfig".into(), t.clone());
    }
    Ok(c)
}

fn tools(body: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), ProviderError> {
    let list = match body.get("tools") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        _ => return Ok(()),
    };
    let mut declarations = Vec::new();
    let mut native = Vec::new();
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            native.push(t.clone()); // googleSearch, codeExecution, urlContext, ...
            continue;
        }
        let f = t.get("function").unwrap_or(&Value::Null);
        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
            invalid(
                format!("tools[{i}].function.name is required"),
                Some("tools"),
            )
        })?;
        let mut d = Map::new();
        d.insert("name".into(), json!(name));
        if let Some(Value::String(desc)) = f.get("description") {
            d.insert("description".into(), json!(desc));
        }
        if let Some(p @ Value::Object(_)) = f.get("parameters") {
            d.insert("parametersJsonSchema".into(), p.clone());
        }
        declarations.push(Value::Object(d));
    }
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        tools.push(json!({ "functionDeclarations": declarations }));
    }
    tools.extend(native);
    out.insert("tools".into(), Value::Array(tools));

    let config = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => json!({ "mode": "NONE" }),
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            other => {
                return Err(invalid(
                    format!("tool_choice '{other}' is not one of none, auto, required"),
                    Some("tool_choice"),
                ));
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    invalid(
                        "tool_choice must be none, auto, required or {type: function, function: {name}}",
                        Some("tool_choice"),
                    )
                })?;
            Some(json!({ "mode": "ANY", "allowedFunctionNames": [name] }))
        }
    };
    if let Some(c) = config {
        out.insert("toolConfig".into(), json!({ "functionCallingConfig": c }));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Response translation
// ---------------------------------------------------------------------------------------

/// Gemini's `usageMetadata` as [`Usage`], and the thinking tokens.
pub fn usage_from_gemini(u: &Value) -> (Usage, u64) {
    let n = |name: &str| u64_field(u, name).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    (
        Usage {
            prompt_tokens: n("promptTokenCount") + n("toolUsePromptTokenCount"),
            completion_tokens: n("candidatesTokenCount") + thoughts,
            cached_tokens: n("cachedContentTokenCount"),
            cache_creation_tokens: 0,
        },
        thoughts,
    )
}

/// Gemini's `finishReason` as an OpenAI `finish_reason`.
pub fn finish_reason(reason: &str, has_tool_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

#[derive(Default)]
struct Converted {
    text: String,
    reasoning: String,
    calls: Vec<Value>,
}

/// A candidate's parts. Tool calls are numbered from `next_index`.
fn convert_parts(parts: &[Value], next_index: &mut u64, with_index: bool) -> Converted {
    let mut c = Converted::default();
    for p in parts {
        if let Some(fc) = p.get("functionCall") {
            let mut call = Map::new();
            if with_index {
                call.insert("index".into(), json!(*next_index));
            }
            *next_index += 1;
            let id = fc
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id("call_"), str::to_owned);
            call.insert("id".into(), json!(id));
            call.insert("type".into(), json!("function"));
            call.insert(
                "function".into(),
                json!({
                    "name": fc.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": fc.get("args").cloned().unwrap_or_else(|| json!({})).to_string(),
                }),
            );
            if let Some(sig) = p.get("thoughtSignature").and_then(Value::as_str) {
                call.insert(
                    "extra_content".into(),
                    json!({ "google": { "thought_signature": sig } }),
                );
            }
            c.calls.push(Value::Object(call));
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought") == Some(&Value::Bool(true)) {
                c.reasoning.push_str(t);
            } else {
                c.text.push_str(t);
            }
        }
    }
    c
}

/// A `generateContent` response as an OpenAI `chat.completion`.
pub fn from_generate_content(
    resp: &Value,
    model: &str,
) -> Result<(Value, Option<Usage>), ProviderError> {
    let candidates = match resp.get("candidates") {
        Some(Value::Array(c)) => c.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => {
            return Err(ProviderError::Malformed(
                "`candidates` is not an array".into(),
            ));
        }
    };
    let mut choices = Vec::new();
    for (pos, cand) in candidates.iter().enumerate() {
        let index = u64_field(cand, "index").unwrap_or(pos as u64);
        let parts = cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut n = 0;
        let c = convert_parts(parts, &mut n, false);
        let finish = finish_reason(
            cand.get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP"),
            !c.calls.is_empty(),
        );
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            if c.text.is_empty() && !c.calls.is_empty() {
                Value::Null
            } else {
                Value::String(c.text)
            },
        );
        message.insert("refusal".into(), Value::Null);
        if !c.calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(c.calls));
        }
        if !c.reasoning.is_empty() {
            message.insert("reasoning_content".into(), Value::String(c.reasoning));
        }
        choices.push(json!({
            "index": index,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    if choices.is_empty() {
        // The prompt was blocked (promptFeedback.blockReason): no candidate at all.
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null, "refusal": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let usage = resp.get("usageMetadata").map(usage_from_gemini);
    let mut body = json!({
        "id": resp.get("responseId").and_then(Value::as_str).map_or_else(|| new_id("chatcmpl-"), str::to_owned),
        "object": "chat.completion",
        "created": now_unix(),
        "model": resp.get("modelVersion").and_then(Value::as_str).unwrap_or(model),
        "choices": choices,
    });
    if let (Some((u, thoughts)), Some(o)) = (&usage, body.as_object_mut()) {
        o.insert("usage".into(), usage_json(u, Some(*thoughts)));
    }
    Ok((body, usage.map(|(u, _)| u)))
}

/// `streamGenerateContent?alt=sse` events -> OpenAI chunks.
struct GeminiStream {
    id: String,
    model: String,
    created: i64,
    usage: Option<(Usage, u64)>,
    /// Candidates that got their role chunk.
    started: HashSet<u64>,
    /// Tool calls so far, per candidate.
    calls: HashMap<u64, u64>,
    finished: bool,
}

impl GeminiStream {
    fn new(model: &str) -> Self {
        Self {
            id: new_id("chatcmpl-"),
            model: model.to_owned(),
            created: now_unix(),
            usage: None,
            started: HashSet::new(),
            calls: HashMap::new(),
            finished: false,
        }
    }
}

impl Translator for GeminiStream {
    fn on_event(&mut self, event: SseEvent, out: &mut Out) -> Result<Flow, ProviderError> {
        let v = event_json(&event.data)?;
        if let Some(err) = v.get("error") {
            return Err(error_from_event(err));
        }
        if let Some(id) = v.get("responseId").and_then(Value::as_str) {
            id.clone_into(&mut self.id);
        }
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            m.clone_into(&mut self.model);
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(usage_from_gemini(u));
        }
        let candidates = v
            .get("candidates")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut choices = Vec::new();
        for (pos, cand) in candidates.iter().enumerate() {
            let index = u64_field(cand, "index").unwrap_or(pos as u64);
            let parts = cand
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let next = self.calls.entry(index).or_insert(0);
            let c = convert_parts(parts, next, true);
            let has_calls = *next > 0;
            let mut delta = Map::new();
            if self.started.insert(index) {
                delta.insert("role".into(), json!("assistant"));
            }
            if !c.text.is_empty() {
                delta.insert("content".into(), json!(c.text));
            }
            if !c.reasoning.is_empty() {
                delta.insert("reasoning_content".into(), json!(c.reasoning));
            }
            if !c.calls.is_empty() {
                delta.insert("tool_calls".into(), Value::Array(c.calls));
            }
            let finish = cand
                .get("finishReason")
                .and_then(Value::as_str)
                .map(|r| finish_reason(r, has_calls));
            if finish.is_some() {
                self.finished = true;
            }
            if !delta.is_empty() || finish.is_some() {
                choices.push(delta_choice(index, Value::Object(delta), finish));
            }
        }
        if candidates.is_empty() && v.pointer("/promptFeedback/blockReason").is_some() {
            self.finished = true;
            choices.push(delta_choice(
                0,
                json!({ "role": "assistant" }),
                Some("content_filter"),
            ));
        }
        if !choices.is_empty() {
            let c = chunk(&self.id, self.created, &self.model, Value::Array(choices));
            out.push_back(Ok(StreamItem::Chunk(c)));
        }
        Ok(Flow::Continue)
    }

    fn on_eof(&mut self, out: &mut Out) -> Result<(), ProviderError> {
        if !self.finished {
            return Err(ProviderError::Malformed(
                "the stream ended before a finishReason".into(),
            ));
        }
        if let Some((usage, thoughts)) = self.usage.take() {
            let mut c = chunk(&self.id, self.created, &self.model, json!([]));
            if let Some(o) = c.as_object_mut() {
                o.insert("usage".into(), usage_json(&usage, Some(thoughts)));
            }
            out.push_back(Ok(StreamItem::Chunk(c)));
            out.push_back(Ok(StreamItem::Usage(usage)));
        }
        Ok(())
    }
}
