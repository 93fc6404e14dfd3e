//! The accounting of one inference call, the same for every route: the admission that
//! reserves capacity, then the reservation reconciled to the reported usage (or refunded),
//! one usage record and the provider's rate limits.
//!
//! A route admits with [`Accounting::admit`] and ends the call with [`Accounting::respond`]
//! (a whole response), [`Accounting::refused`] (the provider refused it) or [`sse_response`],
//! the one accounted stream: it runs the provider's items through the route's
//! [`StreamEncoder`] (its wire format) and accounts once, when the stream ends, fails or the
//! client goes away.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::{FutureExt as _, Stream, StreamExt};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use vmx_domain::admission::{Adjustment, Admitted, Reservation};
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::inference::{ProviderError, Usage};
use vmx_domain::output::Route;
use vmx_domain::usage::{ErrorClass, UsageEvent};

use crate::error::ApiError;
use crate::gateway::{Gateway, Resolved, error_class};
use crate::metrics;

/// Who sent an inference request and from where.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The caller's IP (for `source-ip` windows).
    pub source_ip: IpAddr,
    /// The gateway API key that authenticated it (`None`: the local admin token); its
    /// usage is recorded under it.
    pub api_key_id: Option<String>,
    /// That key's own capacity entries (enforced with the connection's windows).
    pub api_key_capacity: Vec<vmx_domain::capacity::CapacityEntry>,
}

/// After-call accounting of one request: the reservation's adjustment, the usage event and
/// the provider's rate limits, written together (in the background or inline, see
/// [`crate::gateway::GatewayOptions::background_accounting`]).
pub struct Accounting {
    gateway: Arc<Gateway>,
    resolved: Arc<Resolved>,
    model: String,
    api_key_id: Option<String>,
    at: OffsetDateTime,
    started: Instant,
    /// The request's id ([`crate::request_id`]), for the inference's log line and metrics.
    request_id: Option<String>,
    /// The fullest window of the admission, in percent.
    utilization: Option<f64>,
    /// Which limit answered 429 (a capacity window's kind, or `provider`).
    limit_kind: Option<String>,
    /// The provider's own request id, once its response headers came
    /// ([`vmx_providers::observe`]).
    provider_request_id: Option<String>,
}

