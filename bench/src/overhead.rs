//! Section `overhead`: what vmx adds to a request, under open-loop load.
//!
//! One run of this section starts a stub OpenAI-compatible upstream in this process (one
//! that answers at once and one that waits a fixed delay first), the local server (`vmx`,
//! release build, embedded store, a connection with several enabled capacity windows, an
//! API key), and optionally a LiteLLM proxy pointed at the same stub. Then, per rate, it
//! sends the same requests directly to the stub and through each gateway.
//!
//! The load is open loop: request `i` is due at `start + i / rate`, a dispatcher thread
//! (nanosleep, not the 1 ms async timer) starts it at that time whether or not earlier ones
//! have finished, and its latency counts from when it was due, not from when it was sent.
//! A gateway that stalls therefore shows its stall in every request queued behind it
//! (no coordinated omission). The dispatcher's own lateness is reported too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::BenchResult;
use crate::report::{flag, ms, num, opt, table};
use crate::upstream::Upstream;

/// The model every request asks for (the stub answers any).
const MODEL: &str = "gpt-4o-mini";

/// Options of the section.
struct Options {
    vmx: PathBuf,
    seconds: u64,
    rates: Vec<u64>,
    delay_ms: u64,
    litellm: Option<PathBuf>,
    litellm_rates: Vec<u64>,
    search: bool,
    /// `VMX_SYNC_INTERVAL_MS` of the measured server; its default when `None`.
    sync_ms: Option<u64>,
}

impl Options {
    fn parse(args: &[String]) -> BenchResult<Self> {
        let list = |name: &str, default: &str| -> BenchResult<Vec<u64>> {
            opt(args, name)
                .unwrap_or(default)
                .split(',')
                .map(|r| {
                    r.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|r| *r > 0)
                        .ok_or_else(|| format!("{name}: '{r}' is not a positive number").into())
                })
                .collect()
        };
        Ok(Self {
            vmx: PathBuf::from(opt(args, "--vmx").unwrap_or("target/release/vmx")),
            seconds: num(args, "--seconds", 10)?,
            rates: list("--rates", "200,500,1000")?,
            delay_ms: num(args, "--delay-ms", 20)?,
            litellm: opt(args, "--litellm").map(PathBuf::from),
            litellm_rates: list("--litellm-rates", "25,50,100,200,400,800")?,
            search: !flag(args, "--no-search"),
            sync_ms: opt(args, "--sync-ms")
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("--sync-ms: '{v}' is not a number"))
                })
                .transpose()?,
        })
    }
}

