//! `POST /v1/chat/completions`: OpenAI Chat Completions through a connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use vmx_domain::admission::{Adjustment, Admitted, Reservation};
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{ItemStream, ProviderError, StreamItem, Usage};
use vmx_domain::usage::{ErrorClass, UsageEvent};

use crate::error::ApiError;
use crate::gateway::{Gateway, Resolved, error_class, split_model};

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
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request("body", "body: must be a JSON object"));
    };
    let alias = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_request("model", "model: must be a string")),
        None => return Err(ApiError::bad_request("model", "model: is required")),
    };
    let (connection, model) = split_model(&alias).ok_or_else(|| {
        ApiError::bad_request(
            "model",
            "model: must be <connection>/<model>, e.g. prod-openai/gpt-4o-mini",
        )
    })?;
    match body.get("messages") {
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ApiError::bad_request(
                "messages",
                "messages: must not be empty",
            ));
        }
        Some(Value::Array(m)) if m.len() > max_messages => {
            return Err(ApiError::bad_request(
                "messages",
                format!("messages: at most {max_messages} messages are allowed"),
            ));
        }
        Some(Value::Array(m)) => {
            for (i, msg) in m.iter().enumerate() {
                let ok = msg
                    .get("role")
                    .and_then(Value::as_str)
                    .is_some_and(|r| !r.is_empty());
                if !ok {
                    return Err(ApiError::bad_request(
                        format!("messages[{i}].role"),
                        format!("messages[{i}].role: is required"),
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "messages",
                "messages: must be an array",
            ));
        }
        None => return Err(ApiError::bad_request("messages", "messages: is required")),
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("stream", "stream: must be a boolean")),
    };
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
        connection: connection.to_owned(),
        model: model.to_owned(),
        alias: alias.clone(),
        body,
        stream,
        include_usage,
    })
}

/// The connection's `allowedModels`, when non-empty, must list the model.
pub fn check_model_allowed(resolved: &Resolved, model: &str) -> Result<(), ApiError> {
    match &resolved.connection.allowed_models {
        Some(list) if !list.is_empty() && !list.iter().any(|m| m == model) => {
            Err(ApiError::Forbidden {
                code: "model_not_allowed",
                message: format!(
                    "model '{model}' is not in the allowed models of connection '{}'",
                    resolved.connection.name
                ),
            })
        }
        _ => Ok(()),
    }
}

