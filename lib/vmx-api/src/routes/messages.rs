//! `POST /v1/messages`: the Anthropic Messages API, passed through to `anthropic` and
//! `aws-bedrock-invoke` connections with Anthropic-only fields (cache_control, thinking,
//! tool use, server tools) untouched. `model` is `<connection>/<model>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use vmx_domain::admission::Reservation;
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{MessagesEvent, MessagesEventStream, ProviderError, Usage};
use vmx_domain::provider::ProviderKind;
use vmx_domain::usage::ErrorClass;

use crate::error::ApiError;
use crate::gateway::{Gateway, Resolved, error_class, split_model};
use crate::routes::chat::{Accounting, Ending, check_model_allowed, set_rate_limit_headers};

/// The providers that serve the Messages API.
pub const MESSAGES_PROVIDERS: [ProviderKind; 2] =
    [ProviderKind::Anthropic, ProviderKind::AwsBedrockInvoke];

struct MessagesBody {
    connection: String,
    model: String,
    alias: String,
    body: Map<String, Value>,
    stream: bool,
}

fn parse(body: Value, max_messages: usize, beta: Option<&str>) -> Result<MessagesBody, ApiError> {
    let Value::Object(mut body) = body else {
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
            "model: must be <connection>/<model>, e.g. prod-claude/claude-sonnet-4-5",
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
        Some(Value::Array(_)) => {}
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
    if let Some(v) = body.get("max_tokens")
        && v.as_u64().is_none_or(|n| n == 0)
    {
        return Err(ApiError::bad_request(
            "max_tokens",
            "max_tokens: must be a positive integer",
        ));
    }
    // The caller's `anthropic-beta` header travels in the body (Bedrock's form); the
    // Anthropic adapter turns it back into the header.
    if let Some(beta) = beta {
        let mut list: Vec<Value> = match body.remove("anthropic_beta") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for b in beta.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            list.push(Value::String(b.to_owned()));
        }
        body.insert("anthropic_beta".into(), Value::Array(list));
    }
    Ok(MessagesBody {
        connection: connection.to_owned(),
        model: model.to_owned(),
        alias: alias.clone(),
        body,
        stream,
    })
}

/// The shared entry: parse, route, check, admit, then run.
pub async fn handle(
    gateway: &Arc<Gateway>,
    body: Value,
    beta: Option<&str>,
    source_ip: IpAddr,
    allowed: impl Fn(&Resolved) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req = parse(body, gateway.options.max_messages, beta)?;
    let resolved = gateway.resolve(&req.connection).await?;
    allowed(&resolved)?;
    let kind = resolved.connection.provider;
    let provider = gateway.messages_provider(kind).ok_or_else(|| {
        ApiError::bad_request(
            "model",
            format!(
                "model: the Messages API is served for {} connections; connection '{}' uses '{kind}' (use /v1/chat/completions)",
                MESSAGES_PROVIDERS.map(|p| p.id()).join(" and "),
                resolved.connection.name
            ),
        )
    })?;
    check_model_allowed(&resolved, &req.model)?;
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
    let reservation = admitted.reservation.clone();
    let failed = |e: ProviderError| {
        let limits = match &e {
            ProviderError::RateLimited { limits, .. } => limits.clone(),
            _ => Vec::new(),
        };
        let err = ApiError::Provider(e);
        let ending = Ending {
            adjustment: Some((reservation.clone(), reservation.refund())),
            error: Some(error_class(&err)),
            limits,
            ..Ending::default()
        };
        (err, ending)
    };
    if !req.stream {
        return match provider
            .messages(&resolved.credentials, &req.model, req.body)
            .await
        {
            Ok(done) => {
                let adjustment = done
                    .usage
                    .map(|u| (reservation.clone(), reservation.reconcile(u.total())));
                let mut body = done.body;
                if let Value::Object(o) = &mut body {
                    o.insert("model".into(), Value::String(req.alias));
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
                let (err, ending) = failed(e);
                accounting.finish(ending).await;
                Err(err)
            }
        };
    }
    let started_stream = match provider
        .messages_stream(&resolved.credentials, &req.model, req.body)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let (err, ending) = failed(e);
            accounting.finish(ending).await;
            return Err(err);
        }
    };
    let state = EventState {
        events: started_stream.events,
        limits: started_stream.limits,
        reservation: Some(reservation),
        accounting: Some(accounting),
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

struct EventState {
    events: MessagesEventStream,
    limits: Vec<DiscoveredLimit>,
    reservation: Option<Reservation>,
    accounting: Option<Accounting>,
    alias: String,
    usage: Option<Usage>,
    streamed_bytes: usize,
    error: Option<ErrorClass>,
    done: bool,
    started: Instant,
    first_token: Option<Duration>,
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

impl EventState {
    async fn next_event(&mut self) -> Option<Bytes> {
        if self.done {
            self.account().await;
            return None;
        }
        loop {
            match self.events.next().await {
                Some(Ok(MessagesEvent::Usage(u))) => self.usage = Some(u),
                Some(Ok(MessagesEvent::Event { name, mut data })) => {
                    if name == "message_start"
                        && let Some(Value::Object(m)) = data.get_mut("message")
                    {
                        m.insert("model".into(), Value::String(self.alias.clone()));
                    }
                    if name == "content_block_delta" {
                        let n = data.get("delta").map_or(0, |d| d.to_string().len());
                        if self.first_token.is_none() {
                            self.first_token = Some(self.started.elapsed());
                        }
                        self.streamed_bytes += n;
                    }
                    if name == "message_stop" {
                        self.done = true;
                    }
                    return Some(sse(&name, &data));
                }
                Some(Err(e)) => {
                    self.done = true;
                    tracing::warn!(error = %e, "provider stream failed");
                    let err = ApiError::Provider(e);
                    self.error = Some(error_class(&err));
                    return Some(sse("error", &err.body()));
                }
                None => {
                    // Ended without message_stop and without an error item: treat as cut.
                    self.done = true;
                    let err = ApiError::Provider(ProviderError::Malformed(
                        "the stream ended before message_stop".into(),
                    ));
                    self.error = Some(ErrorClass::Upstream);
                    return Some(sse("error", &err.body()));
                }
            }
        }
    }

    fn tokens_so_far(&self, prompt: u64) -> u64 {
        match self.usage {
            Some(u) => u.total(),
            None if self.streamed_bytes == 0 => 0,
            None => {
                prompt
                    + u64::try_from(self.streamed_bytes)
                        .unwrap_or(u64::MAX)
                        .div_ceil(4)
            }
        }
    }

    async fn account(&mut self) {
        let (Some(r), Some(a)) = (self.reservation.take(), self.accounting.take()) else {
            return;
        };
        let used = self.tokens_so_far(r.prompt_tokens);
        let adjustment = match self.error {
            None => r.reconcile(used),
            Some(_) => r.failed(used),
        };
        a.finish(Ending {
            adjustment: Some((r, adjustment)),
            usage: self.usage,
            error: self.error,
            limits: std::mem::take(&mut self.limits),
            ttft: self.first_token,
        })
        .await;
    }
}

impl Drop for EventState {
    fn drop(&mut self) {
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
