//! InvokeModelWithResponseStream: each chunk is one Anthropic event, passed through for the
//! Messages API ([`Passthrough`]) or translated to OpenAI chunks ([`AnthropicChunks`]).

use std::collections::VecDeque;

use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types as bt;
use aws_sdk_bedrockruntime::types::error::ResponseStreamError;
use futures_util::future::BoxFuture;
use serde_json::Value;
use vmx_domain::inference::{MessagesEvent, ProviderError, StreamItem};
use vmx_providers::anthropic::{AnthropicStream, UsageCounts};
use vmx_providers::drive::{Flow, Out, Source, Translate};

use crate::errors::CallCtx;

/// InvokeModelWithResponseStream chunks, each decoded to its Anthropic event JSON.
pub(super) struct InvokeReceiver {
    rx: EventReceiver<bt::ResponseStream, ResponseStreamError>,
    ctx: CallCtx,
}

impl InvokeReceiver {
    pub(super) fn new(
        rx: EventReceiver<bt::ResponseStream, ResponseStreamError>,
        ctx: CallCtx,
    ) -> Self {
        Self { rx, ctx }
    }
}

fn stream_variant(e: &ResponseStreamError) -> Option<&'static str> {
    Some(match e {
        ResponseStreamError::ThrottlingException(_) => "ThrottlingException",
        ResponseStreamError::ValidationException(_) => "ValidationException",
        ResponseStreamError::InternalServerException(_) => "InternalServerException",
        ResponseStreamError::ModelStreamErrorException(_) => "ModelStreamErrorException",
        ResponseStreamError::ModelTimeoutException(_) => "ModelTimeoutException",
        ResponseStreamError::ServiceUnavailableException(_) => "ServiceUnavailableException",
        _ => return None,
    })
}

impl Source for InvokeReceiver {
    type Event = Value;

    fn read<'a>(
        &'a mut self,
        events: &'a mut VecDeque<Value>,
    ) -> BoxFuture<'a, Result<bool, ProviderError>> {
        Box::pin(async move {
            let event = self
                .rx
                .recv()
                .await
                .map_err(|e| self.ctx.stream_error(&e, stream_variant))?;
            let Some(event) = event else {
                return Ok(false);
            };
            // A future event type, or a chunk without bytes, yields nothing.
            if let bt::ResponseStream::Chunk(part) = event
                && let Some(bytes) = part.bytes
            {
                match serde_json::from_slice::<Value>(bytes.as_ref()) {
                    Ok(v @ Value::Object(_)) => events.push_back(v),
                    _ => {
                        return Err(ProviderError::Malformed(
                            "a stream chunk is not an Anthropic event (JSON object)".into(),
                        ));
                    }
                }
            }
            Ok(true)
        })
    }
}

fn event_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// An Anthropic `error` event inside a stream.
fn stream_event_error(v: &Value) -> ProviderError {
    let err = v.get("error").unwrap_or(&Value::Null);
    let kind = err.get("type").and_then(Value::as_str).unwrap_or_default();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the model reported an error in the stream")
        .chars()
        .take(500)
        .collect::<String>();
    match kind {
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after_secs: None,
            message,
            limits: Vec::new(),
        },
        "overloaded_error" => ProviderError::Upstream {
            status: 503,
            message,
        },
        _ => ProviderError::Upstream {
            status: 502,
            message,
        },
    }
}

/// Events passed through for the Messages API, with the usage right after `message_delta`
/// (once it is known, and before `message_stop`, after which a consumer may stop reading);
/// an `error` event fails the stream.
#[derive(Default)]
pub(super) struct Passthrough {
    usage: UsageCounts,
    stopped: bool,
}

impl Translate<Value> for Passthrough {
    type Item = MessagesEvent;

    fn on_event(&mut self, v: Value, out: &mut Out<MessagesEvent>) -> Result<Flow, ProviderError> {
        let name = event_type(&v).to_owned();
        match name.as_str() {
            "error" => return Err(stream_event_error(&v)),
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage.take(u);
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.usage.take(u);
                }
            }
            _ => {}
        }
        let done = name == "message_stop";
        let after_delta = name == "message_delta";
        out.push_back(Ok(MessagesEvent::Event { name, data: v }));
        if after_delta {
            out.push_back(Ok(MessagesEvent::Usage(self.usage.usage())));
        }
        if done {
            self.stopped = true;
            return Ok(Flow::Done);
        }
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, _out: &mut Out<MessagesEvent>) -> Result<(), ProviderError> {
        if self.stopped {
            return Ok(());
        }
        Err(AnthropicStream::ended_early())
    }
}

/// Anthropic events -> OpenAI chunks (the chat completions path): the anthropic provider's
/// translation, with Bedrock's mapping of an `error` event.
pub(super) struct AnthropicChunks(AnthropicStream);

impl AnthropicChunks {
    pub(super) fn new(model: &str) -> Self {
        Self(AnthropicStream::new(model))
    }
}

impl Translate<Value> for AnthropicChunks {
    type Item = StreamItem;

    fn on_event(&mut self, v: Value, out: &mut Out<StreamItem>) -> Result<Flow, ProviderError> {
        if event_type(&v) == "error" {
            return Err(stream_event_error(&v));
        }
        self.0.event(&v, out)
    }

    fn on_end(&mut self, _out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        Err(AnthropicStream::ended_early())
    }
}
