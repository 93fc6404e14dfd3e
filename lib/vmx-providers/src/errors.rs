//! Provider failures as [`ProviderError`]s: a non-2xx answer by its status and body
//! (whatever the body's shape), `Retry-After`, Google's key and quota details, and an error
//! object that arrives inside a 2xx answer or a stream.

use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use vmx_domain::inference::ProviderError;
use vmx_domain::provider::ProviderKind;

use crate::key::ApiKey;
use crate::ratelimit;

/// Longest provider message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 1000;

pub(crate) fn truncate(s: &str) -> String {
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