pub async fn run(args: &[String]) -> BenchResult<String> {
    let o = Options::parse(args)?;
    let instant = Upstream::start(Duration::ZERO).await?;
    let delayed = Upstream::start(Duration::from_millis(o.delay_ms)).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()?;

    let data = tempfile::tempdir()?;
    let mut vmx = Vmx::start(
        &o.vmx,
        &data.path().join("vmx"),
        &instant,
        &delayed,
        o.sync_ms,
    )
    .await?;
    let mut litellm = match &o.litellm {
        Some(bin) => Some(LiteLlm::start(bin, data.path(), &instant, &delayed).await?),
        None => None,
    };

    let direct = |up: &Upstream| Target {
        name: "direct".into(),
        url: format!("{}/chat/completions", up.base),
        auth: "sk-bench".into(),
        model: MODEL.into(),
    };
    let via_vmx = |connection: &str| Target {
        name: "vmx".into(),
        url: format!("{}/v1/chat/completions", vmx.base),
        auth: vmx.api_key.clone(),
        model: format!("{connection}/{MODEL}"),
    };
    let via_litellm = |l: &LiteLlm, model: &str| Target {
        name: "LiteLLM".into(),
        url: format!("{}/v1/chat/completions", l.base),
        auth: "sk-bench-master".into(),
        model: model.into(),
    };

    // Warm every path (connections, pools, caches) before anything is measured.
    let warm = Duration::from_secs(1);
    for stream in [false, true] {
        for t in [
            direct(&instant),
            via_vmx("bench-instant"),
            via_vmx("bench-delayed"),
        ] {
            open_loop(&client, &t, 200, warm, stream).await?;
        }
        if let Some(l) = &litellm {
            open_loop(&client, &via_litellm(l, "instant"), 50, warm, stream).await?;
        }
    }

    let secs = Duration::from_secs(o.seconds);
    let mut rows = Vec::new();
    let mut summary = Summary::default();
    for (upstream, label, connection) in [
        (&instant, "instant".to_owned(), "bench-instant"),
        (&delayed, format!("{} ms", o.delay_ms), "bench-delayed"),
    ] {
        for stream in [false, true] {
            for &rate in &o.rates {
                let d = open_loop(&client, &direct(upstream), rate, secs, stream).await?;
                let v = open_loop(&client, &via_vmx(connection), rate, secs, stream).await?;
                if label == "instant" && !stream {
                    summary
                        .vmx_at
                        .push((rate, v.p(99.0).saturating_sub(d.p(99.0))));
                }
                rows.push(row(&label, stream, rate, &d, &v));
            }
        }
    }

    // LiteLLM at increasing rates until it no longer keeps up; vmx at the same rates in the
    // same run, for the ratio.
    let mut lite_rows = Vec::new();
    summary.litellm_ran = litellm.is_some();
    if let Some(l) = &litellm {
        for &rate in &o.litellm_rates {
            // At least 1000 requests per path, so that a p99 is not one slow request.
            let secs = secs.max(Duration::from_secs(1000_u64.div_ceil(rate)));
            let d = open_loop(&client, &direct(&instant), rate, secs, false).await?;
            let v = open_loop(&client, &via_vmx("bench-instant"), rate, secs, false).await?;
            let x = open_loop(&client, &via_litellm(l, "instant"), rate, secs, false).await?;
            let sustained = x.sustained(rate);
            lite_rows.push(vec![
                rate.to_string(),
                overhead_ms(&d, &v, 50.0),
                overhead_ms(&d, &v, 99.0),
                overhead_ms(&d, &x, 50.0),
                overhead_ms(&d, &x, 99.0),
                ratio(&d, &v, &x),
                format!("{:.0} / {:.0}", v.achieved, x.achieved),
                format!("{} / {}", v.errors, x.errors),
                if sustained { "yes" } else { "no" }.into(),
            ]);
            if sustained {
                summary.litellm_max = Some((
                    rate,
                    v.p(99.0).saturating_sub(d.p(99.0)),
                    x.p(99.0).saturating_sub(d.p(99.0)),
                ));
            } else {
                break;
            }
        }
    }

    // Before the fix that made 1000/s sustainable: every capacity and usage commit synced
    // to disk on its own (VMX_SYNC_INTERVAL_MS=0), against the default (100 ms).
    let mut sync_rows = Vec::new();
    if !flag(args, "--no-sync-comparison") {
        let mut synced = Vmx::start(
            &o.vmx,
            &data.path().join("vmx-synced"),
            &instant,
            &delayed,
            Some(0),
        )
        .await?;
        let t = Target {
            url: format!("{}/v1/chat/completions", synced.base),
            auth: synced.api_key.clone(),
            ..via_vmx("bench-instant")
        };
        open_loop(&client, &t, 200, warm, false).await?;
        for &rate in &o.rates {
            let d = open_loop(&client, &direct(&instant), rate, secs, false).await?;
            let lazy = open_loop(&client, &via_vmx("bench-instant"), rate, secs, false).await?;
            let every = open_loop(&client, &t, rate, secs, false).await?;
            sync_rows.push(vec![
                rate.to_string(),
                format!(
                    "{} / {}",
                    overhead_ms(&d, &every, 50.0),
                    overhead_ms(&d, &every, 99.0)
                ),
                format!(
                    "{} / {}",
                    overhead_ms(&d, &lazy, 50.0),
                    overhead_ms(&d, &lazy, 99.0)
                ),
                format!("{:.0} / {:.0}", every.achieved, lazy.achieved),
            ]);
        }
        synced.stop().await;
    }

    // Peak memory under the fixed rates, before the search overloads the server (last, so
    // that the overload leaves nothing behind in the other measurements).
    let rated_rss = vmx.peak_rss_kib();

    // The highest rate vmx sustains (non-streaming, instant upstream): step up until the
    // achieved rate falls short, requests fail, or the p99 passes 50 ms.
    let mut max_rows = Vec::new();
    if o.search {
        let mut best = None;
        let start = o.rates.iter().copied().max().unwrap_or(1000);
        let mut rate = start + start / 2;
        while rate <= 20_000 {
            let short = Duration::from_secs(o.seconds.clamp(1, 5));
            let d = open_loop(&client, &direct(&instant), rate, short, false).await?;
            let v = open_loop(&client, &via_vmx("bench-instant"), rate, short, false).await?;
            let sustained = v.sustained(rate);
            max_rows.push(row("instant", false, rate, &d, &v));
            if !sustained {
                break;
            }
            best = Some(rate);
            rate = rate * 3 / 2;
        }
        summary.vmx_max = best;
    }

    let vmx_rss = vmx.peak_rss_kib();
    let lite_rss = litellm.as_ref().and_then(|l| rss_tree_kib(l.child.id()));
    vmx.stop().await;
    if let Some(l) = litellm.as_mut() {
        l.stop().await;
    }

    let header = [
        "upstream",
        "mode",
        "rate/s",
        "direct p50 / p90 / p99 / max ms",
        "vmx p50 / p90 / p99 / max ms",
        "overhead p50 / p90 / p99 ms",
        "achieved/s (direct / vmx)",
        "errors",
        "dispatch lag max ms",
    ];
    let mut out = String::new();
    out.push_str(&format!(
        "Open-loop load, {} s per rate and path, after a 1 s warm-up; latency from the time \
         each request was due to the end of its body (streaming: the last SSE event); \
         overhead = vmx percentile − direct percentile in the same run. HTTP/1.1 keep-alive, \
         loopback; load generator, vmx and stub share the machine's cores. The vmx \
         connection has {} enabled capacity windows (minute, hour and day requests and \
         tokens, a per-source-IP day window), so each request is admitted, reconciled and \
         recorded in the embedded store.\n\n",
        o.seconds,
        CAPACITY.len()
    ));
    out.push_str(&table(&header, &rows));
    if !max_rows.is_empty() {
        out.push_str(&format!(
            "\nHighest sustained rate (non-streaming, instant upstream; sustained = achieved ≥ \
             97 % of the rate, no errors, p99 < 50 ms), {} s per step:\n\n",
            o.seconds.clamp(1, 5)
        ));
        out.push_str(&table(&header, &max_rows));
    }
    if !lite_rows.is_empty() {
        out.push_str(
            "\nvmx and LiteLLM proxy (non-streaming, instant upstream, same stub, same run; \
             LiteLLM with no database, one worker; at least 1000 requests per path and rate):\n\n",
        );
        out.push_str(&table(
            &[
                "rate/s",
                "vmx overhead p50 ms",
                "vmx overhead p99 ms",
                "LiteLLM overhead p50 ms",
                "LiteLLM overhead p99 ms",
                "LiteLLM/vmx p99 overhead",
                "achieved/s (vmx / LiteLLM)",
                "errors (vmx / LiteLLM)",
                "LiteLLM sustained",
            ],
            &lite_rows,
        ));
    }
    if !sync_rows.is_empty() {
        out.push_str(
            "\nBefore and after batching the embedded store's fsyncs (non-streaming, instant \
             upstream): `VMX_SYNC_INTERVAL_MS=0` makes every admission, reconciliation and \
             usage record a transaction synced on commit, as vmx did before; the default \
             (100 ms) keeps the counters in memory and syncs every change together in the \
             background:\n\n",
        );
        out.push_str(&table(
            &[
                "rate/s",
                "every commit synced: overhead p50 / p99 ms",
                "counters in memory, synced every 100 ms: overhead p50 / p99 ms",
                "achieved/s (before / after)",
            ],
            &sync_rows,
        ));
    }
    out.push_str(&format!(
        "\nPeak RSS of vmx over the whole section: {}{}.\n",
        vmx_rss.map_or("unknown".into(), |k| format!(
            "{:.1} MiB",
            k as f64 / 1024.0
        )),
        lite_rss.map_or(String::new(), |k| format!(
            "; LiteLLM (its process tree, current): {:.1} MiB",
            k as f64 / 1024.0
        )),
    ));
    out.push_str(&summary.verdicts(rated_rss));
    Ok(out)
}

