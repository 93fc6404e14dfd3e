//! The OpenAI-compatible client shared by [`openai`](crate::openai), [`groq`](crate::groq)
//! and [`perplexity`](crate::perplexity): `POST {base}/chat/completions` with Bearer auth.
//!
//! The caller's body goes out as it came (with `model` set to the provider model id), so every
//! field vmx does not model (tools, `response_format`, `logprobs`, `seed`, Perplexity's search
//! options...) reaches the provider unchanged, and every field the provider adds (Perplexity's
//! `citations` and `search_results`, Groq's `x_groq`) reaches the caller unchanged. The only
//! changes: `stream` is set to what was asked (`chat` or `chat_stream`), and a stream asks
//! for usage (`stream_options.include_usage: true`) where the provider supports it, so the
//! gateway always learns the real token counts; the gateway removes the usage chunk again
//! if the caller did not ask for it.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{
    ChatCompletion, ChatProvider, ChatRequest, ChatStream, Credentials, Probe, ProviderError,
    StreamItem, Usage,
};
use vmx_domain::provider::ProviderKind;

use crate::drive::{Flow, Out, Translate};
use crate::errors::error_from_event;
use crate::http::{Http, event_json, json_object, url_path};
use crate::key::ApiKey;
use crate::sse::SseEvent;
use crate::wire::{chunk, now_unix, u64_field};

/// How one OpenAI-compatible provider differs from OpenAI.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub kind: ProviderKind,
    /// Send `stream_options: {include_usage: true}` on streams. When `false`, the caller's
    /// `stream_options` is removed too (the provider does not know the field).
    pub request_stream_usage: bool,
    /// A stream that ends after every choice has a `finish_reason`, without `data: [DONE]`,
    /// is complete (some providers omit `[DONE]`). When `false`, a missing `[DONE]` is a cut
    /// stream.
    pub done_optional: bool,
    /// Usage may also come in `x_groq.usage` on the last content chunk (Groq).
    pub x_groq_usage: bool,
    /// The cheapest call that proves the key works.
    pub probe: ProbeCall,
    /// Rate-limit headers to limits.
    pub limits: fn(&HeaderMap) -> Vec<DiscoveredLimit>,
}

