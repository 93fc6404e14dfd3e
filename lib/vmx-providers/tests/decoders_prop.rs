//! Property tests of what vmx reads from providers (issue 8, hostile input): the SSE decoder
//! on arbitrary bytes cut into arbitrary chunks, and the rate-limit header and Gemini quota
//! parsers on arbitrary values. No panics; the decoder's output does not depend on how the
//! bytes were cut and equals a plain reference decoder; bounds hold.
//!
//! (There is no event-stream decoder of our own to test here: the Bedrock adapters read AWS
//! event streams through the AWS SDK.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use proptest::test_runner::Config;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use vmx_domain::capacity::Period;
use vmx_domain::provider::ProviderKind;
use vmx_providers::ratelimit;
use vmx_providers::sse::{SseDecoder, SseError, SseEvent};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// SSE

/// Bytes that are mostly SSE: field names, separators, every line ending, a BOM, JSON-ish
/// data, multi-byte characters (whole and cut) and invalid UTF-8.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            &b"data: "[..], b"data:", b"data", b"event: ", b"event:ping", b"id: ", b"id:7",
            b"id: a\0b", b"retry: 10", b": keep-alive", b":", b"\n", b"\r", b"\r\n", b"\n\n",
            b"\r\n\r\n", b"\r\r", b" ", b"{\"a\":1}", b"[DONE]", b"message_stop", b"\xEF\xBB\xBF",
            b"\xC3\xA9", b"\xC3", b"\xA9", b"\xF0\x9F\x98\x80", b"\xFF", b"x", b"hello world",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

/// `input` cut at `cuts` (positions modulo its length; repeated cuts give empty chunks).
fn chunks(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at {
        out.push(input[prev..c].to_vec());
        prev = c;
    }
    out.push(input[prev..].to_vec());
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    events: Vec<SseEvent>,
    error: Option<SseError>,
    /// What `finish` said (only when no error).
    pending: Option<bool>,
}

fn decode(chunks: &[Vec<u8>], max: usize) -> Decoded {
    let mut d = SseDecoder::new(max);
    let mut events = Vec::new();
    for c in chunks {
        let r = d.push(c);
        while let Some(e) = d.next_event() {
            events.push(e);
        }
        if let Err(e) = r {
            // Failed for good: the next push fails the same way and yields nothing.
            assert_eq!(d.push(b"data: more\n\n"), Err(e.clone()));
            assert_eq!(d.next_event(), None);
            return Decoded {
                events,
                error: Some(e),
                pending: None,
            };
        }
    }
    Decoded {
        events,
        error: None,
        pending: Some(d.finish()),
    }
}

/// The WHATWG algorithm written plainly over the whole input (no size bound).
fn reference(input: &[u8]) -> Decoded {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        lines.push(&rest[..i]);
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    let (mut events, mut event, mut data, mut has_data, mut id) = (
        Vec::new(),
        None::<String>,
        String::new(),
        false,
        None::<String>,
    );
    for (n, mut line) in lines.into_iter().enumerate() {
        if n == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if has_data {
                events.push(SseEvent {
                    event: event.take(),
                    data: std::mem::take(&mut data),
                    id: id.clone(),
                });
                has_data = false;
            }
            event = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
            ),
            None => (line, &b""[..]),
        };
        let Ok(value) = std::str::from_utf8(value) else {
            return Decoded {
                events,
                error: Some(SseError::InvalidUtf8),
                pending: None,
            };
        };
        match field {
            b"data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            b"event" => event = Some(value.to_owned()),
            b"id" if !value.contains('\0') => id = Some(value.to_owned()),
            _ => {}
        }
    }
    Decoded {
        events,
        error: None,
        pending: Some(!rest.is_empty() || has_data || event.is_some()),
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any cut of the bytes decodes exactly like the whole, and like the reference.
    #[test]
    fn sse_chunking_does_not_matter(
        input in prop_oneof![3 => sse_bytes(), 1 => prop::collection::vec(any::<u8>(), 0..256)],
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let max = 1 << 20;
        let whole = decode(std::slice::from_ref(&input), max);
        let cut = decode(&chunks(&input, &cuts), max);
        prop_assert_eq!(&cut, &whole);
        let one_by_one: Vec<Vec<u8>> = input.iter().map(|b| vec![*b]).collect();
        prop_assert_eq!(&decode(&one_by_one, max), &whole);
        prop_assert_eq!(&reference(&input), &whole);
    }

    /// With a small bound, no event larger than the bound ever comes out, whatever the cut.
    #[test]
    fn sse_bound_holds(
        input in sse_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        max in 1usize..48,
    ) {
        let d = decode(&chunks(&input, &cuts), max);
        for e in &d.events {
            prop_assert!(e.data.len() <= max, "{} > {max}", e.data.len());
        }
        // An input without a line longer than the bound and without an event larger than it
        // decodes as without a bound.
        let unbounded = decode(std::slice::from_ref(&input), 1 << 20);
        if d.error.is_none() {
            prop_assert_eq!(&d.events, &unbounded.events);
        }
    }
}

