//! Prompt-token estimation.

use super::*;

/// A fast estimate of the tokens of `text`: one token per 4 bytes, rounded up. Close for
/// English with BPE tokenizers; the reservation is reconciled to the real count after the
/// call, so the estimate only has to be cheap and not wildly low.
pub fn estimate_text_tokens(text: &str) -> u64 {
    u64::try_from(text.len()).unwrap_or(u64::MAX).div_ceil(4)
}

/// The estimate of a chat prompt given as the text of each message: the text tokens, plus
/// [`MESSAGE_OVERHEAD_TOKENS`] per message, plus [`REPLY_PRIMING_TOKENS`].
pub fn estimate_prompt_tokens<'a>(messages: impl IntoIterator<Item = &'a str>) -> u64 {
    messages.into_iter().fold(REPLY_PRIMING_TOKENS, |acc, m| {
        acc.saturating_add(MESSAGE_OVERHEAD_TOKENS)
            .saturating_add(estimate_text_tokens(m))
    })
}

/// Fields of a request body that carry prompt content (OpenAI chat and responses,
/// Anthropic messages, Gemini).
const PROMPT_FIELDS: [&str; 9] = [
    "messages",
    "system",
    "tools",
    "functions",
    "input",
    "prompt",
    "instructions",
    "contents",
    "systemInstruction",
];

/// The estimate of a JSON request body: every string (and object key) under the prompt
/// fields, one token per 4 bytes; [`MESSAGE_OVERHEAD_TOKENS`] per element of `messages`
/// (or `contents`/`input` arrays); [`REPLY_PRIMING_TOKENS`] once. Images and other inline
/// attachments (data URLs, base64 sources, long base64 runs) count [`ATTACHMENT_TOKENS`]
/// each instead of their size.
pub fn estimate_request_tokens(body: &Value) -> u64 {
    match body {
        Value::Object(o) => estimate_body_tokens(o),
        _ => REPLY_PRIMING_TOKENS,
    }
}

/// [`estimate_request_tokens`] of a body already known to be an object.
pub fn estimate_body_tokens(o: &serde_json::Map<String, Value>) -> u64 {
    let mut total = REPLY_PRIMING_TOKENS;
    for field in PROMPT_FIELDS {
        let Some(v) = o.get(field) else { continue };
        if let (Value::Array(items), "messages" | "contents" | "input") = (v, field) {
            total = total.saturating_add(
                MESSAGE_OVERHEAD_TOKENS.saturating_mul(u64::try_from(items.len()).unwrap_or(0)),
            );
        }
        total = total.saturating_add(value_tokens(v));
    }
    total
}

fn value_tokens(v: &Value) -> u64 {
    match v {
        Value::String(s) => string_tokens(s),
        Value::Array(items) => items
            .iter()
            .fold(0u64, |acc, i| acc.saturating_add(value_tokens(i))),
        Value::Object(o) => {
            let base64_source = o.get("type").and_then(Value::as_str) == Some("base64");
            o.iter().fold(0u64, |acc, (k, v)| {
                let cost = if base64_source && k == "data" {
                    ATTACHMENT_TOKENS
                } else {
                    value_tokens(v)
                };
                acc.saturating_add(estimate_text_tokens(k))
                    .saturating_add(cost)
            })
        }
        Value::Number(_) | Value::Bool(_) => 1,
        Value::Null => 0,
    }
}

fn string_tokens(s: &str) -> u64 {
    let attachment = s.starts_with("data:")
        || (s.len() > 1024
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
    if attachment {
        ATTACHMENT_TOKENS
    } else {
        estimate_text_tokens(s)
    }
}
