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
//!
//! Files: this one holds the options and the run; `load.rs` the load generator,
//! `gateways.rs` the vmx and LiteLLM processes, `summary.rs` the report's rows and the
//! verdicts on the targets.

use std::path::PathBuf;
use std::time::Duration;

use crate::BenchResult;
use crate::report::{flag, num, opt, table};
use crate::upstream::Upstream;

pub(crate) mod gateways;
pub(crate) mod load;
mod raw;
mod summary;

use gateways::{CAPACITY, LiteLlm, Vmx, rss_tree_kib};
use load::{Target, open_loop};
use summary::{Summary, overhead_ms, ratio, row};

/// The model every request asks for (the stub answers any).
pub(crate) const MODEL: &str = "gpt-4o-mini";

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
    let client = crate::overhead::load::client()?;

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
