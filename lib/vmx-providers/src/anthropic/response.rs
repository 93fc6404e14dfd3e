//! Messages API response -> OpenAI `chat.completion`.

use serde_json::{Value, json};
use vmx_domain::inference::{ProviderError, Usage};

use crate::wire::{
    AssistantMessage, choice, completion, new_id, tool_call, u64_field, usage_json_with_cache,
};

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

/// A Messages API response as an OpenAI `chat.completion`.
pub fn from_message(msg: &Value) -> Result<(Value, Option<Usage>), ProviderError> {
    let blocks = msg
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Malformed("the message has no content array".into()))?;
    let mut message = AssistantMessage::default();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => message
                .text
                .push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                message
                    .reasoning
                    .push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                message.tool_calls.push(tool_call(
                    b.get("id").cloned().unwrap_or(Value::Null),
                    b.get("name").cloned().unwrap_or(Value::Null),
                    input.to_string(),
                ));
            }
            _ => {} // server tool blocks, redacted thinking: no OpenAI equivalent
        }
    }
    let usage = msg.get("usage").map(usage_from_anthropic);
    let finish = msg
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or("stop", finish_reason);
    let mut body = completion(
        msg.get("id")
            .and_then(Value::as_str)
            .map_or_else(|| new_id("msg_"), str::to_owned),
        msg.get("model").cloned().unwrap_or(Value::Null),
        vec![choice(0, message.into_json(), finish)],
    );
    if let (Some(u), Some(o)) = (&usage, body.as_object_mut()) {
        o.insert("usage".into(), usage_json_with_cache(u));
    }
    Ok((body, usage))
}