/// The headline figures and the targets.
#[derive(Default)]
struct Summary {
    /// (rate, p99 overhead µs), non-streaming, instant upstream.
    vmx_at: Vec<(u64, u64)>,
    vmx_max: Option<u64>,
    /// (highest rate LiteLLM sustained, vmx p99 overhead µs, LiteLLM p99 overhead µs).
    litellm_max: Option<(u64, u64, u64)>,
    litellm_ran: bool,
}

impl Summary {
    fn verdicts(&self, rss_kib: Option<u64>) -> String {
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut out = String::from("\nTargets:\n");
        if let Some((_, us)) = self.vmx_at.iter().find(|(r, _)| *r == 1000) {
            out.push_str(&format!(
                "- overhead p99 < 1 ms at 1000 RPS non-streaming: {} ms, {}\n",
                ms(*us),
                verdict(*us < 1000)
            ));
        }
        if let Some(max) = self.vmx_max {
            out.push_str(&format!(
                "- highest sustained rate through vmx (non-streaming): {max}/s\n"
            ));
        }
        match self.litellm_max {
            Some((rate, v, x)) => out.push_str(&format!(
                "- at {rate}/s, the highest rate LiteLLM sustained: p99 overhead vmx {} ms, \
                 LiteLLM {} ms, {:.0}x lower (target ≥ 20x): {}\n",
                ms(v),
                ms(x),
                x as f64 / v.max(1) as f64,
                verdict(x >= v.max(1).saturating_mul(20))
            )),
            None if self.litellm_ran => out.push_str(
                "- LiteLLM sustained none of the rates tried: no ratio at a sustained rate\n",
            ),
            None => out.push_str("- LiteLLM: not run (pass --litellm <path to litellm>)\n"),
        }
        if let Some(k) = rss_kib {
            out.push_str(&format!(
                "- peak RSS < 40 MB under load (the fixed rates): {:.1} MB, {}\n",
                k as f64 * 1024.0 / 1e6,
                verdict(k * 1024 < 40_000_000)
            ));
        }
        out
    }
}

