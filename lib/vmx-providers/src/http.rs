//! The HTTP side every API-key adapter shares: the client and options, bounded body reads
//! within the request or stream-start timeout, transport failures as [`ProviderError`]s, and
//! 2xx bodies parsed as JSON objects, and an event-stream body as the [`Source`] of a
//! driven stream ([`drive_sse`]).

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response};
use serde_json::Value;
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{ChatStream, ProviderError, StreamItem};
use vmx_domain::provider::ProviderKind;

use crate::ProviderOptions;
use crate::drive::{Items, Source, Translate, drive};
use crate::errors::{error_for_status, truncate};
use crate::key::ApiKey;
use crate::sse::{SseDecoder, SseEvent};

/// Largest error body read from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The shared client and options.
#[derive(Clone)]
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub opts: ProviderOptions,
}

impl Http {
    pub fn new(client: reqwest::Client, opts: ProviderOptions) -> Self {
        Self { client, opts }
    }

    /// Sends a non-streaming request and reads its body (bounded), all within the request
    /// timeout. A non-2xx answer becomes its [`ProviderError`]; a 2xx gives headers and body.
    pub async fn execute(
        &self,
        kind: ProviderKind,
        req: RequestBuilder,
        key: &ApiKey,
    ) -> Result<(HeaderMap, Vec<u8>), ProviderError> {
        let max = self.opts.max_response_bytes;
        let call = async {
            let mut resp = req.send().await.map_err(|e| map_reqwest(&e, key))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            crate::observe::record(&headers);
            if !status.is_success() {
                let body = read_body(&mut resp, MAX_ERROR_BODY, key, true).await?;
                return Err(error_for_status(kind, status, &headers, &body, key));
            }
            let body = read_body(&mut resp, max, key, false).await?;
            Ok((headers, body))
        };
        match tokio::time::timeout(self.opts.request_timeout, call).await {
            Ok(r) => r.map_err(|e| key.scrub_error(e)),
            Err(_) => Err(ProviderError::Timeout),
        }
    }

    /// Sends a streaming request and waits (bounded by the stream start timeout) for its
    /// headers. A non-2xx answer becomes its [`ProviderError`].
    pub async fn start_stream(
        &self,
        kind: ProviderKind,
        req: RequestBuilder,
        key: &ApiKey,
    ) -> Result<Response, ProviderError> {
        let call = async {
            let mut resp = req.send().await.map_err(|e| map_reqwest(&e, key))?;
            let status = resp.status();
            crate::observe::record(resp.headers());
            if !status.is_success() {
                let headers = resp.headers().clone();
                let body = read_body(&mut resp, MAX_ERROR_BODY, key, true).await?;
                return Err(error_for_status(kind, status, &headers, &body, key));
            }
            Ok(resp)
        };
        match tokio::time::timeout(self.opts.stream_start_timeout, call).await {
            Ok(r) => r.map_err(|e| key.scrub_error(e)),
            Err(_) => Err(ProviderError::Timeout),
        }
    }

    /// A started chat stream: `limits` read from its headers, its items translated by
    /// `translator`.
    pub fn chat_stream<T>(
        &self,
        resp: Response,
        limits: Vec<DiscoveredLimit>,
        translator: T,
        key: ApiKey,
    ) -> ChatStream
    where
        T: Translate<SseEvent, Item = StreamItem>,
    {
        ChatStream {
            limits,
            items: drive_sse(resp, translator, &self.opts, key),
        }
    }
}

