//! The load generator: open-loop runs against one target, and what each run measured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header;
use hdrhistogram::Histogram;
use serde_json::json;

use super::raw::{RawError, RawPool};
use crate::BenchResult;
use crate::report::ms;

/// Where requests go.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) auth: String,
    pub(crate) model: String,
}

/// What one open-loop run measured.
pub(crate) struct RunStats {
    /// Microseconds from due time to the end of the response body, successful requests.
    hist: Histogram<u64>,
    /// Microseconds from due time to the first byte of the response body, successful
    /// requests.
    ttfb: Histogram<u64>,
    /// Requests that did not succeed, whatever the reason (`shed` and `connection_errors`
    /// included).
    pub(crate) errors: u64,
    /// Of `errors`: answered 503 with `Retry-After` and the `overloaded` error body.
    pub(crate) shed: u64,
    /// Of `errors`: no HTTP answer at all (connect, reset, timeout).
    pub(crate) connection_errors: u64,
    /// Completed requests per second of wall time, from the first due time to the last end.
    pub(crate) achieved: f64,
    /// The dispatcher's worst lateness (µs): how late a request was sent after it was due.
    pub(crate) lag_max_us: u64,
    /// Requests sent.
    pub(crate) sent: u64,
    /// The first failure other than a shed request, if any.
    first_error: Option<String>,
}

impl RunStats {
    /// Whether the first failure (other than a shed request) mentions `what`.
    pub(crate) fn first_error_contains(&self, what: &str) -> bool {
        self.first_error.as_ref().is_some_and(|e| e.contains(what))
    }

    /// Requests that succeeded.
    pub(crate) fn admitted(&self) -> u64 {
        self.hist.len()
    }

    /// Percentile `q` of the time to the end of the body (µs), successful requests.
    pub(crate) fn p(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q / 100.0)
    }

    /// Percentile `q` of the time to the first body byte (µs), successful requests.
    pub(crate) fn ttfb_p(&self, q: f64) -> u64 {
        self.ttfb.value_at_quantile(q / 100.0)
    }

    pub(crate) fn latencies(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            ms(self.p(50.0)),
            ms(self.p(90.0)),
            ms(self.p(99.0)),
            ms(self.hist.max())
        )
    }

    pub(crate) fn sustained(&self, rate: u64) -> bool {
        self.errors == 0 && self.achieved >= rate as f64 * 0.97 && self.p(99.0) < 50_000
    }
}

/// The load generator's HTTP client: HTTP/1.1 keep-alive, `TCP_NODELAY`, as many idle
/// connections as an open loop needs, a 30 s timeout per request.
pub(crate) fn client() -> reqwest::Result<Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map(Client::Reqwest)
}

/// How the generator sends: reqwest (streams, any URL), or the lean client of `raw.rs`
/// (plain http, non-streaming, about a quarter of reqwest's CPU per request), one pool of
/// keep-alive connections per target (URL, key and model: the request it sends).
pub(crate) enum Client {
    Reqwest(reqwest::Client),
    Raw(Mutex<HashMap<(String, String, String), Arc<RawPool>>>),
}

impl Client {
    pub(crate) fn raw() -> Self {
        Self::Raw(Mutex::new(HashMap::new()))
    }
}

