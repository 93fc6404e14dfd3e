//! Load shedding, two bounds, each answered at once with `503`, `Retry-After` and an
//! OpenAI-shaped error body ([`ApiError::Overloaded`]), never queued:
//!
//! - **Memory**: at most `VMX_MAX_IN_FLIGHT` requests are served at once, a response's body
//!   included (a stream holds its slot until it ends), so an overload costs a fixed amount
//!   of memory per connection rather than growing without bound. Requests to a slow
//!   provider spend their time waiting, not computing, so this bound is set high.
//! - **CPU**: a request that arrives while at least [`LAG_SHED_MIN_IN_FLIGHT`] others are
//!   in flight first yields its core once and measures how long it waits to get it back:
//!   the runtime's scheduling lag as this request meets it (the tasks ready before it, and
//!   the other processes on the machine). Past `VMX_SHED_LAG_MS`, while the mean lag of
//!   the last requests is past it too (so a short pause of the machine sheds nothing), it
//!   is shed. An overload thus sheds the requests that would otherwise queue behind work
//!   the cores cannot finish, and the requests it admits keep close to the latency of a
//!   busy but not saturated server. (An earlier version sampled the lag with a timer task
//!   every 5 ms; a timer fires late by at most the runtime's driver interval, not by the
//!   length of the queue, so it saw a fraction of the wait: at twice the sustained rate
//!   the admitted requests' p99 overhead was 204 ms, BENCHMARKS.md section 5 at e983768.)
//!
//! The other half of the bound is `max_pending_accounting` in the gateway (a request whose
//! after-response accounting cannot be queued does it inline, keeping its slot here), and
//! the open files: [`raise_open_files_limit`] and [`reserve_file_table`] at start; axum's
//! accept loop logs an accept error such as EMFILE and retries a second later, it never
//! exits.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmx_api::error::ApiError;

/// Seconds a shed request is told to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Requests in flight below which the scheduling lag is not measured (and never sheds):
/// with so few requests the lag is not of their making, and measuring it costs a task
/// switch per request.
pub const LAG_SHED_MIN_IN_FLIGHT: usize = 8;

/// `router` with at most `max_in_flight` requests served at once (0: no bound) and a
/// request shed when it waits longer than `max_lag` (zero: never) for a core while at
/// least [`LAG_SHED_MIN_IN_FLIGHT`] others are in flight and the recent requests waited
/// longer too.
pub fn limit_load(router: Router, max_in_flight: usize, max_lag: Duration) -> Router {
    if max_in_flight == 0 && max_lag.is_zero() {
        return router;
    }
    let capacity = match max_in_flight {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    };
    let slots = Arc::new(Semaphore::new(capacity));
    let recent = Arc::new(RecentLag::default());
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let in_flight = capacity - slots.available_permits();
        let slot = slots.clone().try_acquire_owned().ok();
        // Only a request that will measure the lag takes a handle on the recent mean.
        let measure =
            (in_flight >= LAG_SHED_MIN_IN_FLIGHT && !max_lag.is_zero()).then(|| recent.clone());
        async move {
            let Some(slot) = slot else {
                tracing::debug!(cause = "in-flight slots", "request shed");
                return overloaded();
            };
            if let Some(recent) = measure
                && recent.over(scheduling_lag().await, max_lag)
            {
                tracing::debug!(cause = "scheduling lag", "request shed");
                return overloaded();
            }
            next.run(req)
                .await
                .map(|body| Body::new(HoldSlot { body, _slot: slot }))
        }
    }))
}

/// The lag the last measuring requests met, smoothed (an exponentially weighted mean,
/// weight 1/8 per request), so that a burst of a few requests after a short pause of the
/// machine is not shed, while a lasting overload is within a dozen requests.
#[derive(Default)]
struct RecentLag {
    micros: AtomicU64,
}

