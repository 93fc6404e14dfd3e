//! `POST /v1/chat/completions`: OpenAI Chat Completions through a connection.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use vmx_domain::admission::{Admitted, Reservation};
use vmx_domain::inference::{ItemStream, StreamItem, Usage};

use crate::error::ApiError;
use crate::gateway::{Gateway, Resolved, split_model};

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

fn set_rate_limit_headers(headers: &mut HeaderMap, admitted: &Admitted) {
    for (name, value) in admitted.rate_limit_headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// Runs an admitted, non-streaming completion.
pub async fn complete(
    gateway: &Arc<Gateway>,
    resolved: &Resolved,
    req: ChatBody,
    admitted: Admitted,
) -> Result<Response, ApiError> {
    let provider = gateway.provider(resolved.connection.provider)?;
    let request = Gateway::provider_request(&req.model, req.body);
    let reservation = admitted.reservation.clone();
    match provider.chat(&resolved.credentials, request).await {
        Ok(done) => {
            let actual = done.usage.map(|u| u.total());
            if let Some(total) = actual {
                gateway
                    .settle(&reservation, reservation.reconcile(total))
                    .await;
            }
            let mut body = done.body;
            if let Value::Object(o) = &mut body {
                o.insert("model".to_owned(), Value::String(req.alias));
            }
            let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
            set_rate_limit_headers(resp.headers_mut(), &admitted);
            Ok(resp)
        }
        Err(e) => {
            gateway.settle(&reservation, reservation.refund()).await;
            Err(ApiError::Provider(e))
        }
    }
}

/// Runs an admitted, streaming completion: SSE out, usage accounted when it ends.
pub async fn stream(
    gateway: &Arc<Gateway>,
    resolved: &Resolved,
    req: ChatBody,
    admitted: Admitted,
) -> Result<Response, ApiError> {
    let provider = gateway.provider(resolved.connection.provider)?;
    let request = Gateway::provider_request(&req.model, req.body);
    let reservation = admitted.reservation.clone();
    let started = match provider.chat_stream(&resolved.credentials, request).await {
        Ok(s) => s,
        Err(e) => {
            gateway.settle(&reservation, reservation.refund()).await;
            return Err(ApiError::Provider(e));
        }
    };
    let state = StreamState {
        items: started.items,
        gateway: gateway.clone(),
        reservation: Some(reservation),
        include_usage: req.include_usage,
        alias: req.alias,
        usage: None,
        streamed_bytes: 0,
        finished: false,
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
    gateway: Arc<Gateway>,
    /// Taken when the stream is settled; still here on drop means the client went away.
    reservation: Option<Reservation>,
    include_usage: bool,
    alias: String,
    usage: Option<Usage>,
    /// Bytes of content streamed so far: the completion estimate when no usage arrives.
    streamed_bytes: usize,
    finished: bool,
    started: Instant,
    first_token: Option<Duration>,
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

impl StreamState {
    /// The next SSE event to send, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        if self.finished {
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
                    self.finished = true;
                    let used = self.tokens_so_far();
                    if let Some(r) = self.reservation.take() {
                        self.gateway.settle(&r, r.failed(used)).await;
                    }
                    tracing::warn!(error = %e, "provider stream failed");
                    let body = ApiError::Provider(e).body();
                    return Some(sse(&body.to_string()));
                }
                None => {
                    self.finished = true;
                    if let Some(r) = self.reservation.take() {
                        let used = self
                            .usage
                            .map(|u| u.total())
                            .unwrap_or_else(|| self.tokens_so_far());
                        self.gateway.settle(&r, r.reconcile(used)).await;
                    }
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
            }
        }
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

    fn tokens_so_far(&self) -> u64 {
        let prompt = self.reservation.as_ref().map_or(0, |r| r.prompt_tokens);
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
        // The client went away mid-stream: settle to what was produced, off the request.
        if let Some(r) = self.reservation.take() {
            let used = self.tokens_so_far();
            let gateway = self.gateway.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { gateway.settle(&r, r.failed(used)).await });
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
    let req = parse_chat_body(body, gateway.options.max_messages)?;
    let resolved = gateway.resolve(&req.connection).await?;
    allowed(&resolved)?;
    check_model_allowed(&resolved, &req.model)?;
    // Fail fast, before charging capacity, when no adapter serves the provider.
    gateway.provider(resolved.connection.provider)?;
    let admitted = gateway
        .admit(&resolved.connection, &req.body, source_ip)
        .await?;
    if req.stream {
        stream(gateway, &resolved, req, admitted).await
    } else {
        complete(gateway, &resolved, req, admitted).await
    }
}
