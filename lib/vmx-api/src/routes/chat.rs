//! `POST /v1/chat/completions`: OpenAI Chat Completions through a connection.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use vmx_domain::inference::{ProviderError, StreamItem, Usage};
use vmx_domain::output::Route;

use crate::AppState;
use crate::accounting::{Encoded, Meter, StreamEncoder, sse_response};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::routes::{
    InferenceBody, admit_current, check_model_allowed, inference_request, parse_inference_body,
};

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Response, ApiError> {
    let (ip, body) = inference_request(&state, request).await?;
    handle(&state.gateway, body, ip, &caller).await
}

/// A validated chat request body: its connection and provider model, and the body itself.
pub struct ChatBody {
    pub connection: String,
    pub model: String,
    /// What the caller sent as `model`, echoed back in responses.
    pub alias: String,
    pub body: Map<String, Value>,
    pub stream: bool,
    pub include_usage: bool,
}

pub fn parse_chat_body(body: Value, max_messages: usize) -> Result<ChatBody, ApiError> {
    let example = "prod-openai/gpt-4o-mini";
    let InferenceBody {
        connection,
        model,
        alias,
        body,
        stream,
    } = parse_inference_body(body, max_messages, example, |i, msg| {
        let ok = msg
            .get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty());
        if ok {
            Ok(())
        } else {
            Err(ApiError::bad_request(
                format!("messages[{i}].role"),
                format!("messages[{i}].role: is required"),
            ))
        }
    })?;
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["max_tokens", "max_completion_tokens"] {
        if let Some(v) = body.get(key)
            && !v.is_null()
            && v.as_u64().is_none_or(|n| n == 0)
        {
            return Err(ApiError::bad_request(
                key,
                format!("{key}: must be a positive integer"),
            ));
        }
    }
    Ok(ChatBody {
        connection,
        model,
        alias,
        body,
        stream,
        include_usage,
    })
}

/// The OpenAI wire format of a completion stream: `data: <chunk>` events, `data: [DONE]`
/// at the end, `model` set to what the caller sent.
struct ChunkEncoder {
    include_usage: bool,
    alias: String,
    /// `alias` as a JSON string, written into every chunk sent as text.
    alias_json: Vec<u8>,
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

impl StreamEncoder for ChunkEncoder {
    type Item = StreamItem;

    fn encode(&mut self, item: StreamItem, meter: &mut Meter) -> Encoded {
        match item {
            StreamItem::Usage(u) => {
                meter.usage = Some(u);
                Encoded::Skip
            }
            StreamItem::Chunk(chunk) => self
                .chunk(chunk, meter)
                .map_or(Encoded::Skip, Encoded::Send),
            StreamItem::ChunkJson(text) => {
                let sent = match self.chunk_text(&text, meter) {
                    Some(sent) => sent,
                    // Not the plain shape the fast path reads: the tree path decides.
                    None => match serde_json::from_str::<Value>(&text) {
                        Ok(chunk) => self.chunk(chunk, meter),
                        Err(_) => None,
                    },
                };
                sent.map_or(Encoded::Skip, Encoded::Send)
            }
        }
    }

    fn error(&self, body: &Value) -> Bytes {
        sse(&body.to_string())
    }

    fn end(&self) -> Result<Bytes, ProviderError> {
        Ok(Bytes::from_static(b"data: [DONE]\n\n"))
    }
}

impl ChunkEncoder {
    fn new(include_usage: bool, alias: String) -> Self {
        // A string always serializes.
        let alias_json = serde_json::to_vec(&alias).unwrap_or_default();
        Self {
            include_usage,
            alias,
            alias_json,
        }
    }

    /// Rewrites one chunk for the caller; `None` when nothing is left to send.
    fn chunk(&self, mut chunk: Value, meter: &mut Meter) -> Option<Bytes> {
        let Value::Object(o) = &mut chunk else {
            return None;
        };
        if let Some(u) = o.get("usage").filter(|u| !u.is_null()) {
            if meter.usage.is_none() {
                meter.usage = usage_of(u);
            }
            if !self.include_usage {
                o.remove("usage");
            }
        }
        let empty_choices = o
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty_choices && !o.contains_key("usage") {
            return None;
        }
        for choice in o
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(delta) = choice.get("delta") {
                let n = delta
                    .get("content")
                    .and_then(Value::as_str)
                    .map_or(0, str::len)
                    + delta.get("tool_calls").map_or(0, |t| t.to_string().len());
                if n > 0 {
                    meter.produced(n);
                }
            }
        }
        o.insert("model".to_owned(), Value::String(self.alias.clone()));
        Some(sse(&chunk.to_string()))
    }
}