#[test]
fn sse_too_large_is_an_error_on_any_cut() {
    let big = format!("data: {}\n\n", "x".repeat(100));
    for cut in 0..big.len() {
        let d = decode(&chunks(big.as_bytes(), &[cut]), 50);
        assert_eq!(d.error, Some(SseError::TooLarge { limit: 50 }), "cut {cut}");
        assert!(d.events.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Rate-limit headers

const HEADER_NAMES: [&str; 18] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "100", " 42 ", "18446744073709551615", "18446744073709551616", "-1", "1.9",
            "1e3", "1e400", "NaN", "inf", "-0.0", "", "6m0s", "7.66s", "2025-01-01T00:00:00Z",
            "\t7\t", "0x10", "+5",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<f64>().prop_map(|f| f.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..80),
    ]
}

fn headers() -> impl Strategy<Value = (HeaderMap, Vec<(String, Vec<u8>)>)> {
    prop::collection::vec(
        (prop::sample::select(HEADER_NAMES.to_vec()), header_value()),
        0..24,
    )
    .prop_map(|pairs| {
        let mut map = HeaderMap::new();
        let mut kept = Vec::new();
        for (name, value) in pairs {
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                map.insert(HeaderName::from_static(name), v);
                kept.push((name.to_owned(), value));
            }
        }
        (map, kept)
    })
}

fn expected_period(kind: ProviderKind, metric: &str) -> Period {
    match (kind, metric) {
        (ProviderKind::Groq, "requests") => Period::Day,
        _ => Period::Minute,
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn rate_limit_headers((map, _) in headers(), kind in prop::sample::select(ProviderKind::ALL.to_vec())) {
        let limits = ratelimit::from_headers(kind, &map);
        let prefix = match kind {
            ProviderKind::Anthropic => "anthropic-ratelimit-",
            ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => {
                prop_assert!(limits.is_empty());
                return Ok(());
            }
            _ => "x-ratelimit-",
        };
        for l in &limits {
            prop_assert!(
                ["requests", "tokens", "input-tokens", "output-tokens"].contains(&l.metric.as_str())
            );
            prop_assert_eq!(l.period, expected_period(kind, &l.metric));
            if let Some(r) = &l.reset {
                prop_assert!(!r.is_empty() && r.len() <= 64 && r.trim() == r);
            }
            let limit_name = if prefix == "x-ratelimit-" {
                format!("x-ratelimit-limit-{}", l.metric)
            } else {
                format!("anthropic-ratelimit-{}-limit", l.metric)
            };
            let raw = map.get(&limit_name).and_then(|v| v.to_str().ok()).map(str::trim);
            prop_assert!(raw.is_some(), "a limit only comes from its header");
            if let Some(Ok(n)) = raw.map(str::parse::<u64>) {
                prop_assert_eq!(l.limit, n);
            }
        }
        let mut metrics: Vec<&str> = limits.iter().map(|l| l.metric.as_str()).collect();
        metrics.dedup();
        prop_assert_eq!(metrics.len(), limits.len(), "one limit per metric");
    }

    #[test]
    fn gemini_quota_failure(body in gemini_body()) {
        let limits = ratelimit::gemini_quota_failure(&body);
        for (i, l) in limits.iter().enumerate() {
            prop_assert_eq!(l.remaining, Some(0));
            prop_assert!(matches!(l.period, Period::Minute | Period::Hour | Period::Day));
            prop_assert!(limits[..i].iter().all(|p| (p.period, &p.metric) != (l.period, &l.metric)));
        }
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "GenerateContentInputTokensPerModelPerDay",
            "GenerateContentOutputTokensPerHour",
            "TokensPerMinute",
            "PerWeek",
            "type.googleapis.com/google.rpc.QuotaFailure",
            "type.googleapis.com/google.rpc.RetryInfo",
            "15",
            "-3",
            "1e3",
        ])
        .prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("error".to_owned()),
                        Just("details".to_owned()),
                        Just("@type".to_owned()),
                        Just("violations".to_owned()),
                        Just("quotaId".to_owned()),
                        Just("quotaValue".to_owned()),
                        any::<String>(),
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn gemini_body() -> impl Strategy<Value = Value> {
    let violation = (
        json_leaf(),
        prop_oneof![json_leaf(), any::<u64>().prop_map(Value::from)],
    )
        .prop_map(|(id, value)| json!({"quotaId": id, "quotaValue": value}));
    let detail = (json_leaf(), prop::collection::vec(violation, 0..5))
        .prop_map(|(t, v)| json!({"@type": t, "violations": v}));
    prop_oneof![
        3 => prop::collection::vec(detail, 0..4).prop_map(|d| json!({"error": {"details": d}})),
        1 => any_json(),
    ]
}
