//! Provider rate-limit headers (and Gemini's 429 quota details) as [`DiscoveredLimit`]s, each
//! with the period it really applies to.
//!
//! | provider | headers | periods |
//! |---|---|---|
//! | OpenAI | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` | both per minute |
//! | Groq | the same names | `requests` per **day**, `tokens` per minute |
//! | Anthropic | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}` | all per minute |
//! | Perplexity | none documented; `x-ratelimit-*` read as OpenAI's if it sends them | per minute |
//! | Gemini | none on responses; a 429 body's `google.rpc.QuotaFailure` names each quota and its value | from the quota id (`PerMinute`, `PerDay`, ...) |
//!
//! Reset values are kept as the provider sent them (`6m0s`, `7.66s`, an RFC 3339 time).

use reqwest::header::HeaderMap;
use serde_json::Value;
use vmx_domain::capacity::Period;
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::provider::ProviderKind;

/// The limits a response's headers announce, for `kind`.
pub fn from_headers(kind: ProviderKind, headers: &HeaderMap) -> Vec<DiscoveredLimit> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::Perplexity | ProviderKind::Gemini => openai(headers),
        ProviderKind::Groq => groq(headers),
        ProviderKind::Anthropic => anthropic(headers),
        ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => Vec::new(),
    }
}

/// OpenAI: requests and tokens per minute.
pub fn openai(headers: &HeaderMap) -> Vec<DiscoveredLimit> {
    x_ratelimit(headers, Period::Minute, Period::Minute)
}

/// Groq: `x-ratelimit-limit-requests` is requests per DAY; `-tokens` is tokens per minute.
pub fn groq(headers: &HeaderMap) -> Vec<DiscoveredLimit> {
    x_ratelimit(headers, Period::Day, Period::Minute)
}

fn x_ratelimit(headers: &HeaderMap, requests: Period, tokens: Period) -> Vec<DiscoveredLimit> {
    let mut out = Vec::new();
    for (metric, period) in [("requests", requests), ("tokens", tokens)] {
        push_limit(
            &mut out,
            headers,
            period,
            metric,
            &format!("x-ratelimit-limit-{metric}"),
            &format!("x-ratelimit-remaining-{metric}"),
            &format!("x-ratelimit-reset-{metric}"),
        );
    }
    out
}

/// Anthropic: requests, tokens, input tokens and output tokens, per minute.
pub fn anthropic(headers: &HeaderMap) -> Vec<DiscoveredLimit> {
    let mut out = Vec::new();
    for metric in ["requests", "tokens", "input-tokens", "output-tokens"] {
        push_limit(
            &mut out,
            headers,
            Period::Minute,
            metric,
            &format!("anthropic-ratelimit-{metric}-limit"),
            &format!("anthropic-ratelimit-{metric}-remaining"),
            &format!("anthropic-ratelimit-{metric}-reset"),
        );
    }
    out
}

fn push_limit(
    out: &mut Vec<DiscoveredLimit>,
    headers: &HeaderMap,
    period: Period,
    metric: &str,
    limit: &str,
    remaining: &str,
    reset: &str,
) {
    let Some(limit) = header_u64(headers, limit) else {
        return;
    };
    out.push(DiscoveredLimit {
        period,
        metric: metric.to_owned(),
        limit,
        remaining: header_u64(headers, remaining),
        reset: header_str(headers, reset)
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(str::to_owned),
    });
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// A non-negative integer header (a fractional value is truncated).
fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    let s = header_str(headers, name)?;
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then_some(f as u64)
}

/// Gemini's 429 body: `error.details[]` with `@type` `google.rpc.QuotaFailure` lists the
/// violated quotas (`quotaId` such as `GenerateRequestsPerMinutePerProjectPerModel-FreeTier`,
/// and, when Google sends it, `quotaValue`). Only violations with a value become limits.
pub fn gemini_quota_failure(body: &Value) -> Vec<DiscoveredLimit> {
    let mut out = Vec::new();
    let Some(details) = body.pointer("/error/details").and_then(Value::as_array) else {
        return out;
    };
    for d in details {
        let is_quota = d
            .get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"));
        if !is_quota {
            continue;
        }
        for v in d
            .get("violations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(id) = v.get("quotaId").and_then(Value::as_str) else {
                continue;
            };
            let limit = match v.get("quotaValue") {
                Some(Value::String(s)) => s.parse::<u64>().ok(),
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            };
            let (Some(limit), Some(period)) = (limit, quota_period(id)) else {
                continue;
            };
            let metric = quota_metric(id);
            if out
                .iter()
                .any(|l: &DiscoveredLimit| l.period == period && l.metric == metric)
            {
                continue;
            }
            out.push(DiscoveredLimit {
                period,
                metric: metric.to_owned(),
                limit,
                remaining: Some(0),
                reset: None,
            });
        }
    }
    out
}

fn quota_period(id: &str) -> Option<Period> {
    if id.contains("PerMinute") {
        Some(Period::Minute)
    } else if id.contains("PerHour") {
        Some(Period::Hour)
    } else if id.contains("PerDay") {
        Some(Period::Day)
    } else {
        None
    }
}

fn quota_metric(id: &str) -> &'static str {
    if id.contains("InputTokens") {
        "input-tokens"
    } else if id.contains("OutputTokens") {
        "output-tokens"
    } else if id.contains("Tokens") {
        "tokens"
    } else {
        "requests"
    }
}
