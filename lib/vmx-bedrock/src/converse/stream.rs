//! ConverseStream events -> OpenAI chunks.

use std::collections::{HashMap, VecDeque};

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types as bt;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use vmx_domain::inference::{ProviderError, StreamItem};
use vmx_providers::drive::{Flow, Out, Source, Translate};
use vmx_providers::wire::{ChunkHead, usage_json_with_cache};

use super::response::{finish_reason, usage_from_converse, vmx_extension};
use crate::errors::CallCtx;

/// A ConverseStream's events, with Bedrock's error mapping.
pub(super) struct ConverseReceiver {
    pub(super) rx: EventReceiver<bt::ConverseStreamOutput, ConverseStreamOutputError>,
    pub(super) ctx: CallCtx,
}

fn stream_variant(e: &ConverseStreamOutputError) -> Option<&'static str> {
    Some(match e {
        ConverseStreamOutputError::ThrottlingException(_) => "ThrottlingException",
        ConverseStreamOutputError::ValidationException(_) => "ValidationException",
        ConverseStreamOutputError::InternalServerException(_) => "InternalServerException",
        ConverseStreamOutputError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ConverseStreamOutputError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        _ => return None,
    })
}

impl Source for ConverseReceiver {
    type Event = bt::ConverseStreamOutput;

    fn read<'a>(
        &'a mut self,
        events: &'a mut VecDeque<Self::Event>,
    ) -> BoxFuture<'a, Result<bool, ProviderError>> {
        Box::pin(async move {
            let event = self
                .rx
                .recv()
                .await
                .map_err(|e| self.ctx.stream_error(&e, stream_variant))?;
            match event {
                Some(e) => {
                    events.push_back(e);
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }
}

/// ConverseStream events -> OpenAI chunks.
pub(super) struct ConverseStream {
    head: ChunkHead,
    has_guardrail: bool,
    /// Content block index -> OpenAI tool call index.
    tools: HashMap<i32, u64>,
    next_tool: u64,
    stop: Option<bt::StopReason>,
    finished: bool,
}

impl ConverseStream {
    pub(super) fn new(model: &str, has_guardrail: bool) -> Self {
        Self {
            head: ChunkHead::new("chatcmpl-", model),
            has_guardrail,
            tools: HashMap::new(),
            next_tool: 0,
            stop: None,
            finished: false,
        }
    }

    fn push(&self, out: &mut Out<StreamItem>, delta: Value, finish: Option<&str>) {
        out.push_back(Ok(StreamItem::Chunk(self.head.delta(delta, finish))));
    }

    fn finish(&mut self, out: &mut Out<StreamItem>, trace: Option<&bt::GuardrailTraceAssessment>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let reason = self.stop.as_ref().map_or("stop", finish_reason);
        let mut c = self.head.delta(json!({}), Some(reason));
        if let Some(vmx) = vmx_extension(self.has_guardrail, self.stop.as_ref(), trace, None)
            && let Some(o) = c.as_object_mut()
        {
            o.insert("vmx".into(), vmx);
        }
        out.push_back(Ok(StreamItem::Chunk(c)));
    }
}

impl Translate<bt::ConverseStreamOutput> for ConverseStream {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: bt::ConverseStreamOutput,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
        match event {
            bt::ConverseStreamOutput::MessageStart(_) => {
                self.push(out, json!({ "role": "assistant", "content": "" }), None);
            }
            bt::ConverseStreamOutput::ContentBlockStart(e) => {
                if let Some(bt::ContentBlockStart::ToolUse(t)) = &e.start {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(e.content_block_index, index);
                    let call = json!({
                        "index": index,
                        "id": t.tool_use_id,
                        "type": "function",
                        "function": { "name": t.name, "arguments": "" },
                    });
                    self.push(out, json!({ "tool_calls": [call] }), None);
                }
            }
            bt::ConverseStreamOutput::ContentBlockDelta(e) => match &e.delta {
                Some(bt::ContentBlockDelta::Text(t)) if !t.is_empty() => {
                    self.push(out, json!({ "content": t }), None);
                }
                Some(bt::ContentBlockDelta::ToolUse(d)) if !d.input.is_empty() => {
                    if let Some(&index) = self.tools.get(&e.content_block_index) {
                        let call = json!({ "index": index, "function": { "arguments": d.input } });
                        self.push(out, json!({ "tool_calls": [call] }), None);
                    }
                }
                Some(bt::ContentBlockDelta::ReasoningContent(
                    bt::ReasoningContentBlockDelta::Text(t),
                )) if !t.is_empty() => {
                    self.push(out, json!({ "reasoning_content": t }), None);
                }
                _ => {} // signatures, redacted reasoning, citations, images
            },
            bt::ConverseStreamOutput::MessageStop(e) => {
                self.stop = Some(e.stop_reason);
            }
            bt::ConverseStreamOutput::Metadata(m) => {
                let trace = m.trace.as_ref().and_then(|t| t.guardrail.as_ref());
                self.finish(out, trace);
                let usage = m
                    .usage
                    .as_ref()
                    .map(usage_from_converse)
                    .unwrap_or_default();
                let c = self.head.usage(usage_json_with_cache(&usage));
                out.push_back(Ok(StreamItem::Chunk(c)));
                out.push_back(Ok(StreamItem::Usage(usage)));
                return Ok(Flow::Done);
            }
            _ => {} // contentBlockStop, future event types
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        if self.stop.is_some() {
            self.finish(out, None);
            return Ok(());
        }
        Err(ProviderError::Malformed(
            "the ConverseStream ended before messageStop".into(),
        ))
    }
}