pub fn set_rate_limit_headers(headers: &mut HeaderMap, admitted: &Admitted) {
    for (name, value) in admitted.rate_limit_headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// After-call accounting of one request: the reservation's adjustment, the usage event and
/// the provider's rate limits, written together (in the background or inline, see
/// [`crate::gateway::GatewayOptions::background_accounting`]).
pub struct Accounting {
    gateway: Arc<Gateway>,
    resolved: Arc<Resolved>,
    model: String,
    at: OffsetDateTime,
    started: Instant,
}

/// How a call ended, for [`Accounting::finish`].
#[derive(Default)]
pub struct Ending {
    pub adjustment: Option<(Reservation, Adjustment)>,
    pub usage: Option<Usage>,
    pub error: Option<ErrorClass>,
    pub limits: Vec<DiscoveredLimit>,
    pub ttft: Option<Duration>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Accounting {
    pub fn new(
        gateway: &Arc<Gateway>,
        resolved: &Arc<Resolved>,
        model: &str,
        started: Instant,
    ) -> Self {
        Self {
            gateway: gateway.clone(),
            resolved: resolved.clone(),
            model: model.to_owned(),
            at: gateway.clock.now(),
            started,
        }
    }

    pub async fn finish(self, ending: Ending) {
        let usage = ending.usage.unwrap_or_default();
        let event = UsageEvent {
            connection_id: self.resolved.connection.id.clone(),
            model: self.model.clone(),
            at: self.at,
            error: ending.error,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            latency_ms: millis(self.started.elapsed()),
            ttft_ms: ending.ttft.map(millis),
        };
        let gateway = self.gateway.clone();
        let work = async move {
            let g = &gateway;
            let settle = async {
                if let Some((r, a)) = &ending.adjustment {
                    g.settle(r, *a).await;
                }
            };
            let limits = g.record_limits(&self.resolved.connection, &self.model, &ending.limits);
            tokio::join!(settle, g.record_usage(event), limits);
        };
        self.gateway.account(work).await;
    }
}

/// Runs an admitted, non-streaming completion.
pub async fn complete(
    gateway: &Arc<Gateway>,
    resolved: &Arc<Resolved>,
    req: ChatBody,
    admitted: Admitted,
    accounting: Accounting,
) -> Result<Response, ApiError> {
    let provider = gateway.provider(resolved.connection.provider)?;
    let request = Gateway::provider_request(&req.model, req.body);
    let reservation = admitted.reservation.clone();
    match provider.chat(&resolved.credentials, request).await {
        Ok(done) => {
            // Without reported usage the reservation stands (the conservative choice).
            let adjustment = done
                .usage
                .map(|u| (reservation.clone(), reservation.reconcile(u.total())));
            let mut body = done.body;
            if let Value::Object(o) = &mut body {
                o.insert("model".to_owned(), Value::String(req.alias));
            }
            let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
            set_rate_limit_headers(resp.headers_mut(), &admitted);
            accounting
                .finish(Ending {
                    adjustment,
                    usage: done.usage,
                    limits: done.limits,
                    ..Ending::default()
                })
                .await;
            Ok(resp)
        }
        Err(e) => {
            let limits = match &e {
                ProviderError::RateLimited { limits, .. } => limits.clone(),
                _ => Vec::new(),
            };
            let err = ApiError::Provider(e);
            accounting
                .finish(Ending {
                    adjustment: Some((reservation.clone(), reservation.refund())),
                    error: Some(error_class(&err)),
                    limits,
                    ..Ending::default()
                })
                .await;
            Err(err)
        }
    }
}

/// Runs an admitted, streaming completion: SSE out, usage accounted when it ends.
pub async fn stream(
    gateway: &Arc<Gateway>,
    resolved: &Arc<Resolved>,
    req: ChatBody,
    admitted: Admitted,
    accounting: Accounting,
) -> Result<Response, ApiError> {
    let provider = gateway.provider(resolved.connection.provider)?;
    let request = Gateway::provider_request(&req.model, req.body);
    let reservation = admitted.reservation.clone();
    let started = match provider.chat_stream(&resolved.credentials, request).await {
        Ok(s) => s,
        Err(e) => {
            let limits = match &e {
                ProviderError::RateLimited { limits, .. } => limits.clone(),
                _ => Vec::new(),
            };
            let err = ApiError::Provider(e);
            accounting
                .finish(Ending {
                    adjustment: Some((reservation.clone(), reservation.refund())),
                    error: Some(error_class(&err)),
                    limits,
                    ..Ending::default()
                })
                .await;
            return Err(err);
        }
    };
    let state = StreamState {
        items: started.items,
        limits: started.limits,
        reservation: Some(reservation),
        accounting: Some(accounting),
        include_usage: req.include_usage,
        alias: req.alias,
        usage: None,
        streamed_bytes: 0,
        error: None,
        done: false,
        started: Instant::now(),
        first_token: None,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        let bytes = st.next_event().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(bytes), st))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_rate_limit_headers(h, &admitted);
    Ok(resp)
}

struct StreamState {
    items: ItemStream,
    limits: Vec<DiscoveredLimit>,
    /// Taken when the stream is accounted; still here on drop means the client went away.
    reservation: Option<Reservation>,
    accounting: Option<Accounting>,
    include_usage: bool,
    alias: String,
    usage: Option<Usage>,
    /// Bytes of content streamed so far: the completion estimate when no usage arrives.
    streamed_bytes: usize,
    error: Option<ErrorClass>,
    /// The last event went out; the next poll accounts and ends the body.
    done: bool,
    started: Instant,
    first_token: Option<Duration>,
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

impl StreamState {
    /// The next SSE event to send, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        if self.done {
            // The caller has its last event; account before the body ends, so a runtime
            // that freezes after the response (Lambda) cannot lose it.
            self.account().await;
            return None;
        }
        loop {
            match self.items.next().await {
                Some(Ok(StreamItem::Usage(u))) => self.usage = Some(u),
                Some(Ok(StreamItem::Chunk(chunk))) => {
                    if let Some(out) = self.chunk(chunk) {
                        return Some(out);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    tracing::warn!(error = %e, "provider stream failed");
                    let err = ApiError::Provider(e);
                    self.error = Some(error_class(&err));
                    return Some(sse(&err.body().to_string()));
                }
                None => {
                    self.done = true;
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
            }
        }
    }

    /// The adjustment for how the stream ended.
    fn adjustment(&self, r: &Reservation) -> Adjustment {
        match (self.error, self.usage) {
            (None, Some(u)) => r.reconcile(u.total()),
            (None, None) => r.reconcile(self.tokens_so_far(r.prompt_tokens)),
            (Some(_), _) => r.failed(self.tokens_so_far(r.prompt_tokens)),
        }
    }

    async fn account(&mut self) {
        let (Some(r), Some(a)) = (self.reservation.take(), self.accounting.take()) else {
            return;
        };
        let adjustment = self.adjustment(&r);
        a.finish(Ending {
            adjustment: Some((r, adjustment)),
            usage: self.usage,
            error: self.error,
            limits: std::mem::take(&mut self.limits),
            ttft: self.first_token,
        })
        .await;
    }
    /// Rewrites one chunk for the caller; `None` when nothing is left to send.
    fn chunk(&mut self, mut chunk: Value) -> Option<Bytes> {
        let Value::Object(o) = &mut chunk else {
            return None;
        };
        if let Some(u) = o.get("usage").filter(|u| !u.is_null()) {
            if self.usage.is_none() {
                self.usage = usage_of(u);
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
                if n > 0 && self.first_token.is_none() {
                    self.first_token = Some(self.started.elapsed());
                }
                self.streamed_bytes += n;
            }
        }
        o.insert("model".to_owned(), Value::String(self.alias.clone()));
        Some(sse(&chunk.to_string()))
    }

    /// Prompt plus what was streamed, when anything was; zero otherwise.
    fn tokens_so_far(&self, prompt: u64) -> u64 {
        let completion = self.usage.map(|u| u.completion_tokens).unwrap_or_else(|| {
            u64::try_from(self.streamed_bytes)
                .unwrap_or(u64::MAX)
                .div_ceil(4)
        });
        if self.streamed_bytes == 0 && self.usage.is_none() {
            0
        } else {
            prompt + completion
        }
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // The client went away mid-stream: account for what was produced, off the request.
        if let (Some(r), Some(a)) = (self.reservation.take(), self.accounting.take()) {
            let adjustment = r.failed(self.tokens_so_far(r.prompt_tokens));
            let ending = Ending {
                adjustment: Some((r, adjustment)),
                usage: self.usage,
                error: Some(ErrorClass::Other),
                limits: std::mem::take(&mut self.limits),
                ttft: self.first_token,
            };
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(a.finish(ending));
            }
        }
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

/// The shared entry: parse, route, check, admit, then run.
pub async fn handle(
    gateway: &Arc<Gateway>,
    body: Value,
    source_ip: IpAddr,
    allowed: impl Fn(&Resolved) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req = parse_chat_body(body, gateway.options.max_messages)?;
    let resolved = gateway.resolve(&req.connection).await?;
    allowed(&resolved)?;
    check_model_allowed(&resolved, &req.model)?;
    // Fail fast, before charging capacity, when no adapter serves the provider.
    gateway.provider(resolved.connection.provider)?;
    let accounting = Accounting::new(gateway, &resolved, &req.model, started);
    let admitted = match gateway
        .admit(&resolved.connection, &req.body, source_ip)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            if matches!(e, ApiError::Capacity(_)) {
                accounting
                    .finish(Ending {
                        error: Some(ErrorClass::CapacityExceeded),
                        ..Ending::default()
                    })
                    .await;
            }
            return Err(e);
        }
    };
    if req.stream {
        stream(gateway, &resolved, req, admitted, accounting).await
    } else {
        complete(gateway, &resolved, req, admitted, accounting).await
    }
}
