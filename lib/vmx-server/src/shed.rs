//! Load shedding: the local server serves at most `VMX_MAX_IN_FLIGHT` requests at once, a
//! response's body included (a stream holds its slot until it ends). A request past the
//! bound is answered at once with `503`, `Retry-After` and an OpenAI-shaped error body
//! ([`ApiError::Overloaded`]), never queued, so an overload costs a fixed amount of memory
//! per connection rather than growing without bound.
//!
//! The other half of the bound is `max_pending_accounting` in the gateway (a request whose
//! after-response accounting cannot be queued does it inline, keeping its slot here), and
//! the open-file limit: [`raise_open_files_limit`] at start; axum's accept loop logs an
//! accept error such as EMFILE and retries a second later, it never exits.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmx_api::error::ApiError;

/// Seconds a shed request is told to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;

/// `router` with at most `max_in_flight` requests served at once (0: no bound).
pub fn limit_in_flight(router: Router, max_in_flight: usize) -> Router {
    if max_in_flight == 0 {
        return router;
    }
    let slots = Arc::new(Semaphore::new(max_in_flight));
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let slot = slots.clone().try_acquire_owned();
        async move {
            let Ok(slot) = slot else {
                tracing::debug!("request shed: every in-flight slot is taken");
                return ApiError::Overloaded {
                    retry_after_secs: RETRY_AFTER_SECS,
                }
                .into_response();
            };
            next.run(req)
                .await
                .map(|body| Body::new(HoldSlot { body, _slot: slot }))
        }
    }))
}

/// A response body that keeps its request's in-flight slot until it is dropped.
struct HoldSlot {
    body: Body,
    _slot: OwnedSemaphorePermit,
}

impl http_body::Body for HoldSlot {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Raises the soft limit on open files to the hard limit, so connections, not the default
/// soft limit (often 1024), bound how many callers are served or shed. Returns the soft
/// limit in force afterwards, if known.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            return limit.current;
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> Option<u64> {
    None
}