/// How a call ended.
#[derive(Default)]
struct Ending {
    adjustment: Option<(Reservation, Adjustment)>,
    usage: Option<Usage>,
    error: Option<ErrorClass>,
    limits: Vec<DiscoveredLimit>,
    ttft: Option<Duration>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Accounting {
    /// Admits one call of `model` on `resolved` arriving on `route` (`started`: when the
    /// request arrived); `body` gets the output limit the admission reserved
    /// ([`Gateway::admit`]); the caller's API key (`origin`) chooses its prioritization
    /// pool, and its own capacity entries are windows of the same admission. A capacity
    /// rejection is recorded as a usage event before it is returned. `Ok(None)`: the
    /// connection changed since it was cached (only when `check_version`; see
    /// [`Gateway::admit`]), nothing charged, nothing recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        gateway: &Arc<Gateway>,
        resolved: &Arc<Resolved>,
        model: &str,
        route: Route,
        body: &mut Map<String, Value>,
        origin: Origin,
        started: Instant,
        check_version: bool,
    ) -> Result<Option<(Admitted, Self)>, ApiError> {
        let mut accounting = Self {
            gateway: gateway.clone(),
            resolved: resolved.clone(),
            model: model.to_owned(),
            api_key_id: origin.api_key_id,
            at: gateway.clock.now(),
            started,
            request_id: crate::request_id::current(),
            utilization: None,
            limit_kind: None,
            provider_request_id: None,
        };
        match gateway
            .admit(
                resolved,
                route,
                body,
                origin.source_ip,
                accounting.api_key_id.as_deref(),
                &origin.api_key_capacity,
                check_version,
            )
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(admitted)) => {
                accounting.utilization = metrics::utilization_percent(&admitted);
                Ok(Some((admitted, accounting)))
            }
            Err(e) => {
                if let ApiError::Capacity(r) = &e {
                    accounting.limit_kind = Some(metrics::limit_kind(r));
                    accounting
                        .finish(Ending {
                            error: Some(ErrorClass::CapacityExceeded),
                            ..Ending::default()
                        })
                        .await;
                }
                Err(e)
            }
        }
    }

    /// A whole response: `body` with `model` set to what the caller sent (`alias`) and the
    /// `x-ratelimit-*` headers; the reservation reconciled to `usage` (without reported
    /// usage it stands, the conservative choice).
    pub async fn respond(
        mut self,
        admitted: &Admitted,
        alias: String,
        mut body: Value,
        usage: Option<Usage>,
        limits: Vec<DiscoveredLimit>,
    ) -> Response {
        self.provider_request_id = vmx_providers::observe::current();
        let r = &admitted.reservation;
        let adjustment = usage.map(|u| (r.clone(), r.reconcile(u.total())));
        if let Value::Object(o) = &mut body {
            o.insert("model".to_owned(), Value::String(alias));
        }
        let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
        set_rate_limit_headers(resp.headers_mut(), admitted);
        self.finish(Ending {
            adjustment,
            usage,
            limits,
            ..Ending::default()
        })
        .await;
        resp
    }

    /// The provider refused the call: the whole reservation refunded, the failure recorded;
    /// returns the error for the caller.
    pub async fn refused(mut self, admitted: &Admitted, e: ProviderError) -> ApiError {
        self.provider_request_id = vmx_providers::observe::current();
        let limits = match &e {
            ProviderError::RateLimited { limits, .. } => limits.clone(),
            _ => Vec::new(),
        };
        let err = ApiError::Provider(e);
        let r = &admitted.reservation;
        self.finish(Ending {
            adjustment: Some((r.clone(), r.refund())),
            error: Some(error_class(&err)),
            limits,
            ..Ending::default()
        })
        .await;
        err
    }

    /// The request's id, for error events written after the handler returned.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The inference's log line and metrics.
    fn report(&self, ending: &Ending, usage: &Usage, latency: Duration) {
        let connection = &self.resolved.connection;
        let error = ending.error.map(ErrorClass::as_str);
        let limit_kind = self.limit_kind.clone().or_else(|| {
            (ending.error == Some(ErrorClass::RateLimited)).then(|| "provider".to_owned())
        });
        tracing::info!(
            request_id = self.request_id.as_deref(),
            connection_id = %connection.id,
            provider = %connection.provider,
            model = %self.model,
            error_class = error,
            limit_kind = limit_kind.as_deref(),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            latency_ms = millis(latency),
            ttft_ms = ending.ttft.map(millis),
            provider_request_id = self.provider_request_id.as_deref(),
            "inference"
        );
        let provider = connection.provider.to_string();
        self.gateway.options.metrics.record(&metrics::Inference {
            connection_id: &connection.id,
            provider: &provider,
            model: &self.model,
            allowed_models: connection.allowed_models.as_deref(),
            error_class: error,
            limit_kind,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            latency,
            ttft: ending.ttft,
            utilization_percent: self.utilization,
            request_id: self.request_id.as_deref(),
        });
    }

    async fn finish(self, ending: Ending) {
        let usage = ending.usage.unwrap_or_default();
        let latency = self.started.elapsed();
        self.report(&ending, &usage, latency);
        let event = UsageEvent {
            connection_id: self.resolved.connection.id.clone(),
            model: self.model.clone(),
            at: self.at,
            error: ending.error,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached_tokens: usage.cached_tokens,
            latency_ms: millis(latency),
            ttft_ms: ending.ttft.map(millis),
            api_key_id: self.api_key_id.clone(),
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

/// The `x-ratelimit-*` headers of an admission.
pub fn set_rate_limit_headers(headers: &mut HeaderMap, admitted: &Admitted) {
    for (name, value) in admitted.rate_limit_headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// What a stream has produced so far: the completion estimate when no usage is reported,
/// and the time to the first token.
pub struct Meter {
    /// The usage the provider reported, once it has.
    pub usage: Option<Usage>,
    /// Bytes of content streamed so far.
    streamed_bytes: usize,
    started: Instant,
    first_token: Option<Duration>,
}

impl Meter {
    /// Nothing produced yet.
    pub(crate) fn new() -> Self {
        Self {
            usage: None,
            streamed_bytes: 0,
            started: Instant::now(),
            first_token: None,
        }
    }

    /// Bytes of content streamed so far.
    #[cfg(test)]
    pub(crate) fn streamed_bytes(&self) -> usize {
        self.streamed_bytes
    }

    /// `bytes` of content went to the caller (the first call sets the time to first token).
    pub fn produced(&mut self, bytes: usize) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        self.streamed_bytes += bytes;
    }

    /// The reported total, else the reserved prompt plus about 4 bytes a token of what was
    /// streamed, when anything was; zero otherwise.
    fn tokens_so_far(&self, prompt: u64) -> u64 {
        match self.usage {
            Some(u) => u.total(),
            None if self.streamed_bytes == 0 => 0,
            None => {
                let bytes = u64::try_from(self.streamed_bytes).unwrap_or(u64::MAX);
                prompt + bytes.div_ceil(4)
            }
        }
    }
}

/// What a streaming route's encoder makes of one provider item.
pub enum Encoded {
    /// Nothing for the caller.
    Skip,
    /// One event for the caller.
    Send(Bytes),
    /// The caller's last event: the stream is complete.
    Last(Bytes),
}

/// A streaming route's wire format: how the provider's items, a failure and the end of the
/// stream look to its caller.
pub trait StreamEncoder: Send + 'static {
    type Item: Send + 'static;

    /// One provider item; what it says about usage and produced content goes to `meter`.
    fn encode(&mut self, item: Self::Item, meter: &mut Meter) -> Encoded;

    /// The event that tells the caller the stream failed (`body`: the JSON error).
    fn error(&self, body: &Value) -> Bytes;

    /// The provider's stream ended without an error item (and before any [`Encoded::Last`]):
    /// the caller's last event, or the failure that ending there is.
    fn end(&self) -> Result<Bytes, ProviderError>;
}

/// A provider's stream of items, as the provider port gives them.
pub type ProviderItems<T> = Pin<Box<dyn Stream<Item = Result<T, ProviderError>> + Send>>;

/// The one accounted stream: `items` through `encoder` as a `text/event-stream` response
/// with the admission's `x-ratelimit-*` headers, accounted when it ends (before the body
/// completes, so a runtime that freezes after the response cannot lose it), fails, or the
/// client goes away (in a task then).
pub fn sse_response<E: StreamEncoder>(
    items: ProviderItems<E::Item>,
    limits: Vec<DiscoveredLimit>,
    admitted: &Admitted,
    mut accounting: Accounting,
    encoder: E,
) -> Response {
    // The provider's response headers are in: its request id is known.
    accounting.provider_request_id = vmx_providers::observe::current();
    let state = AccountedStream {
        items,
        encoder,
        meter: Meter::new(),
        limits,
        reservation: Some(admitted.reservation.clone()),
        accounting: Some(accounting),
        error: None,
        done: false,
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
    set_rate_limit_headers(h, admitted);
    resp
}

/// The most bytes of ready events sent as one body frame.
const COALESCE_BYTES: usize = 16 * 1024;

struct AccountedStream<E: StreamEncoder> {
    items: ProviderItems<E::Item>,
    encoder: E,
    meter: Meter,
    limits: Vec<DiscoveredLimit>,
    /// Taken when the stream is accounted; still here on drop means the client went away.
    reservation: Option<Reservation>,
    accounting: Option<Accounting>,
    error: Option<ErrorClass>,
    /// The last event went out; the next poll accounts and ends the body.
    done: bool,
}

impl<E: StreamEncoder> AccountedStream<E> {
    /// The next events to send, or `None` when the stream is over: the next event, with
    /// the events of whatever items are ready at once after it (a provider's read usually
    /// holds many), up to [`COALESCE_BYTES`], as one body frame: one chunk and one socket
    /// write for them instead of one each. No event waits for a later one.
    async fn next_event(&mut self) -> Option<Bytes> {
        if self.done {
            self.account().await;
            return None;
        }
        let first = loop {
            let next = self.items.next().await;
            if let Some(bytes) = self.step(next) {
                break bytes;
            }
        };
        let mut more: Option<BytesMut> = None;
        while !self.done && more.as_ref().map_or(first.len(), BytesMut::len) < COALESCE_BYTES {
            let Some(next) = self.items.next().now_or_never() else {
                break;
            };
            if let Some(bytes) = self.step(next) {
                more.get_or_insert_with(|| BytesMut::from(&first[..]))
                    .extend_from_slice(&bytes);
            }
        }
        Some(more.map_or(first, BytesMut::freeze))
    }

    /// What the caller gets for the provider stream's next item (`None`: its end), if
    /// anything; sets `done` when that is the last event.
    fn step(&mut self, next: Option<Result<E::Item, ProviderError>>) -> Option<Bytes> {
        match next {
            Some(Ok(item)) => match self.encoder.encode(item, &mut self.meter) {
                Encoded::Skip => None,
                Encoded::Send(bytes) => Some(bytes),
                Encoded::Last(bytes) => {
                    self.done = true;
                    Some(bytes)
                }
            },
            Some(Err(e)) => {
                tracing::warn!(error = %e, "provider stream failed");
                Some(self.fail(e))
            }
            None => Some(match self.encoder.end() {
                Ok(bytes) => {
                    self.done = true;
                    bytes
                }
                Err(e) => self.fail(e),
            }),
        }
    }

    /// The stream failed: the caller's error event; accounted as failed.
    fn fail(&mut self, e: ProviderError) -> Bytes {
        self.done = true;
        let err = ApiError::Provider(e);
        self.error = Some(error_class(&err));
        let mut body = err.body();
        // Written after the handler returned, outside the request's task: its id is taken
        // from the accounting.
        if let Some(id) = self.accounting.as_ref().and_then(Accounting::request_id) {
            body["error"]["request_id"] = Value::String(id.to_owned());
        }
        self.encoder.error(&body)
    }

    /// The ending so far, with the adjustment of the reservation for it; `None` once taken.
    fn ending(&mut self, error: Option<ErrorClass>) -> Option<(Accounting, Ending)> {
        let (r, a) = (self.reservation.take()?, self.accounting.take()?);
        let used = self.meter.tokens_so_far(r.prompt_tokens);
        let adjustment = match error {
            None => r.reconcile(used),
            Some(_) => r.failed(used),
        };
        let ending = Ending {
            adjustment: Some((r, adjustment)),
            usage: self.meter.usage,
            error,
            limits: std::mem::take(&mut self.limits),
            ttft: self.meter.first_token,
        };
        Some((a, ending))
    }

    async fn account(&mut self) {
        if let Some((a, ending)) = self.ending(self.error) {
            a.finish(ending).await;
        }
    }
}

impl<E: StreamEncoder> Drop for AccountedStream<E> {
    fn drop(&mut self) {
        // The client went away mid-stream: account for what was produced, off the request.
        if let Some((a, ending)) = self.ending(Some(ErrorClass::Other))
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(a.finish(ending));
        }
    }
}
