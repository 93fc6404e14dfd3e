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

use async_trait::async_trait;
use serde_json::Value;
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
};
use vmx_domain::provider::ProviderKind;

use crate::content::invalid;
use crate::http::{Http, json_object, url_path};
use crate::key::ApiKey;
use crate::ratelimit;

mod request;
mod response;

pub use request::to_generate_content_request;
use response::GeminiStream;
pub use response::{finish_reason, from_generate_content, usage_from_gemini};

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
            limits: ratelimit::from_headers(ProviderKind::Gemini, &headers),
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
        let limits = ratelimit::from_headers(ProviderKind::Gemini, resp.headers());
        let translator = GeminiStream::new(&request.model);
        Ok(self.http.chat_stream(resp, limits, translator, key))
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
            limits: ratelimit::from_headers(ProviderKind::Gemini, &headers),
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