#[derive(Debug, Clone, Copy)]
pub enum ProbeCall {
    /// `GET {base}/models`.
    ListModels,
    /// The smallest completion (`max_tokens: 1`) with the given model, else this default.
    SmallestCompletion { default_model: &'static str },
}

/// An OpenAI-compatible provider.
pub struct CompatProvider {
    http: Http,
    base: String,
    /// `{base}/chat/completions`, parsed once (`None`: the base is not a URL, and each call
    /// reports that as before).
    chat_url: Option<reqwest::Url>,
    flavor: Flavor,
}

impl CompatProvider {
    pub(crate) fn new(http: Http, base: &str, flavor: Flavor) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        let chat_url = reqwest::Url::parse(&format!("{base}/chat/completions")).ok();
        Self {
            http,
            base,
            chat_url,
            flavor,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn post(
        &self,
        key: &ApiKey,
        body: &Map<String, Value>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let req = match &self.chat_url {
            Some(url) => self.http.client.post(url.clone()),
            None => self.http.client.post(self.url("chat/completions")),
        };
        Ok(req.header(AUTHORIZATION, key.header("Bearer ")?).json(body))
    }

    fn body(&self, request: ChatRequest, stream: bool) -> Map<String, Value> {
        let mut body = request.body;
        body.insert("model".into(), Value::String(request.model));
        if stream {
            body.insert("stream".into(), Value::Bool(true));
            if self.flavor.request_stream_usage {
                let mut opts = match body.remove("stream_options") {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                opts.insert("include_usage".into(), Value::Bool(true));
                body.insert("stream_options".into(), Value::Object(opts));
            } else {
                body.remove("stream_options");
            }
        } else {
            body.remove("stream");
            body.remove("stream_options");
        }
        body
    }
}

#[async_trait]
impl ChatProvider for CompatProvider {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = self.body(request, false);
        let req = self
            .post(&key, &body)?
            .timeout(self.http.opts.request_timeout);
        let (headers, bytes) = self.http.execute(self.flavor.kind, req, &key).await?;
        let body = json_object(&bytes)?;
        if body.get("choices").is_none()
            && let Some(err) = body.get("error")
        {
            return Err(key.scrub_error(error_from_event(err)));
        }
        let usage = body.get("usage").and_then(usage_from_openai);
        Ok(ChatCompletion {
            body,
            usage,
            limits: (self.flavor.limits)(&headers),
        })
    }

    async fn chat_stream(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatStream, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let body = self.body(request, true);
        let req = self.post(&key, &body)?;
        let resp = self.http.start_stream(self.flavor.kind, req, &key).await?;
        let limits = (self.flavor.limits)(resp.headers());
        let translator = CompatStream::new(self.flavor);
        Ok(self.http.chat_stream(resp, limits, translator, key))
    }

    async fn probe(
        &self,
        credentials: &Credentials,
        model: Option<&str>,
    ) -> Result<Probe, ProviderError> {
        let key = ApiKey::from_credentials(credentials)?;
        let (req, call) = match self.flavor.probe {
            ProbeCall::ListModels => {
                let url = self.url("models");
                let call = format!("GET {}", url_path(&url));
                let req = self
                    .http
                    .client
                    .get(url)
                    .header(AUTHORIZATION, key.header("Bearer ")?);
                (req, call)
            }
            ProbeCall::SmallestCompletion { default_model } => {
                let url = self.url("chat/completions");
                let call = format!("POST {}", url_path(&url));
                let body = json!({
                    "model": model.unwrap_or(default_model),
                    "messages": [{ "role": "user", "content": "ping" }],
                    "max_tokens": 1,
                });
                let req = self
                    .http
                    .client
                    .post(url)
                    .header(AUTHORIZATION, key.header("Bearer ")?)
                    .json(&body);
                (req, call)
            }
        };
        let req = req.timeout(self.http.opts.request_timeout);
        let (headers, _) = self.http.execute(self.flavor.kind, req, &key).await?;
        Ok(Probe {
            limits: (self.flavor.limits)(&headers),
            call,
        })
    }
}

/// An OpenAI `usage` object as [`Usage`] (`prompt_tokens` includes the cached ones).
pub fn usage_from_openai(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let prompt = u64_field(u, "prompt_tokens");
    let completion = u64_field(u, "completion_tokens");
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_creation_tokens: 0,
    })
}

/// Passes chunks through, learning the usage from them.
struct CompatStream {
    flavor: Flavor,
    usage: Option<(Usage, Value)>,
    usage_chunk_seen: bool,
    finished: bool,
    id: String,
    model: String,
    created: i64,
}

impl CompatStream {
    fn new(flavor: Flavor) -> Self {
        Self {
            flavor,
            usage: None,
            usage_chunk_seen: false,
            finished: false,
            id: String::new(),
            model: String::new(),
            created: now_unix(),
        }
    }

    /// The end: the usage chunk (made up from what the chunks carried if the provider sent
    /// none of its own) and the usage.
    fn finish(&mut self, out: &mut Out<StreamItem>) {
        if let Some((usage, raw)) = self.usage.take() {
            if !self.usage_chunk_seen {
                let mut c = chunk(&self.id, self.created, &self.model, json!([]));
                if let Some(o) = c.as_object_mut() {
                    o.insert("usage".into(), raw);
                }
                out.push_back(Ok(StreamItem::Chunk(c)));
            }
            out.push_back(Ok(StreamItem::Usage(usage)));
        }
    }
}

/// The fields of a chunk the stream reads, each left as its JSON text.
#[derive(Deserialize)]
struct ChunkFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    x_groq: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceFinish<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

