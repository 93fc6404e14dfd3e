//! What every adapter shares: the HTTP context, the API key and its scrubber, bounded body
//! reads, and the mapping of provider failures to [`ProviderError`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{Credentials, ProviderError, Usage};
use vmx_domain::provider::ProviderKind;

use crate::ProviderOptions;
use crate::ratelimit;

/// Longest provider message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 1000;
/// Largest error body read from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;
const REDACTED: &str = "[REDACTED]";

/// The shared client and options.
#[derive(Clone)]
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub opts: ProviderOptions,
}

impl Http {
    pub fn new(client: reqwest::Client, opts: ProviderOptions) -> Self {
        Self { client, opts }
    }

    /// Sends a non-streaming request and reads its body (bounded), all within the request
    /// timeout. A non-2xx answer becomes its [`ProviderError`]; a 2xx gives headers and body.
    pub async fn execute(
        &self,
        kind: ProviderKind,
        req: RequestBuilder,
        key: &ApiKey,
    ) -> Result<(HeaderMap, Vec<u8>), ProviderError> {
        let max = self.opts.max_response_bytes;
        let call = async {
            let mut resp = req.send().await.map_err(|e| map_reqwest(&e, key))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if !status.is_success() {
                let body = read_body(&mut resp, MAX_ERROR_BODY, key, true).await?;
                return Err(error_for_status(kind, status, &headers, &body, key));
            }
            let body = read_body(&mut resp, max, key, false).await?;
            Ok((headers, body))
        };
        match tokio::time::timeout(self.opts.request_timeout, call).await {
            Ok(r) => r.map_err(|e| key.scrub_error(e)),
            Err(_) => Err(ProviderError::Timeout),
        }
    }

    /// Sends a streaming request and waits (bounded by the stream start timeout) for its
    /// headers. A non-2xx answer becomes its [`ProviderError`].
    pub async fn start_stream(
        &self,
        kind: ProviderKind,
        req: RequestBuilder,
        key: &ApiKey,
    ) -> Result<Response, ProviderError> {
        let call = async {
            let mut resp = req.send().await.map_err(|e| map_reqwest(&e, key))?;
            let status = resp.status();
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = read_body(&mut resp, MAX_ERROR_BODY, key, true).await?;
                return Err(error_for_status(kind, status, &headers, &body, key));
            }
            Ok(resp)
        };
        match tokio::time::timeout(self.opts.stream_start_timeout, call).await {
            Ok(r) => r.map_err(|e| key.scrub_error(e)),
            Err(_) => Err(ProviderError::Timeout),
        }
    }
}