/// The longest a request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `rate` requests per second to `target` for `duration`, open loop.
pub(crate) async fn open_loop(
    client: &Client,
    target: &Target,
    rate: u64,
    duration: Duration,
    stream: bool,
) -> BenchResult<RunStats> {
    let total = rate
        .saturating_mul(duration.as_secs_f64().ceil() as u64)
        .max(1);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let body = Bytes::from(
        json!({
            "model": target.model,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": 32,
        })
        .to_string(),
    );
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let ttfb = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(AtomicU64::new(0));
    let shed = Arc::new(AtomicU64::new(0));
    let connection_errors = Arc::new(AtomicU64::new(0));
    let last_end = Arc::new(Mutex::new(Instant::now()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let sender = match client {
        Client::Reqwest(c) => Sender::Reqwest(c.clone()),
        Client::Raw(pools) => {
            if stream {
                return Err("the raw client does not stream".into());
            }
            let mut pools = pools.lock().map_err(|_| "client pools lock poisoned")?;
            let key = (
                target.url.clone(),
                target.auth.clone(),
                target.model.clone(),
            );
            let pool = match pools.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = Arc::new(RawPool::new(&target.url, &target.auth, &body)?);
                    pools.insert(key, p.clone());
                    p
                }
            };
            Sender::Raw(pool)
        }
    };
    // `VMX_BENCH_TIMELINE=<prefix>`: every request's due time, latency (µs) and outcome
    // (admitted, shed, failed) go to `<prefix>.<target>.<rate>`, to see when a run stalled.
    let timeline_path = std::env::var("VMX_BENCH_TIMELINE").ok();
    let timeline = timeline_path
        .as_ref()
        .map(|_| Arc::new(Mutex::new(Vec::<(u64, u64, char)>::new())));
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(20);

    let dispatcher = {
        let (url, auth) = (target.url.clone(), target.auth.clone());
        let (hist, errors, last_end, first_error) = (
            hist.clone(),
            errors.clone(),
            last_end.clone(),
            first_error.clone(),
        );
        let (shed, connection_errors, ttfb) =
            (shed.clone(), connection_errors.clone(), ttfb.clone());
        let timeline = timeline.clone();
        std::thread::spawn(move || {
            let mut tasks = Vec::with_capacity(total as usize);
            let mut lag_max = Duration::ZERO;
            for i in 0..total {
                let due = start + period.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else {
                    lag_max = lag_max.max(now - due);
                }
                let req = match &sender {
                    Sender::Reqwest(client) => Request::Reqwest(Box::new(
                        client
                            .post(&url)
                            .bearer_auth(&auth)
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(body.clone()),
                    )),
                    Sender::Raw(pool) => Request::Raw(pool.clone()),
                };
                let (hist, errors, last_end, first_error) = (
                    hist.clone(),
                    errors.clone(),
                    last_end.clone(),
                    first_error.clone(),
                );
                let (shed, connection_errors, ttfb) =
                    (shed.clone(), connection_errors.clone(), ttfb.clone());
                let timeline = timeline.clone();
                tasks.push(handle.spawn(async move {
                    let outcome = send(req, stream).await;
                    let end = Instant::now();
                    if let Some(timeline) = &timeline {
                        let outcome = match &outcome {
                            Ok(_) => 'a',
                            Err(Failure::Shed) => 's',
                            Err(_) => 'f',
                        };
                        if let Ok(mut t) = timeline.lock() {
                            t.push((
                                due.duration_since(start).as_micros() as u64,
                                end.duration_since(due).as_micros() as u64,
                                outcome,
                            ));
                        }
                    }
                    match outcome {
                        Ok(first_byte) => {
                            let us = end.duration_since(due).as_micros() as u64;
                            if let Ok(mut h) = hist.lock() {
                                let _ = h.record(us.max(1));
                            }
                            let us = first_byte.duration_since(due).as_micros() as u64;
                            if let Ok(mut h) = ttfb.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                        Err(Failure::Shed) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(failure) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let e = match failure {
                                Failure::Connection(e) => {
                                    connection_errors.fetch_add(1, Ordering::Relaxed);
                                    e
                                }
                                Failure::Http(e) => e,
                                Failure::Shed => String::new(),
                            };
                            if let Ok(mut f) = first_error.lock() {
                                f.get_or_insert(e);
                            }
                        }
                    }
                    if let Ok(mut l) = last_end.lock() {
                        *l = (*l).max(end);
                    }
                }));
            }
            (tasks, lag_max)
        })
    };
    let (tasks, lag_max) = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| "the dispatcher thread panicked")?;
    for t in tasks {
        t.await?;
    }
    let hist = std::mem::replace(
        &mut *hist.lock().map_err(|_| "histogram lock poisoned")?,
        Histogram::new(3)?,
    );
    let ttfb = std::mem::replace(
        &mut *ttfb.lock().map_err(|_| "histogram lock poisoned")?,
        Histogram::new(3)?,
    );
    let errors = errors.load(Ordering::Relaxed);
    let shed = shed.load(Ordering::Relaxed);
    let connection_errors = connection_errors.load(Ordering::Relaxed);
    let end = *last_end.lock().map_err(|_| "lock poisoned")?;
    let completed = hist.len();
    let achieved = completed as f64 / end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let first_error = first_error.lock().map_err(|_| "lock poisoned")?.clone();
    if let (Some(prefix), Some(timeline)) = (&timeline_path, &timeline) {
        let lines: String = timeline
            .lock()
            .map_err(|_| "lock poisoned")?
            .iter()
            .map(|(due, us, outcome)| format!("{due} {us} {outcome}\n"))
            .collect();
        std::fs::write(format!("{prefix}.{}.{rate}", target.name), lines)?;
    }
    if let Some(e) = first_error.as_ref() {
        eprintln!(
            "  {} {rate}/s stream={stream}: {errors} errors, first: {e}",
            target.name
        );
    }
    eprintln!(
        "  {:>8} {:>5}/s {:6}: p50 {} p99 {} max {} ms, {achieved:.0}/s, {errors} errors ({shed} shed)",
        target.name,
        rate,
        if stream { "stream" } else { "json" },
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
    );
    Ok(RunStats {
        hist,
        ttfb,
        errors,
        shed,
        connection_errors,
        achieved,
        lag_max_us: lag_max.as_micros() as u64,
        sent: total,
        first_error,
    })
}

