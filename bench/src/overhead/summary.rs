//! The report's rows and the headline figures, with the verdicts on the targets.

use super::load::RunStats;
use crate::report::ms;

/// The headline figures and the targets.
#[derive(Default)]
pub(super) struct Summary {
    /// (rate, p99 overhead µs), non-streaming, instant upstream.
    pub(super) vmx_at: Vec<(u64, u64)>,
    pub(super) vmx_max: Option<u64>,
    /// (highest rate LiteLLM sustained, vmx p99 overhead µs, LiteLLM p99 overhead µs).
    pub(super) litellm_max: Option<(u64, u64, u64)>,
    pub(super) litellm_ran: bool,
}

impl Summary {
    pub(super) fn verdicts(&self, rss_kib: Option<u64>) -> String {
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

pub(super) fn row(label: &str, stream: bool, rate: u64, d: &RunStats, v: &RunStats) -> Vec<String> {
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

pub(super) fn overhead_ms(d: &RunStats, v: &RunStats, q: f64) -> String {
    let (a, b) = (v.p(q) as i64, d.p(q) as i64);
    format!("{:.3}", (a - b) as f64 / 1000.0)
}

pub(super) fn ratio(d: &RunStats, v: &RunStats, x: &RunStats) -> String {
    let vo = v.p(99.0).saturating_sub(d.p(99.0)).max(1);
    let xo = x.p(99.0).saturating_sub(d.p(99.0));
    format!("{:.0}x", xo as f64 / vo as f64)
}