/// The top-level fields of a chunk, each value left as its JSON text, in their order.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(kv) = m.next_entry::<Cow<'a, str>, &'a RawValue>()? {
                    fields.push(kv);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ChoiceDelta<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

impl ChunkEncoder {
    /// [`ChunkEncoder::chunk`] on a chunk's JSON text, field by field without building its
    /// tree: the same decisions and the same fields out (in the provider's order). `None`
    /// with nothing done when the text is not that plain shape (an object without repeated
    /// keys whose `choices`, if an array, holds objects whose `delta`, if present, is an
    /// object).
    fn chunk_text(&self, text: &str, meter: &mut Meter) -> Option<Option<Bytes>> {
        // A value spread over lines (a provider's pretty-printed JSON) would break the
        // event's one `data:` line: the tree path writes it compact.
        if text.contains(['\n', '\r']) {
            return None;
        }
        let Fields(fields) = serde_json::from_str(text).ok()?;
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let repeated = fields
            .iter()
            .enumerate()
            .any(|(i, (k, _))| fields[..i].iter().any(|(seen, _)| seen == k));
        if repeated {
            return None;
        }
        // `choices`: an array (of objects with an object or null `delta`), or anything
        // else, which counts as none.
        let choices = match field("choices") {
            Some(raw) if raw.get().starts_with('[') => {
                Some(serde_json::from_str::<Vec<ChoiceDelta<'_>>>(raw.get()).ok()?)
            }
            _ => None,
        };
        let usage = field("usage").filter(|u| u.get() != "null");
        let mut produced = 0;
        for delta in choices.iter().flatten().filter_map(|c| c.delta.as_ref()) {
            produced += delta
                .content
                .and_then(|c| serde_json::from_str::<Cow<'_, str>>(c.get()).ok())
                .map_or(0, |c| c.len());
            if let Some(t) = delta.tool_calls {
                // The length of its compact text, as the tree path measures it.
                produced +=
                    serde_json::from_str::<Value>(t.get()).map_or(0, |t| t.to_string().len());
            }
        }
        // Decided: from here on the fast path answers.
        if let Some(u) = usage
            && meter.usage.is_none()
        {
            meter.usage = serde_json::from_str::<Value>(u.get())
                .ok()
                .as_ref()
                .and_then(usage_of);
        }
        let drop_usage = usage.is_some() && !self.include_usage;
        let keeps_usage = field("usage").is_some() && !drop_usage;
        if choices.as_ref().is_none_or(Vec::is_empty) && !keeps_usage {
            return Some(None);
        }
        if produced > 0 {
            meter.produced(produced);
        }
        let alias = &self.alias_json;
        let mut out = Vec::with_capacity(text.len() + alias.len() + 16);
        out.extend_from_slice(b"data: {");
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            // A string always serializes.
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            out.extend_from_slice(value);
        };
        let mut model_set = false;
        for (k, v) in &fields {
            match k.as_ref() {
                "usage" if drop_usage => {}
                "model" => {
                    put(&mut out, k, alias);
                    model_set = true;
                }
                _ => put(&mut out, k, v.get().as_bytes()),
            }
        }
        if !model_set {
            put(&mut out, "model", alias);
        }
        out.extend_from_slice(b"}\n\n");
        Some(Some(Bytes::from(out)))
    }
}

/// OpenAI `usage` JSON -> [`Usage`].
pub fn usage_of(u: &Value) -> Option<Usage> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    Some(Usage {
        prompt_tokens: n("prompt_tokens")?,
        completion_tokens: n("completion_tokens").unwrap_or(0),
        cached_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_creation_tokens: 0,
    })
}

