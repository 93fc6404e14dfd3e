//! Load shedding, two bounds, each answered at once with `503`, `Retry-After` and an
//! OpenAI-shaped error body ([`ApiError::Overloaded`]), never queued:
//!
//! - **Memory**: at most `VMX_MAX_IN_FLIGHT` requests are served at once, a response's body
//!   included (a stream holds its slot until it ends), so an overload costs a fixed amount
//!   of memory per connection rather than growing without bound. Requests to a slow
//!   provider spend their time waiting, not computing, so this bound is set high.
//! - **CPU**: a probe task measures how late the runtime wakes a 5 ms timer (its
//!   scheduling lag: the time work waits for a core). While the smoothed lag is above
//!   `VMX_SHED_LAG_MS` and at least [`LAG_SHED_MIN_IN_FLIGHT`] requests are in flight, a
//!   share of new requests grows with the excess (`(lag − bound) / bound`, all of them at
//!   twice the bound) and is shed, so the requests
//!   that are admitted keep close to the latency of a busy but not saturated server
//!   instead of queueing behind work the cores cannot finish.
//!
//! The other half of the bound is `max_pending_accounting` in the gateway (a request whose
//! after-response accounting cannot be queued does it inline, keeping its slot here), and
//! the open-file limit: [`raise_open_files_limit`] at start; axum's accept loop logs an
//! accept error such as EMFILE and retries a second later, it never exits.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

/// `router` with at most `max_in_flight` requests served at once (0: no bound) and a share
/// of new requests shed while the scheduling lag is above `max_lag` (zero: never) and at
/// least [`LAG_SHED_MIN_IN_FLIGHT`] requests are in flight.
pub fn limit_load(router: Router, max_in_flight: usize, max_lag: Duration) -> Router {
    if max_in_flight == 0 && max_lag.is_zero() {
        return router;
    }
    let capacity = match max_in_flight {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    };
    let slots = Arc::new(Semaphore::new(capacity));
    let lag = (!max_lag.is_zero()).then(|| Arc::new(LagShedder::new(max_lag)));
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let in_flight = capacity - slots.available_permits();
        let shed_for_lag =
            in_flight >= LAG_SHED_MIN_IN_FLIGHT && lag.as_ref().is_some_and(|l| l.shed());
        let slot = if shed_for_lag {
            None
        } else {
            slots.clone().try_acquire_owned().ok()
        };
        async move {
            let Some(slot) = slot else {
                tracing::debug!(
                    cause = if shed_for_lag {
                        "scheduling lag"
                    } else {
                        "in-flight slots"
                    },
                    "request shed"
                );
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

/// Requests in flight below which the scheduling lag never sheds: with few requests the
/// lag is not of their making (another process on the machine, a pause), and shedding
/// them would not shorten it.
pub const LAG_SHED_MIN_IN_FLIGHT: usize = 32;

/// How often the probe's timer is set.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

/// The CPU bound: the smoothed scheduling lag, measured by a probe task (started with the
/// first request, so inside the server's runtime), and the share of requests it sheds.
struct LagShedder {
    max_lag_us: u64,
    /// Smoothed lag in microseconds (an exponentially weighted mean, weight 1/2 per probe).
    lag_us: Arc<AtomicU64>,
    /// Sum of the shares (per mille) of every request seen; a request is shed when it makes
    /// the sum cross a multiple of 1000, so exactly that share is shed, evenly spread.
    shares: AtomicU64,
    probe: Once,
}

impl LagShedder {
    fn new(max_lag: Duration) -> Self {
        Self {
            max_lag_us: (max_lag.as_micros() as u64).max(1),
            lag_us: Arc::new(AtomicU64::new(0)),
            shares: AtomicU64::new(0),
            probe: Once::new(),
        }
    }

    /// Whether this request is shed.
    fn shed(&self) -> bool {
        self.probe.call_once(|| {
            let lag_us = self.lag_us.clone();
            tokio::spawn(probe(lag_us));
        });
        let share = shed_share_per_mille(self.lag_us.load(Ordering::Relaxed), self.max_lag_us);
        if share == 0 {
            return false;
        }
        let before = self.shares.fetch_add(share, Ordering::Relaxed);
        before % 1000 + share >= 1000
    }
}

/// The share of requests shed, per mille: none up to the bound, then in proportion to the
/// excess, all at twice the bound.
fn shed_share_per_mille(lag_us: u64, max_lag_us: u64) -> u64 {
    if lag_us <= max_lag_us {
        return 0;
    }
    ((lag_us - max_lag_us).saturating_mul(1000) / max_lag_us).min(1000)
}

/// Sets a timer again and again and records how late it fires, smoothed. Ends with the
/// runtime.
async fn probe(lag_us: Arc<AtomicU64>) {
    let mut smoothed = 0u64;
    loop {
        let start = Instant::now();
        tokio::time::sleep(PROBE_INTERVAL).await;
        let late = start.elapsed().saturating_sub(PROBE_INTERVAL).as_micros() as u64;
        smoothed = (smoothed + late) / 2;
        lag_us.store(smoothed, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shed_share_grows_with_the_excess_lag() {
        assert_eq!(shed_share_per_mille(0, 5000), 0);
        assert_eq!(shed_share_per_mille(5000, 5000), 0);
        assert_eq!(shed_share_per_mille(6000, 5000), 200);
        assert_eq!(shed_share_per_mille(7500, 5000), 500);
        assert_eq!(shed_share_per_mille(10_000, 5000), 1000);
        assert_eq!(shed_share_per_mille(u64::MAX, 5000), 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_sheds_its_share_then_recovers() {
        let shedder = LagShedder::new(Duration::from_millis(5));
        assert!(!shedder.shed(), "no lag measured yet");
        // Block the only thread for 60 ms at a time until the probe has seen it: the timer
        // fires late, the smoothed lag passes twice the bound, every request is shed.
        let deadline = Instant::now() + Duration::from_secs(20);
        while shedder.lag_us.load(Ordering::Relaxed) < 10_000 {
            assert!(Instant::now() < deadline, "the probe never saw the lag");
            std::thread::sleep(Duration::from_millis(60));
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            (0..100).all(|_| shedder.shed()),
            "at twice the bound all are shed"
        );
        // Idle again: the lag decays below the bound and nothing is shed.
        let deadline = Instant::now() + Duration::from_secs(20);
        while shedder.lag_us.load(Ordering::Relaxed) > 5000 {
            assert!(Instant::now() < deadline, "the lag never decayed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            (0..100).all(|_| !shedder.shed()),
            "under the bound none is shed"
        );
    }

    #[test]
    fn a_share_sheds_exactly_that_many_requests() {
        let shedder = LagShedder::new(Duration::from_millis(5));
        shedder.lag_us.store(6000, Ordering::Relaxed); // 20 %
        shedder.probe.call_once(|| {}); // no runtime here: no probe
        let shed = (0..1000).filter(|_| shedder.shed()).count();
        assert_eq!(shed, 200);
    }
}
