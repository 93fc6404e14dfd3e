//! Converse response -> OpenAI `chat.completion`, usage, and the `vmx` extension object.

use aws_sdk_bedrockruntime::types as bt;
use serde_json::{Map, Value, json};
use vmx_domain::connection::AwsConfig;
use vmx_domain::inference::{ProviderError, Usage};
use vmx_providers::wire::{
    AssistantMessage, choice, completion, new_id, tool_call, usage_json_with_cache,
};

use crate::document::from_document;
use crate::guardrail::guardrail_json;

fn count(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Converse `usage`: `inputTokens` excludes cache reads and writes, as Anthropic's does, so
/// the prompt is their sum.
pub fn usage_from_converse(u: &bt::TokenUsage) -> Usage {
    let read = u.cache_read_input_tokens.map_or(0, count);
    let write = u.cache_write_input_tokens.map_or(0, count);
    Usage {
        prompt_tokens: count(u.input_tokens) + read + write,
        completion_tokens: count(u.output_tokens),
        cached_tokens: read,
        cache_creation_tokens: write,
    }
}

/// Converse's `stopReason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop: &bt::StopReason) -> &'static str {
    match stop.as_str() {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, malformed_*
    }
}

fn intervened(stop: &bt::StopReason) -> bool {
    matches!(stop, bt::StopReason::GuardrailIntervened)
}

/// The `vmx` extension object: the guardrail trace (and whether it intervened) when the
/// connection has a guardrail or a trace came back; extra model fields.
pub(super) fn vmx_extension(
    has_guardrail: bool,
    stop: Option<&bt::StopReason>,
    trace: Option<&bt::GuardrailTraceAssessment>,
    additional: Option<&aws_smithy_types::Document>,
) -> Option<Value> {
    let mut vmx = Map::new();
    let did_intervene = stop.is_some_and(intervened);
    if has_guardrail || trace.is_some() || did_intervene {
        let mut g = trace.map_or_else(Map::new, |t| match guardrail_json(t) {
            Value::Object(o) => o,
            _ => Map::new(),
        });
        g.insert(
            "action".into(),
            json!(if did_intervene { "INTERVENED" } else { "NONE" }),
        );
        vmx.insert("guardrail".into(), Value::Object(g));
    }
    if let Some(a) = additional {
        vmx.insert("additionalModelResponseFields".into(), from_document(a));
    }
    (!vmx.is_empty()).then_some(Value::Object(vmx))
}

/// A Converse response as an OpenAI `chat.completion`.
pub fn from_converse(
    model: &str,
    config: &AwsConfig,
    out: &aws_sdk_bedrockruntime::operation::converse::ConverseOutput,
) -> Result<(Value, Option<Usage>), ProviderError> {
    let Some(bt::ConverseOutput::Message(msg)) = &out.output else {
        return Err(ProviderError::Malformed(
            "the Converse response has no message".into(),
        ));
    };
    let mut message = AssistantMessage::default();
    for b in &msg.content {
        match b {
            bt::ContentBlock::Text(t) => message.text.push_str(t),
            bt::ContentBlock::ToolUse(t) => message.tool_calls.push(tool_call(
                json!(t.tool_use_id),
                json!(t.name),
                from_document(&t.input).to_string(),
            )),
            bt::ContentBlock::ReasoningContent(bt::ReasoningContentBlock::ReasoningText(r)) => {
                message.reasoning.push_str(&r.text);
            }
            _ => {}
        }
    }
    let usage = out.usage.as_ref().map(usage_from_converse);
    let mut body = completion(
        new_id("chatcmpl-"),
        json!(model),
        vec![choice(
            0,
            message.into_json(),
            finish_reason(&out.stop_reason),
        )],
    );
    if let Some(o) = body.as_object_mut() {
        if let Some(u) = &usage {
            o.insert("usage".into(), usage_json_with_cache(u));
        }
        if let Some(vmx) = vmx_extension(
            config.guardrail_config.is_some(),
            Some(&out.stop_reason),
            out.trace.as_ref().and_then(|t| t.guardrail.as_ref()),
            out.additional_model_response_fields.as_ref(),
        ) {
            o.insert("vmx".into(), vmx);
        }
    }
    Ok((body, usage))
}