impl CompatStream {
    /// Reads what the stream keeps from a chunk without building its `Value` tree, so that
    /// the chunk can go on as its text ([`StreamItem::ChunkJson`]). `false` (nothing read)
    /// for anything but an object whose `choices`, if present, is an array of objects, and
    /// for an `error` event: the `Value` path handles those, errors included.
    fn read_fields(&mut self, data: &str) -> bool {
        let Ok(f) = serde_json::from_str::<ChunkFields<'_>>(data) else {
            return false;
        };
        if f.error.is_some() || !data.starts_with('{') {
            return false;
        }
        let choices = match f.choices {
            None => None,
            Some(raw) => match serde_json::from_str::<Vec<ChoiceFinish<'_>>>(raw.get()) {
                Ok(c) => Some(c),
                Err(_) => return false,
            },
        };
        let text = |raw: Option<&RawValue>| {
            raw.and_then(|r| serde_json::from_str::<std::borrow::Cow<'_, str>>(r.get()).ok())
        };
        if let Some(id) = text(f.id) {
            id.as_ref().clone_into(&mut self.id);
        }
        if let Some(model) = text(f.model) {
            model.as_ref().clone_into(&mut self.model);
        }
        if let Some(created) = f.created.and_then(|r| serde_json::from_str(r.get()).ok()) {
            self.created = created;
        }
        let no_choices = choices.as_ref().is_none_or(Vec::is_empty);
        // Only the chunks carrying usage build a (small) tree: `usage` or `x_groq`.
        let tree =
            |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        if let Some(raw) = tree(f.usage)
            && let Some(u) = usage_from_openai(&raw)
        {
            self.usage = Some((u, raw));
            self.usage_chunk_seen |= no_choices;
        } else if self.flavor.x_groq_usage
            && let Some(raw) = tree(f.x_groq).as_ref().and_then(|x| x.get("usage"))
            && let Some(u) = usage_from_openai(raw)
        {
            self.usage = Some((u, raw.clone()));
        }
        if let Some(choices) = &choices
            && !choices.is_empty()
        {
            self.finished = choices
                .iter()
                // A `null` finish reason reads as `None`.
                .all(|c| c.finish_reason.is_some());
        }
        true
    }
}

impl Translate<SseEvent> for CompatStream {
    type Item = StreamItem;

    fn on_event(
        &mut self,
        event: SseEvent,
        out: &mut Out<StreamItem>,
    ) -> Result<Flow, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.finish(out);
            return Ok(Flow::Done);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        if self.read_fields(data) {
            out.push_back(Ok(StreamItem::ChunkJson(event.data)));
            return Ok(Flow::Continue);
        }
        let v = event_json(data)?;
        let choices = v.get("choices").and_then(Value::as_array);
        if choices.is_none()
            && let Some(err) = v.get("error")
        {
            return Err(error_from_event(err));
        }
        if let Some(id) = v.get("id").and_then(Value::as_str) {
            id.clone_into(&mut self.id);
        }
        if let Some(model) = v.get("model").and_then(Value::as_str) {
            model.clone_into(&mut self.model);
        }
        if let Some(created) = v.get("created").and_then(Value::as_i64) {
            self.created = created;
        }
        let no_choices = choices.is_none_or(|c| c.is_empty());
        if let Some(raw) = v.get("usage")
            && let Some(u) = usage_from_openai(raw)
        {
            self.usage = Some((u, raw.clone()));
            self.usage_chunk_seen |= no_choices;
        } else if self.flavor.x_groq_usage
            && let Some(raw) = v.pointer("/x_groq/usage")
            && let Some(u) = usage_from_openai(raw)
        {
            self.usage = Some((u, raw.clone()));
        }
        if let Some(choices) = choices
            && !choices.is_empty()
        {
            self.finished = choices
                .iter()
                .all(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
        }
        out.push_back(Ok(StreamItem::Chunk(v)));
        Ok(Flow::Continue)
    }

