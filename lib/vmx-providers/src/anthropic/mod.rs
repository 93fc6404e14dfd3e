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

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, MessagesEvent,
    MessagesProvider, MessagesResponse, MessagesStream, Probe, ProviderError, StreamItem,
};
use vmx_domain::provider::ProviderKind;

use crate::errors::error_from_event;
use crate::http::{Http, drive_sse, json_object, url_path};
use crate::key::ApiKey;
use crate::ratelimit;

mod request;
mod response;
mod stream;

pub use request::to_messages_request;
pub use response::{finish_reason, from_message, usage_from_anthropic};
pub use stream::{AnthropicStream, Passthrough, UsageCounts};

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

    /// A non-streaming `POST /v1/messages`: the answer's headers and message (an `error`
    /// object in a 2xx answer is its error).
    async fn post(
        &self,
        key: &ApiKey,
        body: &Value,
        betas: Option<String>,
    ) -> Result<(reqwest::header::HeaderMap, Value), ProviderError> {
        let mut req = self
            .request(reqwest::Method::POST, "/v1/messages", key)?
            .json(body)
            .timeout(self.http.opts.request_timeout);
        if let Some(b) = betas {
            req = req.header("anthropic-beta", b);
        }
        let (headers, bytes) = self.http.execute(ProviderKind::Anthropic, req, key).await?;
        let msg = json_object(&bytes)?;
        if msg.get("type").and_then(Value::as_str) == Some("error") {
            let err = msg.get("error").cloned().unwrap_or(Value::Null);
            return Err(key.scrub_error(error_from_event(&err)));
        }
        Ok((headers, msg))
    }

    /// A streaming `POST /v1/messages`, once its headers are in.
    async fn post_stream(
        &self,
        key: &ApiKey,
        body: &Value,
        betas: Option<String>,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut req = self
            .request(reqwest::Method::POST, "/v1/messages", key)?
            .json(body);
        if let Some(b) = betas {
            req = req.header("anthropic-beta", b);
        }
        self.http
            .start_stream(ProviderKind::Anthropic, req, key)
            .await
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
        let (headers, msg) = self.post(&key, &body, None).await?;
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
        let resp = self.post_stream(&key, &body, None).await?;
        let limits = ratelimit::anthropic(resp.headers());
        let translator = AnthropicStream::new(&request.model);
        Ok(self.http.chat_stream(resp, limits, translator, key))
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
        let (headers, msg) = self.post(&key, &Value::Object(body), betas).await?;
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
        let resp = self.post_stream(&key, &Value::Object(body), betas).await?;
        let limits = ratelimit::anthropic(resp.headers());
        let items = drive_sse(resp, Passthrough::default(), &self.http.opts, key);
        Ok(MessagesStream {
            limits,
            events: Box::pin(items.map(|item| {
                item.map(|i| {
                    let mut v = match i {
                        StreamItem::Usage(u) => return MessagesEvent::Usage(u),
                        StreamItem::Chunk(v) => v,
                        // Passthrough makes none; read as the tree it is.
                        StreamItem::ChunkJson(text) => {
                            serde_json::from_str(&text).unwrap_or(Value::Null)
                        }
                    };
                    MessagesEvent::Event {
                        name: v
                            .get("event")
                            .and_then(Value::as_str)
                            .unwrap_or("message")
                            .to_owned(),
                        data: v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
                    }
                })
            })),
        })
    }
}