fn row(label: &str, stream: bool, rate: u64, d: &RunStats, v: &RunStats) -> Vec<String> {
    vec![
        label.to_owned(),
        if stream { "stream" } else { "json" }.into(),
        rate.to_string(),
        d.latencies(),
        v.latencies(),
        format!(
            "{} / {} / {}",
            overhead_ms(d, v, 50.0),
            overhead_ms(d, v, 90.0),
            overhead_ms(d, v, 99.0)
        ),
        format!("{:.0} / {:.0}", d.achieved, v.achieved),
        format!("{} / {}", d.errors, v.errors),
        format!("{} / {}", ms(d.lag_max_us), ms(v.lag_max_us)),
    ]
}

fn overhead_ms(d: &RunStats, v: &RunStats, q: f64) -> String {
    let (a, b) = (v.p(q) as i64, d.p(q) as i64);
    format!("{:.3}", (a - b) as f64 / 1000.0)
}

fn ratio(d: &RunStats, v: &RunStats, x: &RunStats) -> String {
    let vo = v.p(99.0).saturating_sub(d.p(99.0)).max(1);
    let xo = x.p(99.0).saturating_sub(d.p(99.0));
    format!("{:.0}x", xo as f64 / vo as f64)
}

// ---------------------------------------------------------------------------------------
// The load generator

/// Where requests go.
struct Target {
    name: String,
    url: String,
    auth: String,
    model: String,
}