/// Reads a body up to `max` bytes. Past that: the truncated prefix when `truncate` (error
/// bodies), else a `Malformed` error.
async fn read_body(
    resp: &mut Response,
    max: usize,
    key: &ApiKey,
    truncate: bool,
) -> Result<Vec<u8>, ProviderError> {
    if let Some(len) = resp.content_length()
        && len > max as u64
        && !truncate
    {
        return Err(too_large(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest(&e, key))? {
        if body.len() + chunk.len() > max {
            if truncate {
                body.extend_from_slice(&chunk[..max - body.len()]);
                return Ok(body);
            }
            return Err(too_large(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(max: usize) -> ProviderError {
    ProviderError::Malformed(format!("the response is larger than {max} bytes"))
}

/// A transport failure as a [`ProviderError`] (no URL, the key scrubbed).
pub(crate) fn map_reqwest(e: &reqwest::Error, key: &ApiKey) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the response".to_owned()
    } else {
        "the request could not be sent".to_owned()
    };
    let mut source = std::error::Error::source(e);
    let mut depth = 0;
    while let Some(s) = source {
        if depth >= 4 {
            break;
        }
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
        depth += 1;
    }
    ProviderError::Network(truncate(&key.scrub(&msg)))
}

/// Parses a 2xx body as a JSON object.
pub(crate) fn json_object(body: &[u8]) -> Result<Value, ProviderError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(ProviderError::Malformed(
            "the response is JSON but not an object".into(),
        )),
        Err(e) => Err(ProviderError::Malformed(format!(
            "the response is not valid JSON ({} at line {} column {})",
            category(&e),
            e.line(),
            e.column()
        ))),
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

/// Parses one stream event's data as a JSON object.
pub(crate) fn event_json(data: &str) -> Result<Value, ProviderError> {
    json_object(data.as_bytes()).map_err(|e| match e {
        ProviderError::Malformed(m) => {
            ProviderError::Malformed(format!("a stream event: {}", m.trim_start_matches("the ")))
        }
        other => other,
    })
}

/// The path of `url` (for [`Probe::call`](vmx_domain::inference::Probe)).
pub(crate) fn url_path(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.to_owned())
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A streaming response body as a [`Source`] of SSE events; every error leaving the stream
/// is scrubbed of the key.
struct SseBody {
    body: Body,
    decoder: SseDecoder,
    key: ApiKey,
    /// The body ended inside an event.
    cut_inside_event: bool,
}

impl Source for SseBody {
    type Event = SseEvent;

    fn read<'a>(
        &'a mut self,
        events: &'a mut VecDeque<SseEvent>,
    ) -> BoxFuture<'a, Result<bool, ProviderError>> {
        Box::pin(async move {
            match self.body.next().await {
                None => {
                    self.cut_inside_event = self.decoder.finish();
                    Ok(false)
                }
                Some(Err(e)) => Err(map_reqwest(&e, &self.key)),
                Some(Ok(bytes)) => {
                    self.decoder
                        .push(&bytes)
                        .map_err(|e| ProviderError::Malformed(format!("the event stream: {e}")))?;
                    events.extend(std::iter::from_fn(|| self.decoder.next_event()));
                    Ok(true)
                }
            }
        })
    }

    fn fail(&self, e: ProviderError) -> ProviderError {
        let e = match e {
            ProviderError::Malformed(m) if self.cut_inside_event => {
                ProviderError::Malformed(format!("{m} (the connection closed inside an event)"))
            }
            other => other,
        };
        self.key.scrub_error(e)
    }

    /// Reads the rest of a finished body for a moment (a provider closes its body right after
    /// the terminator); a body that goes on is simply dropped.
    fn done(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for _ in 0..4 {
                match tokio::time::timeout(Duration::from_millis(50), self.body.next()).await {
                    Ok(Some(Ok(_))) => continue,
                    _ => return,
                }
            }
        })
    }
}

/// The item stream of a started event-stream response, translated by `translator`.
pub(crate) fn drive_sse<T>(
    resp: Response,
    translator: T,
    opts: &ProviderOptions,
    key: ApiKey,
) -> Items<T::Item>
where
    T: Translate<SseEvent>,
{
    let source = SseBody {
        body: Box::pin(resp.bytes_stream()),
        decoder: SseDecoder::new(opts.max_response_bytes),
        key,
        cut_inside_event: false,
    };
    drive(source, translator, opts)
}