/// Why a request did not succeed.
enum Failure {
    /// 503 with `Retry-After` and an `overloaded` error body: shed by the server.
    Shed,
    /// Any other HTTP answer, or an incomplete body.
    Http(String),
    /// No HTTP answer.
    Connection(String),
}

/// Who sends a run's requests.
enum Sender {
    Reqwest(reqwest::Client),
    Raw(Arc<RawPool>),
}

/// One request, ready to go.
enum Request {
    Reqwest(Box<reqwest::RequestBuilder>),
    Raw(Arc<RawPool>),
}

/// One request; Ok when it succeeded and its whole body arrived, with the time its first
/// body byte arrived (the end, for an empty body; the head, with the raw client).
async fn send(req: Request, stream: bool) -> Result<Instant, Failure> {
    let req = match req {
        Request::Reqwest(req) => *req,
        Request::Raw(pool) => {
            let answer = match tokio::time::timeout(REQUEST_TIMEOUT, pool.send()).await {
                Err(_) => return Err(Failure::Connection("timed out".into())),
                Ok(Err(RawError::Connection(e))) => return Err(Failure::Connection(e)),
                Ok(Err(RawError::Malformed(e))) => return Err(Failure::Http(e)),
                Ok(Ok(a)) => a,
            };
            return judge(
                answer.status,
                answer.retry_after,
                &answer.body,
                stream,
                answer.head_at,
            );
        }
    };
    let mut resp = req
        .send()
        .await
        .map_err(|e| Failure::Connection(error_chain(&e)))?;
    let status = resp.status();
    let retry_after = resp.headers().contains_key(header::RETRY_AFTER);
    let mut first_byte = None;
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::Connection(error_chain(&e)))?
    {
        if first_byte.is_none() && !chunk.is_empty() {
            first_byte = Some(Instant::now());
        }
        body.extend_from_slice(&chunk);
    }
    let first_byte = first_byte.unwrap_or_else(Instant::now);
    judge(status.as_u16(), retry_after, &body, stream, first_byte)
}

/// Success, shed or failure, from an answer's status, `Retry-After` and whole body.
fn judge(
    status: u16,
    retry_after: bool,
    body: &[u8],
    stream: bool,
    first_byte: Instant,
) -> Result<Instant, Failure> {
    if !(200..300).contains(&status) {
        let shed = status == 503
            && retry_after
            && serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|b| b["error"]["code"] == "overloaded");
        if shed {
            return Err(Failure::Shed);
        }
        return Err(Failure::Http(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )));
    }
    let complete = if stream {
        body.ends_with(b"data: [DONE]\n\n")
    } else {
        body.ends_with(b"}") || body.ends_with(b"}\n")
    };
    if complete {
        Ok(first_byte)
    } else {
        Err(Failure::Http(format!(
            "incomplete body ({} bytes)",
            body.len()
        )))
    }
}

/// An error with its sources (where "too many open files" would show).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
