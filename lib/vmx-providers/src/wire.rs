//! Building the OpenAI Chat Completions wire format that every adapter answers in: ids and
//! timestamps, the `usage` object, a `chat.completion` with its assistant message, and the
//! `chat.completion.chunk`s of a stream ([`ChunkHead`]).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use vmx_domain::inference::Usage;

/// Seconds since the Unix epoch (the `created` field).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A fresh id: `prefix` and a random v4 UUID in hex.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A non-negative integer field.
pub fn u64_field(o: &Value, name: &str) -> Option<u64> {
    o.get(name).and_then(Value::as_u64)
}

/// An OpenAI `usage` object.
pub fn usage_json(u: &Usage, reasoning_tokens: Option<u64>) -> Value {
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

/// The OpenAI `usage` object with Anthropic's two cache counts kept alongside
/// (`cache_read_input_tokens`, `cache_creation_input_tokens`), for the Anthropic models.
pub fn usage_json_with_cache(u: &Usage) -> Value {
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

/// What a provider answered, gathered for one OpenAI assistant message.
#[derive(Debug, Default)]
pub struct AssistantMessage {
    pub text: String,
    pub reasoning: String,
    /// OpenAI `tool_calls` entries.
    pub tool_calls: Vec<Value>,
}

impl AssistantMessage {
    /// The OpenAI `message`: `content` (null when there are only tool calls), `refusal`,
    /// `tool_calls` and `reasoning_content` when there are some.
    pub fn into_json(self) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert(
            "content".into(),
            if self.text.is_empty() && !self.tool_calls.is_empty() {
                Value::Null
            } else {
                Value::String(self.text)
            },
        );
        message.insert("refusal".into(), Value::Null);
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(self.tool_calls));
        }
        if !self.reasoning.is_empty() {
            message.insert("reasoning_content".into(), Value::String(self.reasoning));
        }
        Value::Object(message)
    }
}

/// An OpenAI tool call (`arguments` is the JSON text of the input).
pub fn tool_call(id: Value, name: Value, arguments: String) -> Value {
    json!({
        "id": id,
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    })
}

/// One choice of a `chat.completion`.
pub fn choice(index: u64, message: Value, finish_reason: &str) -> Value {
    json!({
        "index": index,
        "message": message,
        "logprobs": null,
        "finish_reason": finish_reason,
    })
}

/// An OpenAI `chat.completion`, created now.
pub fn completion(id: String, model: Value, choices: Vec<Value>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now_unix(),
        "model": model,
        "choices": choices,
    })
}

/// An OpenAI `chat.completion.chunk`.
pub fn chunk(id: &str, created: i64, model: &str, choices: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    })
}

/// One streamed choice.
pub fn delta_choice(index: u64, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "index": index,
        "delta": delta,
        "logprobs": null,
        "finish_reason": finish_reason,
    })
}

/// What every chunk of one stream repeats: its id, model and creation time.
#[derive(Debug, Clone)]
pub struct ChunkHead {
    pub id: String,
    pub model: String,
    pub created: i64,
}

impl ChunkHead {
    /// A new stream's head: a fresh id with `id_prefix`, created now.
    pub fn new(id_prefix: &str, model: &str) -> Self {
        Self {
            id: new_id(id_prefix),
            model: model.to_owned(),
            created: now_unix(),
        }
    }

    /// A chunk with `choices`.
    pub fn chunk(&self, choices: Value) -> Value {
        chunk(&self.id, self.created, &self.model, choices)
    }

    /// A chunk with the one choice of index 0.
    pub fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.chunk(json!([delta_choice(0, delta, finish_reason)]))
    }

    /// The usage-only chunk: no choices, `usage`.
    pub fn usage(&self, usage: Value) -> Value {
        let mut c = self.chunk(json!([]));
        if let Some(o) = c.as_object_mut() {
            o.insert("usage".into(), usage);
        }
        c
    }
}
