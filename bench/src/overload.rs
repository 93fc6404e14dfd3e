//! Section `overload`: the local server at twice its highest sustained rate.
//!
//! Starts the instant stub upstream and the local server (release build, the overhead
//! section's connection and key), finds the highest rate it sustains (non-streaming; the
//! overhead section's criterion: achieved ≥ 97 % of the rate, no errors, p99 < 50 ms; on a
//! server of its own with the CPU shedding off, so the rate is its capacity) unless
//! `--rate` gives it, measures the p99 overhead at that rate, then sends twice that rate for
//! `--seconds` (default 30), open loop, from the lean client of `overhead/raw.rs` (reqwest
//! could not send twice the server's rate from the load generator's one core). Each
//! request is admitted (200, whole body), shed (503 with `Retry-After` and the
//! `overloaded` error body) or a failure (any other answer, or none: a connection error).
//! Reported per server setting given with `--settings` (`;`-separated runs of
//! `,`-separated `NAME=value` environment variables, for example
//! `VMX_SHED_LAG_MS=0;VMX_SHED_LAG_MS=5`; default: one run with the server's defaults):
//! what was sent, admitted, shed and failed, the admitted requests' overhead, vmx's peak RSS (`VmHWM`) and whether "Too many open
//! files" appeared in its log or in a client error.

use std::path::PathBuf;
use std::time::Duration;

use crate::BenchResult;
use crate::overhead::MODEL;
use crate::overhead::gateways::Vmx;
use crate::overhead::load::{Client, RunStats, Target, open_loop};
use crate::report::{ms, num, opt, table};
use crate::upstream::Upstream;

/// Each step of the search for the highest sustained rate.
const SEARCH_STEP: Duration = Duration::from_secs(3);

/// The targets of the issue: peak RSS below this, and the admitted p99 overhead within
/// this factor of the sustained rate's.
const RSS_LIMIT_MIB: f64 = 100.0;
const P99_FACTOR: u64 = 2;

struct Options {
    vmx: PathBuf,
    seconds: u64,
    baseline_seconds: u64,
    rate: Option<u64>,
    /// Environment settings of each run (empty: the server's defaults).
    settings: Vec<Vec<(String, String)>>,
}

impl Options {
    fn parse(args: &[String]) -> BenchResult<Self> {
        let settings = match opt(args, "--settings") {
            None => vec![Vec::new()],
            Some(list) => list
                .split(';')
                .map(|run| {
                    run.split(',')
                        .filter(|kv| !kv.trim().is_empty())
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
                            None => Err(format!("--settings: '{kv}' is not NAME=value").into()),
                        })
                        .collect::<BenchResult<Vec<_>>>()
                })
                .collect::<BenchResult<_>>()?,
        };
        Ok(Self {
            vmx: PathBuf::from(opt(args, "--vmx").unwrap_or("target/release/vmx")),
            seconds: num(args, "--seconds", 30)?,
            baseline_seconds: num(args, "--baseline-seconds", 10)?,
            rate: opt(args, "--rate")
                .map(|r| {
                    r.parse()
                        .map_err(|_| format!("--rate: '{r}' is not a number"))
                })
                .transpose()?,
            settings,
        })
    }
}

fn vmx_target(vmx: &Vmx) -> Target {
    Target {
        name: "vmx".into(),
        url: format!("{}/v1/chat/completions", vmx.base),
        auth: vmx.api_key.clone(),
        model: format!("bench-instant/{MODEL}"),
    }
}

fn overhead(v: &RunStats, d: &RunStats, q: f64) -> u64 {
    v.p(q).saturating_sub(d.p(q))
}