/// Reads a body up to `max` bytes. Past that: the truncated prefix when `truncate` (error
/// bodies), else a `Malformed` error.
async fn read_body(
    resp: &mut Response,
    max: usize,
    key: &ApiKey,
    truncate: bool,
) -> Result<Vec<u8>, ProviderError> {
    if let Some(len) = resp.content_length()
        && len > max as u64
        && !truncate
    {
        return Err(too_large(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest(&e, key))? {
        if body.len() + chunk.len() > max {
            if truncate {
                body.extend_from_slice(&chunk[..max - body.len()]);
                return Ok(body);
            }
            return Err(too_large(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(max: usize) -> ProviderError {
    ProviderError::Malformed(format!("the response is larger than {max} bytes"))
}

/// The connection's API key, with what is needed to keep it out of errors.
#[derive(Clone)]
pub(crate) struct ApiKey {
    key: SecretString,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(********)")
    }
}

impl ApiKey {
    pub fn from_credentials(credentials: &Credentials) -> Result<Self, ProviderError> {
        match credentials {
            Credentials::ApiKey(key) if !key.expose_secret().trim().is_empty() => {
                Ok(Self { key: key.clone() })
            }
            Credentials::ApiKey(_) => Err(ProviderError::Unauthorized {
                status: 401,
                message: "the connection's API key is empty".into(),
            }),
            Credentials::Aws { .. } => Err(ProviderError::Unauthorized {
                status: 401,
                message: "this provider takes an API key, not AWS credentials".into(),
            }),
        }
    }

    /// `prefix` + the key as a header value, marked sensitive (never printed by `Debug`).
    pub fn header(&self, prefix: &str) -> Result<HeaderValue, ProviderError> {
        let value = zeroize::Zeroizing::new(format!("{prefix}{}", self.key.expose_secret()));
        let mut v = HeaderValue::from_str(&value).map_err(|_| ProviderError::Unauthorized {
            status: 401,
            message: "the connection's API key contains characters not allowed in a header".into(),
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    pub fn scrub(&self, text: &str) -> String {
        scrub_secret(text, self.key.expose_secret())
    }

    /// The error with the key removed from every message in it.
    pub fn scrub_error(&self, e: ProviderError) -> ProviderError {
        match e {
            ProviderError::RateLimited {
                retry_after_secs,
                message,
                limits,
            } => ProviderError::RateLimited {
                retry_after_secs,
                message: self.scrub(&message),
                limits,
            },
            ProviderError::Unauthorized { status, message } => ProviderError::Unauthorized {
                status,
                message: self.scrub(&message),
            },
            ProviderError::BadRequest {
                status,
                message,
                param,
                code,
            } => ProviderError::BadRequest {
                status,
                message: self.scrub(&message),
                param: param.map(|p| self.scrub(&p)),
                code: code.map(|c| self.scrub(&c)),
            },
            ProviderError::Upstream { status, message } => ProviderError::Upstream {
                status,
                message: self.scrub(&message),
            },
            ProviderError::Timeout => ProviderError::Timeout,
            ProviderError::Network(m) => ProviderError::Network(self.scrub(&m)),
            ProviderError::Malformed(m) => ProviderError::Malformed(self.scrub(&m)),
        }
    }
}

/// Removes `secret` and its obvious variants from `text`: the secret itself, its
/// percent-encoded form, any word that shares 8 consecutive characters with it (a prefix, a
/// suffix, a middle part), and masked echoes such as `sk-proj-****...abcd` that keep its first
/// or last characters. Each becomes `[REDACTED]`.
pub fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(secret, REDACTED);
    let encoded = zeroize::Zeroizing::new(percent_encode(secret));
    if encoded.as_str() != secret {
        out = out.replace(encoded.as_str(), REDACTED);
    }
    if secret.chars().count() < 8 {
        return out;
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || "-_.*~+/=%".contains(c);
    let mut result = String::with_capacity(out.len());
    let mut word_start: Option<usize> = None;
    for (i, c) in out.char_indices().chain(std::iter::once((out.len(), ' '))) {
        let boundary = i == out.len() || !is_word(c);
        match (word_start, boundary) {
            (None, false) => word_start = Some(i),
            (Some(start), true) => {
                let word = &out[start..i];
                result.push_str(if leaks(word, secret) { REDACTED } else { word });
                word_start = None;
                if i < out.len() {
                    result.push(c);
                }
            }
            (None, true) => {
                if i < out.len() {
                    result.push(c);
                }
            }
            (Some(_), false) => {}
        }
    }
    result
}

fn leaks(word: &str, secret: &str) -> bool {
    const WINDOW: usize = 8;
    if word.len() < WINDOW || word == REDACTED {
        return false;
    }
    let bytes = word.as_bytes();
    // Words are ASCII (see `is_word`), so byte windows are char windows.
    if bytes
        .windows(WINDOW)
        .any(|w| std::str::from_utf8(w).is_ok_and(|w| secret.contains(w)))
    {
        return true;
    }
    // A masked echo: stars plus the key's first or last characters.
    if word.contains("**") {
        let head: String = secret.chars().take(4).collect();
        let tail: String = {
            let n = secret.chars().count();
            secret.chars().skip(n.saturating_sub(4)).collect()
        };
        let trimmed = word.trim_end_matches(['.', ',']);
        return trimmed.ends_with(&tail) || trimmed.starts_with(&head);
    }
    false
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A transport failure as a [`ProviderError`] (no URL, the key scrubbed).
pub(crate) fn map_reqwest(e: &reqwest::Error, key: &ApiKey) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the response".to_owned()
    } else {
        "the request could not be sent".to_owned()
    };
    let mut source = std::error::Error::source(e);
    let mut depth = 0;
    while let Some(s) = source {
        if depth >= 4 {
            break;
        }
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
        depth += 1;
    }
    ProviderError::Network(truncate(&key.scrub(&msg)))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// What a provider's error body says, whatever its shape (`{"error":{...}}` of OpenAI, Groq,
/// Perplexity and Gemini, `{"type":"error","error":{...}}` of Anthropic, `{"detail":...}`,
/// `{"message":...}`, or plain text).
#[derive(Debug, Default)]
pub(crate) struct ErrorInfo {
    pub message: Option<String>,
    pub kind: Option<String>,
    pub param: Option<String>,
    pub code: Option<String>,
    pub json: Option<Value>,
}

pub(crate) fn parse_error_body(body: &[u8]) -> ErrorInfo {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let looks_like_html = text.starts_with('<');
        return ErrorInfo {
            message: (!text.is_empty() && !looks_like_html).then(|| text.to_owned()),
            ..ErrorInfo::default()
        };
    };
    // Some providers answer with a list holding one error object (Google, on some paths).
    let obj = match &json {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let err = obj.get("error").unwrap_or(&obj);
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let message = match err {
        Value::String(s) => Some(s.clone()),
        _ => text(err.get("message"))
            .or_else(|| text(obj.get("message")))
            .or_else(|| match obj.get("detail") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ (Value::Array(_) | Value::Object(_))) => Some(v.to_string()),
                _ => None,
            }),
    };
    ErrorInfo {
        message,
        kind: text(err.get("type")).or_else(|| text(err.get("status"))),
        param: text(err.get("param")),
        code: text(err.get("code")),
        json: Some(obj),
    }
}

/// A provider's non-2xx answer as a [`ProviderError`].
pub(crate) fn error_for_status(
    kind: ProviderKind,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    key: &ApiKey,
) -> ProviderError {
    let info = parse_error_body(body);
    let code = status.as_u16();
    let message = truncate(
        &key.scrub(
            info.message
                .as_deref()
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message")),
        ),
    );
    let scrubbed = |s: &Option<String>| s.as_deref().map(|s| truncate(&key.scrub(s)));
    match code {
        429 => {
            let mut limits = ratelimit::from_headers(kind, headers);
            let mut retry_after_secs = retry_after(headers);
            if kind == ProviderKind::Gemini
                && let Some(json) = &info.json
            {
                limits.extend(ratelimit::gemini_quota_failure(json));
                retry_after_secs = retry_after_secs.or_else(|| google_retry_delay(json));
            }
            ProviderError::RateLimited {
                retry_after_secs,
                message,
                limits,
            }
        }
        401 | 403 => ProviderError::Unauthorized {
            status: code,
            message,
        },
        400 if kind == ProviderKind::Gemini && google_key_rejected(&info) => {
            ProviderError::Unauthorized {
                status: code,
                message,
            }
        }
        408 => ProviderError::Timeout,
        400..=499 => ProviderError::BadRequest {
            status: code,
            message,
            param: scrubbed(&info.param),
            code: scrubbed(&info.code).or_else(|| scrubbed(&info.kind)),
        },
        _ => ProviderError::Upstream {
            status: code,
            message,
        },
    }
}

/// Gemini answers a bad key with 400 INVALID_ARGUMENT and an `ErrorInfo` reason
/// `API_KEY_INVALID` (or an expired-key message), not 401.
fn google_key_rejected(info: &ErrorInfo) -> bool {
    let reason = info
        .json
        .as_ref()
        .and_then(|j| j.pointer("/error/details"))
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details.iter().any(|d| {
                d.get("reason")
                    .and_then(Value::as_str)
                    .is_some_and(|r| r.starts_with("API_KEY_"))
            })
        });
    reason
        || info
            .message
            .as_deref()
            .is_some_and(|m| m.contains("API key not valid") || m.contains("API key expired"))
}

/// `google.rpc.RetryInfo.retryDelay` (`"37s"`, `"1.5s"`) in whole seconds, rounded up.
fn google_retry_delay(json: &Value) -> Option<u64> {
    json.pointer("/error/details")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("retryDelay")?.as_str())
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| f.ceil() as u64)
}

/// `retry-after-ms` (OpenAI), else `retry-after` as seconds or an HTTP date; whole seconds,
/// rounded up.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|s| s.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some((ms / 1000.0).ceil() as u64);
    }
    let v = get("retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs);
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(secs.ceil() as u64);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
            .unwrap_or(0),
    )
}

/// Parses a 2xx body as a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Result<Value, ProviderError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ProviderError::Malformed(
            "the response is JSON but not an object".into(),
        )),
        Err(e) => Err(ProviderError::Malformed(format!(
            "the response is not valid JSON ({} at line {} column {})",
            category(&e),
            e.line(),
            e.column()
        ))),
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