    fn on_end(&mut self, out: &mut Out<StreamItem>) -> Result<(), ProviderError> {
        if self.flavor.done_optional && self.finished {
            self.finish(out);
            return Ok(());
        }
        Err(ProviderError::Malformed(
            "the stream ended before `data: [DONE]`".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn event(data: &str) -> SseEvent {
        SseEvent {
            data: data.to_owned(),
            ..SseEvent::default()
        }
    }

    /// Runs `events` through a stream of `flavor`: every item, and whether each chunk went
    /// on as its text.
    fn run(flavor: Flavor, events: &[&str]) -> (Vec<StreamItem>, Vec<bool>) {
        let mut s = CompatStream::new(flavor);
        let mut out = Out::new();
        for e in events {
            if matches!(s.on_event(event(e), &mut out).unwrap(), Flow::Done) {
                break;
            }
        }
        let items: Vec<StreamItem> = out.into_iter().map(Result::unwrap).collect();
        let text = items
            .iter()
            .filter(|i| !matches!(i, StreamItem::Usage(_)))
            .map(|i| matches!(i, StreamItem::ChunkJson(_)))
            .collect();
        (items, text)
    }

    fn usage(items: &[StreamItem]) -> Option<Usage> {
        items.iter().find_map(|i| match i {
            StreamItem::Usage(u) => Some(*u),
            _ => None,
        })
    }

    #[test]
    fn chunks_go_on_as_text_and_usage_is_read_from_them() {
        // Groq: usage under `x_groq` on the last content chunk, then a synthesized usage
        // chunk (with the last id, model and created seen) before `[DONE]`.
        let (items, text) = run(
            crate::groq::FLAVOR,
            &[
                r#"{"id":"g1","created":42,"model":"llama","choices":[{"delta":{"content":"hi"},"finish_reason":null}],"x_groq":{"id":"req"}}"#,
                r#"{"id":"g1","created":42,"model":"llama","choices":[{"delta":{},"finish_reason":"stop"}],"x_groq":{"usage":{"prompt_tokens":5,"completion_tokens":2}}}"#,
                "[DONE]",
            ],
        );
        assert_eq!(text, [true, true, false]);
        let u = usage(&items).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 2));
        let Some(StreamItem::Chunk(synth)) = items.get(2) else {
            panic!("{items:?}");
        };
        assert_eq!(synth["id"], "g1");
        assert_eq!(synth["model"], "llama");
        assert_eq!(synth["created"], 42);
        assert_eq!(synth["usage"]["prompt_tokens"], 5);
        // OpenAI: the usage chunk itself (empty choices) is the one sent; none synthesized.
        let (items, text) = run(
            crate::openai::FLAVOR,
            &[
                r#"{"id":"o","choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}"#,
                r#"{"id":"o","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#,
                "[DONE]",
            ],
        );
        assert_eq!(text, [true, true]);
        let u = usage(&items).unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens), (3, 1));
        // An error event and a non-object take the tree path: an error, as before.
        let mut s = CompatStream::new(crate::openai::FLAVOR);
        let mut out = Out::new();
        assert!(
            s.on_event(
                event(r#"{"error":{"message":"boom","type":"server_error"}}"#),
                &mut out
            )
            .is_err()
        );
        assert!(s.on_event(event("[1,2]"), &mut out).is_err());
    }

    #[test]
    fn a_stream_without_done_ends_once_every_choice_finished() {
        // Perplexity may end without `[DONE]`: finished is read from the text path too.
        let flavor = crate::perplexity::FLAVOR;
        assert!(flavor.done_optional);
        let mut s = CompatStream::new(flavor);
        let mut out = Out::new();
        s.on_event(
            event(r#"{"choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#),
            &mut out,
        )
        .unwrap();
        assert!(s.on_end(&mut out).is_err(), "not finished yet");
        s.on_event(
            event(r#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#),
            &mut out,
        )
        .unwrap();
        s.on_end(&mut out).unwrap();
    }
}
