//! Messages API stream events -> OpenAI chunks ([`AnthropicStream`], also used by Bedrock's
//! InvokeModel stream, whose chunks carry the same events), and the Messages passthrough
//! ([`Passthrough`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use vmx_domain::inference::{ProviderError, StreamItem, Usage};

use super::{finish_reason, usage_from_anthropic};
use crate::drive::{Flow, Out, Translate};
use crate::errors::error_from_event;
use crate::http::event_json;
use crate::sse::SseEvent;
use crate::wire::{ChunkHead, u64_field, usage_json_with_cache};

/// Anthropic's cumulative usage counts over a stream (later counts replace earlier ones).
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageCounts {
    input_tokens: u64,
    usage: Usage,
}

impl UsageCounts {
    /// Takes the counts an event's `usage` carries.
    pub fn take(&mut self, u: &Value) {
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

    /// The usage so far: the prompt includes cache reads and cache writes.
    pub fn usage(&self) -> Usage {
        self.usage
    }
}

/// The OpenAI delta of a non-empty text or thinking block (`content_block_start`) or delta
/// (`content_block_delta`): `content` or `reasoning_content`.
fn text_delta(o: &Value) -> Option<Value> {
    let (field, to) = match o.get("type").and_then(Value::as_str)? {
        "text" | "text_delta" => ("text", "content"),
        "thinking" | "thinking_delta" => ("thinking", "reasoning_content"),
        _ => return None,
    };
    let text = o
        .get(field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())?;
    let mut delta = Map::new();
    delta.insert(to.into(), json!(text));
    Some(Value::Object(delta))
}

/// Messages API stream events -> OpenAI chunks.
pub struct AnthropicStream {
    head: ChunkHead,
    usage: UsageCounts,
    /// Content block index -> OpenAI tool call index.
    tools: HashMap<u64, u64>,
    next_tool: u64,
}

impl AnthropicStream {
    pub fn new(model: &str) -> Self {
        Self {
            head: ChunkHead::new("msg_", model),
            usage: UsageCounts::default(),
            tools: HashMap::new(),
            next_tool: 0,
        }
    }

    fn push(&self, out: &mut Out<StreamItem>, delta: Value, finish: Option<&str>) {
        out.push_back(Ok(StreamItem::Chunk(self.head.delta(delta, finish))));
    }

    /// One decoded event; an `error` event fails the stream.
    pub fn event(&mut self, v: &Value, out: &mut Out<StreamItem>) -> Result<Flow, ProviderError> {
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(id) = m.get("id").and_then(Value::as_str) {
                    id.clone_into(&mut self.head.id);
                }
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    model.clone_into(&mut self.head.model);
                }
                if let Some(u) = m.get("usage") {
                    self.usage.take(u);
                }
                self.push(out, json!({ "role": "assistant", "content": "" }), None);
            }
            "content_block_start" => {
                let index = u64_field(v, "index").unwrap_or(0);
                let block = v.get("content_block").unwrap_or(&Value::Null);
                if let Some(delta) = text_delta(block) {
                    self.push(out, delta, None);
                }
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
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
            }
            "content_block_delta" => {
                let index = u64_field(v, "index").unwrap_or(0);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(d) = text_delta(delta) {
                    self.push(out, d, None);
                }
                // Besides text, thinking and tool input: signature_delta, citations_delta.
                if delta.get("type").and_then(Value::as_str) == Some("input_json_delta")
                    && let Some(&tool_index) = self.tools.get(&index)
                    && let Some(args) = delta
                        .get("partial_json")
                        .and_then(Value::as_str)
                        .filter(|a| !a.is_empty())
                {
                    let call = json!({
                        "index": tool_index,
                        "function": { "arguments": args },
                    });
                    self.push(out, json!({ "tool_calls": [call] }), None);
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage.take(u);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.push(out, json!({}), Some(finish_reason(reason)));
                }
            }
            "message_stop" => {
                let usage = self.usage.usage();
                let c = self.head.usage(usage_json_with_cache(&usage));
                out.push_back(Ok(StreamItem::Chunk(c)));
                out.push_back(Ok(StreamItem::Usage(usage)));
                return Ok(Flow::Done);
            }
            "error" => {
                return Err(error_from_event(v.get("error").unwrap_or(&Value::Null)));
            }
            _ => {} // ping, content_block_stop, future event types
        }
        Ok(Flow::Continue)
    }

    /// The stream ended before `message_stop`.
    pub fn ended_early() -> ProviderError {
        ProviderError::Malformed("the stream ended before message_stop".into())
    }
}

impl Translate<SseEvent> for AnthropicStream {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
        self.event(&event_json(&event.data)?, out)
    }

    fn on_end(&mut self, _out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        Err(Self::ended_early())
    }
}

/// Passes Anthropic's events through unchanged (each as `{"event", "data"}`), tracking the
/// usage; `message_stop` ends the stream, an `error` event fails it.
#[derive(Default)]
pub struct Passthrough {
    usage: Option<Value>,
}

impl Passthrough {
    /// Handles one decoded event.
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

impl Translate<SseEvent> for Passthrough {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
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

    fn on_end(&mut self, _out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        Err(AnthropicStream::ended_early())
    }
}