/// Parses one stream event's data as a JSON object.
pub(crate) fn event_json(data: &str) -> Result<Value, ProviderError> {
    json_object(data.as_bytes()).map_err(|e| match e {
        ProviderError::Malformed(m) => {
            ProviderError::Malformed(format!("a stream event: {}", m.trim_start_matches("the ")))
        }
        other => other,
    })
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// An OpenAI `usage` object.
pub(crate) fn usage_json(u: &Usage, reasoning_tokens: Option<u64>) -> Value {
    let mut v = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
    });
    if let Some(r) = reasoning_tokens
        && let Some(o) = v.as_object_mut()
    {
        o.insert(
            "completion_tokens_details".into(),
            json!({ "reasoning_tokens": r }),
        );
    }
    v
}

/// An OpenAI `chat.completion.chunk`.
pub(crate) fn chunk(id: &str, created: i64, model: &str, choices: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    })
}

/// One streamed choice.
pub(crate) fn delta_choice(index: u64, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "index": index,
        "delta": delta,
        "logprobs": null,
        "finish_reason": finish_reason,
    })
}

/// A non-negative integer field.
pub(crate) fn u64_field(o: &Value, name: &str) -> Option<u64> {
    o.get(name).and_then(Value::as_u64)
}

/// `BadRequest` for a request vmx cannot translate (never the provider's fault).
pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> ProviderError {
    ProviderError::BadRequest {
        status: 400,
        message: message.into(),
        param: param.map(str::to_owned),
        code: Some("invalid_request_error".into()),
    }
}