impl RecentLag {
    /// Records `lag`; whether both it and the recent lag are above `bound`.
    fn over(&self, lag: Duration, bound: Duration) -> bool {
        let lag_us = lag.as_micros().min(u128::from(u32::MAX)) as u64;
        let before = self.micros.load(Ordering::Relaxed);
        // Lost updates between concurrent requests only delay the mean by one sample.
        let now = (before * 7 + lag_us) / 8;
        self.micros.store(now, Ordering::Relaxed);
        let bound_us = bound.as_micros() as u64;
        lag_us > bound_us && now > bound_us
    }
}

/// How long this task waits for a core after giving its own up: the work that is ready
/// ahead of it.
async fn scheduling_lag() -> Duration {
    let start = Instant::now();
    tokio::task::yield_now().await;
    start.elapsed()
}

fn overloaded() -> Response {
    ApiError::Overloaded {
        retry_after_secs: RETRY_AFTER_SECS,
    }
    .into_response()
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

/// Grows the process's file-descriptor table at start so it can hold `descriptors` open
/// files without growing again while serving. Linux grows the table by doubling when a new
/// descriptor does not fit (at 64, 256, 512, 1024, 2048, ...) and, in a multi-threaded
/// process, waits for an RCU grace period while doing so, with every thread that opens
/// a file or accepts a connection waiting too: measured here (`perf trace` on the local
/// server under a flood) `accept4` took 17 ms, 37 ms and 55 ms at the 256th, 512th and
/// 1024th descriptor, and every request in flight stalled for as long. The table never
/// shrinks, so one duplicate at `descriptors - 1`, closed at once, is enough; it costs
/// 8 bytes of kernel memory per slot. Returns the size reserved, if any.
#[cfg(unix)]
pub fn reserve_file_table(descriptors: u64) -> Option<u64> {
    let top = descriptors.checked_sub(1)?;
    let top = rustix::fd::RawFd::try_from(top).ok()?;
    match rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), top) {
        Ok(duplicate) => {
            drop(duplicate);
            Some(descriptors)
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not reserve the file-descriptor table");
            None
        }
    }
}

#[cfg(not(unix))]
pub fn reserve_file_table(_descriptors: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_lag_is_the_ready_work_ahead_of_the_task() {
        assert!(
            scheduling_lag().await < Duration::from_millis(20),
            "an idle runtime gives the core back at once"
        );
        // Ten tasks, each holding the only thread for 5 ms, are ready before the measuring
        // task gets its turn again.
        let busy: Vec<_> = (0..10)
            .map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(5)) }))
            .collect();
        let lag = scheduling_lag().await;
        for b in busy {
            b.await.expect("busy task");
        }
        assert!(lag >= Duration::from_millis(50), "measured {lag:?}");
    }

    #[test]
    fn one_late_request_is_not_shed_a_lasting_lag_is() {
        let recent = RecentLag::default();
        let bound = Duration::from_millis(1);
        let (late, fine) = (Duration::from_millis(3), Duration::from_micros(100));
        assert!(!recent.over(late, bound), "the first late request");
        assert!(!recent.over(fine, bound), "in time");
        let shed_after = (1..=20).find(|_| recent.over(late, bound));
        assert!(
            matches!(shed_after, Some(2..=8)),
            "a lasting lag sheds within a few requests: {shed_after:?}"
        );
        assert!(!recent.over(fine, bound), "a request in time is never shed");
    }

    /// The size of this process's descriptor table, from `/proc/self/status`.
    #[cfg(target_os = "linux")]
    fn file_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("an FDSize line")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_descriptor_table_is_grown_once_and_stays_grown() {
        let limit = raise_open_files_limit().expect("the open-file limit");
        let wanted = limit.min(6000);
        assert!(file_table_size() < wanted, "the table starts small");
        assert_eq!(reserve_file_table(wanted), Some(wanted));
        assert!(file_table_size() >= wanted, "{} slots", file_table_size());
        // Opening and closing files afterwards does not shrink it.
        drop(std::fs::File::open("/proc/self/status").expect("a file"));
        assert!(file_table_size() >= wanted);
        assert_eq!(reserve_file_table(0), None, "nothing to reserve");
    }
}