/// What one open-loop run measured.
struct RunStats {
    /// Microseconds from due time to the end of the response body, successful requests.
    hist: Histogram<u64>,
    errors: u64,
    /// Completed requests per second of wall time, from the first due time to the last end.
    achieved: f64,
    /// The dispatcher's worst lateness (µs): how late a request was sent after it was due.
    lag_max_us: u64,
}

impl RunStats {
    fn p(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q / 100.0)
    }

    fn latencies(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            ms(self.p(50.0)),
            ms(self.p(90.0)),
            ms(self.p(99.0)),
            ms(self.hist.max())
        )
    }

    fn sustained(&self, rate: u64) -> bool {
        self.errors == 0 && self.achieved >= rate as f64 * 0.97 && self.p(99.0) < 50_000
    }
}

/// Sends `rate` requests per second to `target` for `duration`, open loop.
async fn open_loop(
    client: &reqwest::Client,
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
    let errors = Arc::new(AtomicU64::new(0));
    let last_end = Arc::new(Mutex::new(Instant::now()));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(20);

    let dispatcher = {
        let (client, url, auth) = (client.clone(), target.url.clone(), target.auth.clone());
        let (hist, errors, last_end, first_error) = (
            hist.clone(),
            errors.clone(),
            last_end.clone(),
            first_error.clone(),
        );
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
                let req = client
                    .post(&url)
                    .bearer_auth(&auth)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
                let (hist, errors, last_end, first_error) = (
                    hist.clone(),
                    errors.clone(),
                    last_end.clone(),
                    first_error.clone(),
                );
                tasks.push(handle.spawn(async move {
                    let outcome = send(req, stream).await;
                    let end = Instant::now();
                    match outcome {
                        Ok(()) => {
                            let us = end.duration_since(due).as_micros() as u64;
                            if let Ok(mut h) = hist.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
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
    let errors = errors.load(Ordering::Relaxed);
    let end = *last_end.lock().map_err(|_| "lock poisoned")?;
    let completed = hist.len();
    let achieved = completed as f64 / end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    if let Some(e) = first_error.lock().map_err(|_| "lock poisoned")?.as_ref() {
        eprintln!(
            "  {} {rate}/s stream={stream}: {errors} errors, first: {e}",
            target.name
        );
    }
    eprintln!(
        "  {:>8} {:>5}/s {:6}: p50 {} p99 {} max {} ms, {achieved:.0}/s, {errors} errors",
        target.name,
        rate,
        if stream { "stream" } else { "json" },
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max()),
    );
    Ok(RunStats {
        hist,
        errors,
        achieved,
        lag_max_us: lag_max.as_micros() as u64,
    })
}

/// One request; Ok when it succeeded and its whole body arrived.
async fn send(req: reqwest::RequestBuilder, stream: bool) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let complete = if stream {
        body.ends_with(b"data: [DONE]\n\n")
    } else {
        body.ends_with(b"}") || body.ends_with(b"}\n")
    };
    if complete {
        Ok(())
    } else {
        Err(format!("incomplete body ({} bytes)", body.len()))
    }
}

// ---------------------------------------------------------------------------------------
// The gateways

/// The capacity windows of the benchmark connections: all enabled, none ever reached.
const CAPACITY: [(&str, Option<&str>); 4] = [
    ("minute", None),
    ("hour", None),
    ("day", None),
    ("day", Some("source-ip")),
];

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(url: &str, child: &mut Child, what: &str, wait: Duration) -> BenchResult<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited during start: {status}").into());
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer {url} within {wait:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The local server, a child process.
struct Vmx {
    child: Child,
    base: String,
    api_key: String,
}

impl Vmx {
    async fn start(
        bin: &Path,
        data: &Path,
        instant: &Upstream,
        delayed: &Upstream,
        sync_interval_ms: Option<u64>,
    ) -> BenchResult<Self> {
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p vmx-server`",
                bin.display()
            )
            .into());
        }
        let port = free_port()?;
        let token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let base = format!("http://127.0.0.1:{port}");
        // One connection per upstream. Provider base URLs are deployment configuration
        // (never per connection), so the delayed stub sits behind the groq adapter, which
        // speaks the same OpenAI wire format.
        let mut command = Command::new(bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VMX_LISTEN", format!("127.0.0.1:{port}"))
            .env("VMX_DATA_DIR", data)
            .env("VMX_ADMIN_TOKEN", &token)
            .env("VMX_OPENAI_BASE_URL", &instant.base)
            .env("VMX_GROQ_BASE_URL", &delayed.base)
            .env("VMX_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(ms) = sync_interval_ms {
            command.env("VMX_SYNC_INTERVAL_MS", ms.to_string());
        }
        // Extra variables for experiments: VMX_BENCH_VMX_ENV="K=V,K2=V2".
        if let Ok(extra) = std::env::var("VMX_BENCH_VMX_ENV") {
            for (k, v) in extra.split(',').filter_map(|kv| kv.split_once('=')) {
                command.env(k, v);
            }
        }
        let mut child = command.spawn()?;
        wait_ready(
            &format!("{base}/healthz"),
            &mut child,
            "vmx",
            Duration::from_secs(20),
        )
        .await?;
        let admin = reqwest::Client::builder().no_proxy().build()?;
        let capacity: Vec<Value> = CAPACITY
            .iter()
            .map(|(period, dimension)| {
                let mut e = json!({"period": period, "requests": 1_000_000_000_u64,
                                   "tokens": 1_000_000_000_000_u64});
                if let Some(d) = dimension {
                    e["dimension"] = json!(d);
                }
                e
            })
            .collect();
        for (name, provider) in [("bench-instant", "openai"), ("bench-delayed", "groq")] {
            let r = admin
                .post(format!("{base}/v1/connections"))
                .bearer_auth(&token)
                .json(&json!({"name": name, "provider": provider,
                              "config": {"apiKey": "sk-bench-upstream"}, "capacity": capacity}))
                .send()
                .await?;
            if r.status() != StatusCode::CREATED {
                return Err(format!("creating {name}: {} {}", r.status(), r.text().await?).into());
            }
        }
        let r = admin
            .post(format!("{base}/v1/api-keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "bench"}))
            .send()
            .await?;
        let key: Value = r.json().await?;
        let api_key = key["key"]
            .as_str()
            .ok_or("the API key response has no key")?
            .to_owned();
        Ok(Self {
            child,
            base,
            api_key,
        })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.child.id()?, "VmHWM:")
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The resident memory of `pid` and its descendants, in KiB.
fn rss_tree_kib(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let mut total = status_kib(pid, "VmRSS:")?;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        total += rss_tree_kib(Some(c)).unwrap_or(0);
    }
    Some(total)
}

/// LiteLLM proxy, a child process with a config naming the two stubs.
struct LiteLlm {
    child: Child,
    base: String,
}

impl LiteLlm {
    async fn start(
        bin: &Path,
        data: &Path,
        instant: &Upstream,
        delayed: &Upstream,
    ) -> BenchResult<Self> {
        let port = free_port()?;
        let config = data.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n\
                 \x20 - model_name: instant\n\
                 \x20   litellm_params:\n\
                 \x20     model: openai/{MODEL}\n\
                 \x20     api_base: {}\n\
                 \x20     api_key: sk-bench-upstream\n\
                 \x20 - model_name: delayed\n\
                 \x20   litellm_params:\n\
                 \x20     model: openai/{MODEL}\n\
                 \x20     api_base: {}\n\
                 \x20     api_key: sk-bench-upstream\n\
                 general_settings:\n\
                 \x20 master_key: sk-bench-master\n\
                 litellm_settings:\n\
                 \x20 telemetry: false\n\
                 \x20 set_verbose: false\n",
                instant.base, delayed.base
            ),
        )?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--num_workers")
            .arg("1")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MODE", "PRODUCTION")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("NO_PROXY", "*")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(
            &format!("{base}/health/liveliness"),
            &mut child,
            "litellm",
            Duration::from_secs(180),
        )
        .await?;
        Ok(Self { child, base })
    }

    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