/// The path of `url` (for [`Probe::call`](vmx_domain::inference::Probe)).
pub(crate) fn url_path(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.to_owned())
}

/// The limits of a 2xx response.
pub(crate) fn limits(kind: ProviderKind, headers: &HeaderMap) -> Vec<DiscoveredLimit> {
    ratelimit::from_headers(kind, headers)
}

/// How long until `deadline`, at least zero.
pub(crate) fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

/// An error object that arrived inside a 2xx answer or a stream (`{"error": {...}}` of
/// OpenAI-compatible streams, Anthropic's `error` event, Gemini's stream errors), mapped by
/// its HTTP-like `code` or `status` where it has one, else by its type. The caller scrubs it.
pub(crate) fn error_from_event(err: &Value) -> ProviderError {
    let text = |name: &str| err.get(name).and_then(Value::as_str).map(str::to_owned);
    let message = truncate(
        &text("message")
            .or_else(|| err.as_str().map(str::to_owned))
            .unwrap_or_else(|| "the provider reported an error in the stream".into()),
    );
    let kind = text("type").or_else(|| text("status")).unwrap_or_default();
    let status = err
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c));
    let by_kind = |k: &str| kind.to_ascii_lowercase().contains(k);
    if status == Some(429) || by_kind("rate_limit") || kind == "RESOURCE_EXHAUSTED" {
        return ProviderError::RateLimited {
            retry_after_secs: None,
            message,
            limits: Vec::new(),
        };
    }
    if by_kind("overloaded") || kind == "UNAVAILABLE" {
        return ProviderError::Upstream {
            status: status.unwrap_or(529),
            message,
        };
    }
    if by_kind("authentication") || kind == "UNAUTHENTICATED" {
        return ProviderError::Unauthorized {
            status: status.unwrap_or(401),
            message,
        };
    }
    if by_kind("permission") || kind == "PERMISSION_DENIED" {
        return ProviderError::Unauthorized {
            status: status.unwrap_or(403),
            message,
        };
    }
    if by_kind("timeout") || kind == "DEADLINE_EXCEEDED" {
        return ProviderError::Timeout;
    }
    let bad_request = match kind.as_str() {
        "invalid_request_error" | "INVALID_ARGUMENT" | "FAILED_PRECONDITION" => Some(400),
        "not_found_error" | "NOT_FOUND" => Some(404),
        "request_too_large" => Some(413),
        _ => None,
    };
    match status.or(bad_request) {
        Some(s @ 400..=499) => ProviderError::BadRequest {
            status: s,
            message,
            param: text("param"),
            code: text("code").or_else(|| (!kind.is_empty()).then(|| kind.clone())),
        },
        s => ProviderError::Upstream {
            status: s.unwrap_or(500),
            message,
        },
    }
}