/// Parse, route, check, admit, then run.
async fn handle(
    gateway: &Arc<Gateway>,
    body: Value,
    source_ip: IpAddr,
    caller: &Caller,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req = parse_chat_body(body, gateway.options.max_messages)?;
    let mut body = req.body;
    let (resolved, provider, admitted, accounting) = admit_current(
        gateway,
        caller,
        source_ip,
        &req.connection,
        &req.model,
        Route::ChatCompletions,
        &mut body,
        started,
        |resolved| {
            check_model_allowed(resolved, &req.model)?;
            // Fail fast, before charging capacity, when no adapter serves the provider.
            gateway.provider(resolved.connection.provider)
        },
    )
    .await?;
    let request = Gateway::provider_request(&req.model, body);
    let credentials = &resolved.credentials;
    if !req.stream {
        return match provider.chat(credentials, request).await {
            Ok(done) => Ok(accounting
                .respond(&admitted, req.alias, done.body, done.usage, done.limits)
                .await),
            Err(e) => Err(accounting.refused(&admitted, e).await),
        };
    }
    // Streaming: SSE out, usage accounted when it ends.
    let started = match provider.chat_stream(credentials, request).await {
        Ok(s) => s,
        Err(e) => return Err(accounting.refused(&admitted, e).await),
    };
    let encoder = ChunkEncoder::new(req.include_usage, req.alias);
    let (items, limits) = (started.items, started.limits);
    Ok(sse_response(items, limits, &admitted, accounting, encoder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::Meter;

    /// Encodes `text` both ways (as its text, and as the tree the other providers send) and
    /// checks that the caller gets the same JSON and the meter the same figures; returns
    /// the JSON sent, if any.
    fn same_both_ways(include_usage: bool, text: &str) -> Option<Value> {
        let mut enc = ChunkEncoder::new(include_usage, "prod/gpt-4o-mini".into());
        let (mut fast, mut tree) = (Meter::new(), Meter::new());
        let sent_fast = match enc.encode(StreamItem::ChunkJson(text.to_owned()), &mut fast) {
            Encoded::Send(b) => Some(b),
            _ => None,
        };
        let chunk: Value = serde_json::from_str(text).unwrap();
        let sent_tree = match enc.encode(StreamItem::Chunk(chunk), &mut tree) {
            Encoded::Send(b) => Some(b),
            _ => None,
        };
        let parse = |b: &Bytes| -> Value {
            let s = std::str::from_utf8(b).unwrap();
            let data = s
                .strip_prefix("data: ")
                .unwrap()
                .strip_suffix("\n\n")
                .unwrap();
            assert!(!data.contains('\n'), "{s}");
            serde_json::from_str(data).unwrap()
        };
        let (a, b) = (sent_fast.as_ref().map(parse), sent_tree.as_ref().map(parse));
        assert_eq!(a, b, "{text}");
        assert_eq!(fast.usage, tree.usage, "{text}");
        assert_eq!(fast.streamed_bytes(), tree.streamed_bytes(), "{text}");
        a
    }

    #[test]
    fn a_chunk_as_text_is_sent_as_its_tree_would_be() {
        let content = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"H\u00e9llo \"x\""},"finish_reason":null}]}"#;
        let sent = same_both_ways(false, content).unwrap();
        assert_eq!(sent["model"], "prod/gpt-4o-mini");
        assert_eq!(sent["choices"][0]["delta"]["content"], "Héllo \"x\"");
        // The usage chunk: sent only when the caller asked for usage; counted either way.
        let usage = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        assert!(same_both_ways(false, usage).is_none());
        let sent = same_both_ways(true, usage).unwrap();
        assert_eq!(sent["usage"]["prompt_tokens"], 7);
        // Usage on a content chunk (Groq's x_groq aside, some providers do): the content
        // goes, the usage only when asked.
        let both = r#"{"model":"m","choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        assert!(same_both_ways(false, both).unwrap().get("usage").is_none());
        assert!(same_both_ways(true, both).unwrap()["usage"].is_object());
        // Tool calls, an escaped key, no model, a null usage, no choices at all.
        for text in [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\": 1}"}}]}}]}"#,
            r#"{"model":"m","choices":[{"delta":{"content":"x"}}],"k\"ey":1}"#,
            r#"{"model":"m","choices":[],"usage":null}"#,
            r#"{"model":"m","choices":[{"delta":null,"finish_reason":"stop"}]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","choices":"not an array"}"#,
        ] {
            same_both_ways(false, text);
            same_both_ways(true, text);
        }
        // Shapes the fast path leaves to the tree path, with the same result.
        for text in [
            "{\"model\":\"m\",\n\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
            r#"{"model":"m","model":"n","choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"model":"m","choices":[1,{"delta":{"content":"a"}}]}"#,
            r#"{"model":"m","choices":[{"delta":"text"}]}"#,
        ] {
            let enc = ChunkEncoder::new(false, "a".into());
            assert!(enc.chunk_text(text, &mut Meter::new()).is_none(), "{text}");
            same_both_ways(false, text);
        }
    }
}
