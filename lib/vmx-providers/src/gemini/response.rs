//! `generateContent` response and `streamGenerateContent` events -> OpenAI completion and
//! chunks.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};
use vmx_domain::inference::{ProviderError, StreamItem, Usage};

use crate::drive::{Flow, Out, Translate};
use crate::errors::error_from_event;
use crate::http::event_json;
use crate::sse::SseEvent;
use crate::wire::{
    AssistantMessage, ChunkHead, choice, completion, delta_choice, new_id, u64_field, usage_json,
};

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

/// A candidate's index (its position when it has none) and parts.
fn candidate(pos: usize, cand: &Value) -> (u64, &[Value]) {
    let index = u64_field(cand, "index").unwrap_or(pos as u64);
    let parts = cand
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    (index, parts)
}

/// A candidate's parts. Tool calls are numbered from `next_index`.
fn convert_parts(parts: &[Value], next_index: &mut u64, with_index: bool) -> AssistantMessage {
    let mut c = AssistantMessage::default();
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
            c.tool_calls.push(Value::Object(call));
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
        let (index, parts) = candidate(pos, cand);
        let mut n = 0;
        let c = convert_parts(parts, &mut n, false);
        let finish = finish_reason(
            cand.get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP"),
            !c.tool_calls.is_empty(),
        );
        choices.push(choice(index, c.into_json(), finish));
    }
    if choices.is_empty() {
        // The prompt was blocked (promptFeedback.blockReason): no candidate at all.
        choices.push(choice(
            0,
            json!({ "role": "assistant", "content": null, "refusal": null }),
            "content_filter",
        ));
    }
    let usage = resp.get("usageMetadata").map(usage_from_gemini);
    let mut body = completion(
        resp.get("responseId")
            .and_then(Value::as_str)
            .map_or_else(|| new_id("chatcmpl-"), str::to_owned),
        json!(
            resp.get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or(model)
        ),
        choices,
    );
    if let (Some((u, thoughts)), Some(o)) = (&usage, body.as_object_mut()) {
        o.insert("usage".into(), usage_json(u, Some(*thoughts)));
    }
    Ok((body, usage.map(|(u, _)| u)))
}

/// `streamGenerateContent?alt=sse` events -> OpenAI chunks.
pub(super) struct GeminiStream {
    head: ChunkHead,
    usage: Option<(Usage, u64)>,
    /// Candidates that got their role chunk.
    started: HashSet<u64>,
    /// Tool calls so far, per candidate.
    calls: HashMap<u64, u64>,
    finished: bool,
}

impl GeminiStream {
    pub(super) fn new(model: &str) -> Self {
        Self {
            head: ChunkHead::new("chatcmpl-", model),
            usage: None,
            started: HashSet::new(),
            calls: HashMap::new(),
            finished: false,
        }
    }
}

impl Translate<SseEvent> for GeminiStream {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
        let v = event_json(&event.data)?;
        if let Some(err) = v.get("error") {
            return Err(error_from_event(err));
        }
        if let Some(id) = v.get("responseId").and_then(Value::as_str) {
            id.clone_into(&mut self.head.id);
        }
        if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
            m.clone_into(&mut self.head.model);
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
            let (index, parts) = candidate(pos, cand);
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
            if !c.tool_calls.is_empty() {
                delta.insert("tool_calls".into(), Value::Array(c.tool_calls));
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
            let c = self.head.chunk(Value::Array(choices));
            out.push_back(Ok(StreamItem::Chunk(c)));
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        if !self.finished {
            return Err(ProviderError::Malformed(
                "the stream ended before a finishReason".into(),
            ));
        }
        if let Some((usage, thoughts)) = self.usage.take() {
            let c = self.head.usage(usage_json(&usage, Some(thoughts)));
            out.push_back(Ok(StreamItem::Chunk(c)));
            out.push_back(Ok(StreamItem::Usage(usage)));
        }
        Ok(())
    }
}