pub async fn run(args: &[String]) -> BenchResult<String> {
    let o = Options::parse(args)?;
    let instant = Upstream::start(Duration::ZERO).await?;
    let delayed = Upstream::start(Duration::from_millis(20)).await?;
    // The lean client: reqwest would leave the generator short of twice the server's rate.
    let client = Client::raw();
    let direct = Target {
        name: "direct".into(),
        url: format!("{}/chat/completions", instant.base),
        auth: "sk-bench".into(),
        model: MODEL.into(),
    };
    let data = tempfile::tempdir()?;
    let warm = Duration::from_secs(1);
    open_loop(&client, &direct, 200, warm, false).await?;

    // The highest sustained rate, unless given: found once, on a server of its own with
    // the CPU shedding off (`VMX_SHED_LAG_MS=0`), so it is the server's capacity and not
    // what a shedding setting lets through.
    let sustained_rate = match o.rate {
        Some(r) => r,
        None => {
            let mut vmx = Vmx::start_with(
                &o.vmx,
                &data.path().join("vmx-capacity"),
                &instant,
                &delayed,
                None,
                &[("VMX_SHED_LAG_MS", "0".to_owned())],
                None,
            )
            .await?;
            let via_vmx = vmx_target(&vmx);
            open_loop(&client, &via_vmx, 200, warm, false).await?;
            let mut best = 500;
            let mut r = 1000;
            while r <= 40_000 {
                let v = open_loop(&client, &via_vmx, r, SEARCH_STEP, false).await?;
                if !v.sustained(r) {
                    break;
                }
                best = r;
                r = r * 5 / 4;
            }
            vmx.stop().await;
            best
        }
    };
    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    for (i, setting) in o.settings.iter().enumerate() {
        let log = data.path().join(format!("vmx-{i}.log"));
        let env: Vec<(&str, String)> = setting
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let mut vmx = Vmx::start_with(
            &o.vmx,
            &data.path().join(format!("vmx-{i}")),
            &instant,
            &delayed,
            None,
            &env,
            Some(&log),
        )
        .await?;
        let via_vmx = vmx_target(&vmx);
        open_loop(&client, &via_vmx, 200, warm, false).await?;
        let base_secs = Duration::from_secs(o.baseline_seconds);
        let d1 = open_loop(&client, &direct, sustained_rate, base_secs, false).await?;
        let v1 = open_loop(&client, &via_vmx, sustained_rate, base_secs, false).await?;
        let over = sustained_rate * 2;
        let d2 = open_loop(&client, &direct, over, base_secs, false).await?;
        let v2 = open_loop(
            &client,
            &via_vmx,
            over,
            Duration::from_secs(o.seconds),
            false,
        )
        .await?;
        let rss_mib = vmx.peak_rss_kib().map(|k| k as f64 / 1024.0);
        vmx.stop().await;
        let vmx_log = std::fs::read_to_string(&log).unwrap_or_default();
        let emfile = vmx_log.contains("Too many open files")
            || vmx_log.contains("accept error")
            || v2.first_error_contains("Too many open files");

        let sustained_p99 = overhead(&v1, &d1, 99.0);
        let admitted_p99 = overhead(&v2, &d2, 99.0);
        // An overhead is a difference of two runs' percentiles; when the direct run's p99
        // (the generator and the stub alone, their own pauses) is above vmx's, there is no
        // overhead figure, and the verdict compares vmx's own latencies instead.
        let overhead_measured = v1.p(99.0) > d1.p(99.0) && v2.p(99.0) > d2.p(99.0);
        let answered = v2.errors == v2.shed;
        let checks = [
            (
                rss_mib.is_some_and(|m| m < RSS_LIMIT_MIB),
                format!("peak RSS < {RSS_LIMIT_MIB} MiB"),
            ),
            (!emfile, "no EMFILE".to_owned()),
            (v2.connection_errors == 0, "no connection errors".to_owned()),
            (
                answered,
                "every request answered (admitted or 503)".to_owned(),
            ),
            if overhead_measured {
                (
                    admitted_p99 <= sustained_p99.max(1) * P99_FACTOR,
                    format!("admitted p99 overhead ≤ {P99_FACTOR}× the sustained rate's"),
                )
            } else {
                (
                    v2.p(99.0) <= v1.p(99.0) * P99_FACTOR,
                    format!(
                        "admitted p99 latency ≤ {P99_FACTOR}× the sustained rate's (the \
                         direct run's p99 was above vmx's, so no overhead figure)"
                    ),
                )
            },
        ];
        let mut limit_label = if setting.is_empty() {
            "defaults".to_owned()
        } else {
            setting
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        // The same setting again (to show the spread between runs): numbered.
        let earlier = o.settings[..i].iter().filter(|s| *s == setting).count();
        if earlier > 0 {
            limit_label = format!("{limit_label}, run {}", earlier + 1);
        }
        let failed: Vec<&str> = checks
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, what)| what.as_str())
            .collect();
        // Direct at twice the rate is the load generator (and stub) alone: when it cannot
        // keep that rate, the vmx run measured the generator as much as vmx.
        let generator = if d2.sustained(over) {
            String::new()
        } else {
            format!(
                " (the load generator did not keep up at {over}/s directly: achieved {:.0}/s, \
                 p99 {} ms; the 2× figures are of an overloaded generator, not a valid run)",
                d2.achieved,
                ms(d2.p(99.0))
            )
        };
        verdicts.push(format!(
            "- {limit_label}{generator}: {}",
            if failed.is_empty() {
                "every target met (peak RSS, no EMFILE, no connection errors, every request \
                 answered, admitted p99 overhead)"
                    .to_owned()
            } else {
                format!("NOT met: {}", failed.join("; "))
            }
        ));
        rows.push(vec![
            limit_label,
            format!("{sustained_rate} / {over}"),
            format!("{} / {}", ms(overhead(&v1, &d1, 50.0)), ms(sustained_p99)),
            format!(
                "{} / {} / {} / {} / {}",
                v2.sent,
                v2.admitted(),
                v2.shed,
                v2.errors - v2.shed - v2.connection_errors,
                v2.connection_errors
            ),
            format!("{:.0}", v2.achieved),
            format!("{} / {}", ms(overhead(&v2, &d2, 50.0)), ms(admitted_p99)),
            format!("{} / {}", ms(v1.p(99.0)), ms(v2.p(99.0))),
            rss_mib.map_or("unknown".into(), |m| format!("{m:.1}")),
            if emfile { "yes" } else { "no" }.to_owned(),
        ]);
    }

    let mut out = format!(
        "Open loop, non-streaming, instant upstream, requests sent by the bench's lean HTTP/1.1 \
         client (`bench/src/overhead/raw.rs`). The highest sustained rate (achieved ≥ \
         97 % of the rate, no errors, p99 < 50 ms; 3 s steps of ×1.25 from 1000/s, on a \
         server of its own with `VMX_SHED_LAG_MS=0`: its capacity, not what shedding lets \
         through) is measured for {b} s, then twice that rate is sent for {s} s. Overhead = vmx \
         percentile − direct percentile at the same rate ({b} s direct runs). At twice the \
         rate each request is admitted (200 and its whole body), shed (503, `Retry-After`, \
         `overloaded` error body) or failed (another answer, or none); the overhead figures \
         at 2× are of the admitted requests. An overhead of 0.000 means the direct run's \
         percentile (the load generator and the stub alone, with their own pauses) was above \
         vmx's: then the verdict compares vmx's own p99 latencies (the vmx p99 latency column) instead.\n\n",
        b = o.baseline_seconds,
        s = o.seconds,
    );
    out.push_str(&table(
        &[
            "server settings",
            "rate/s (sustained / 2×)",
            "sustained overhead p50 / p99 ms",
            "2×: sent / admitted / shed / other errors / connection errors",
            "2×: admitted/s",
            "2×: admitted overhead p50 / p99 ms",
            "vmx p99 latency ms: sustained / 2× admitted",
            "peak RSS MiB",
            "EMFILE",
        ],
        &rows,
    ));
    out.push('\n');
    out.push_str(&verdicts.join("\n"));
    out.push('\n');
    Ok(out)
}
