//! Unit tests: the SSE decoder (including random chunk splits), rate-limit header mapping,
//! and secret scrubbing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use vmx_domain::capacity::Period;
use vmx_domain::connection::DiscoveredLimit;
use vmx_domain::provider::ProviderKind;
use vmx_providers::ratelimit;
use vmx_providers::scrub_secret;
use vmx_providers::sse::{SseDecoder, SseError, SseEvent};

// ---------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------

fn decode_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    for c in chunks {
        d.push(c).unwrap();
        while let Some(e) = d.next_event() {
            out.push(e);
        }
    }
    out
}

fn decode(input: &[u8]) -> Vec<SseEvent> {
    decode_chunks(&[input])
}

fn ev(event: Option<&str>, data: &str) -> SseEvent {
    SseEvent {
        event: event.map(str::to_owned),
        data: data.to_owned(),
        id: None,
    }
}

#[test]
fn sse_basic_events_and_fields() {
    let events = decode(b"data: one\n\nevent: message_start\ndata: {\"a\":1}\n\n");
    assert_eq!(
        events,
        vec![ev(None, "one"), ev(Some("message_start"), "{\"a\":1}")]
    );
}

#[test]
fn sse_multiline_data_is_joined_with_newlines() {
    let events = decode(b"data: line 1\ndata: line 2\ndata:\ndata:line 4\n\n");
    assert_eq!(events, vec![ev(None, "line 1\nline 2\n\nline 4")]);
}

#[test]
fn sse_comments_and_unknown_fields_are_ignored() {
    let events = decode(b": keep-alive\n\n:another\nretry: 100\nfoo: bar\ndata: x\n\n");
    assert_eq!(events, vec![ev(None, "x")]);
}

#[test]
fn sse_all_line_endings() {
    let lf = decode(b"event: a\ndata: 1\n\ndata: 2\n\n");
    let crlf = decode(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n");
    let cr = decode(b"event: a\rdata: 1\r\rdata: 2\r\r");
    let mixed = decode(b"event: a\r\ndata: 1\n\rdata: 2\r\n\n");
    assert_eq!(lf, vec![ev(Some("a"), "1"), ev(None, "2")]);
    assert_eq!(crlf, lf);
    assert_eq!(cr, lf);
    assert_eq!(mixed, lf);
}

#[test]
fn sse_crlf_split_between_chunks_is_one_line_end() {
    // "\r" ends one chunk, "\n" starts the next: one line ending, not two (which would
    // dispatch an empty event boundary too early).
    let events = decode_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, vec![ev(None, "a\nb")]);
}

#[test]
fn sse_bom_value_space_and_id() {
    let events = decode("\u{feff}id: 7\ndata:no-space\n\ndata:  two spaces\n\n".as_bytes());
    assert_eq!(events[0].data, "no-space");
    assert_eq!(events[0].id.as_deref(), Some("7"));
    assert_eq!(
        events[1].data, " two spaces",
        "only one leading space is removed"
    );
    assert_eq!(
        events[1].id.as_deref(),
        Some("7"),
        "the last id carries over"
    );
}

#[test]
fn sse_event_without_data_is_not_dispatched() {
    let events = decode(b"event: ping\n\ndata: x\n\n");
    assert_eq!(events, vec![ev(None, "x")], "the type is reset, too");
}

#[test]
fn sse_finish_reports_an_unterminated_event() {
    let mut d = SseDecoder::new(1024);
    d.push(b"data: complete\n\ndata: partial").unwrap();
    assert_eq!(d.next_event().unwrap().data, "complete");
    assert!(d.next_event().is_none());
    assert!(d.finish(), "a cut inside an event is reported");
    let mut d = SseDecoder::new(1024);
    d.push(b"data: complete\n\n").unwrap();
    assert!(!d.finish());
}

#[test]
fn sse_bounds_lines_and_events() {
    let mut d = SseDecoder::new(16);
    assert_eq!(
        d.push(b"data: 0123456789abcdefghij"),
        Err(SseError::TooLarge { limit: 16 })
    );
    assert!(d.push(b"\n\n").is_err(), "the decoder stays failed");
    let mut d = SseDecoder::new(16);
    d.push(b"data: 0123456789\n").unwrap();
    assert!(
        d.push(b"data: 0123456789\n").is_err(),
        "multi-line data is bounded too"
    );
}

#[test]
fn sse_invalid_utf8_is_an_error() {
    let mut d = SseDecoder::new(1024);
    assert_eq!(d.push(b"data: \xff\xfe\n\n"), Err(SseError::InvalidUtf8));
}

/// xorshift64*: deterministic pseudo-random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A stream exercising everything: events of three providers, every line ending, comments,
/// multi-line data, multi-byte UTF-8, empty data lines.
fn corpus() -> (Vec<u8>, Vec<SseEvent>) {
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let endings: [&[u8]; 3] = [b"\n", b"\r\n", b"\r"];
    let texts = [
        r#"{"choices":[{"delta":{"content":"héllo wörld ✓"}}]}"#,
        r#"{"type":"content_block_delta","delta":{"text":"日本語のテキスト 🎉"}}"#,
        "[DONE]",
        "multi\nline",
        "",
        r#"{"candidates":[{"content":{"parts":[{"text":"Ωmega"}]}}]}"#,
    ];
    for i in 0..60 {
        let nl = endings[i % 3];
        let text = texts[i % texts.len()];
        if i % 4 == 0 {
            input.extend_from_slice(b": keep-alive");
            input.extend_from_slice(nl);
        }
        let event = (i % 5 == 1).then(|| format!("event_{i}"));
        if let Some(e) = &event {
            input.extend_from_slice(format!("event: {e}").as_bytes());
            input.extend_from_slice(nl);
        }
        for line in text.split('\n') {
            input.extend_from_slice(b"data: ");
            input.extend_from_slice(line.as_bytes());
            input.extend_from_slice(nl);
        }
        input.extend_from_slice(nl);
        expected.push(SseEvent {
            event,
            data: text.to_owned(),
            id: None,
        });
    }
    (input, expected)
}

#[test]
fn sse_random_chunk_boundaries_give_the_same_events() {
    let (input, expected) = corpus();
    assert_eq!(decode(&input), expected, "whole input");
    let byte_by_byte: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_chunks(&byte_by_byte), expected, "one byte at a time");
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        while at < input.len() {
            // Sizes 0..=12, so empty chunks, single bytes and splits inside "\r\n" and inside
            // multi-byte characters all happen.
            let n = rng.below(13).min(input.len() - at);
            chunks.push(&input[at..at + n]);
            at += n;
        }
        assert_eq!(decode_chunks(&chunks), expected, "seed {seed}");
    }
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.insert(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn limit(
    period: Period,
    metric: &str,
    limit: u64,
    remaining: Option<u64>,
    reset: Option<&str>,
) -> DiscoveredLimit {
    DiscoveredLimit {
        period,
        metric: metric.into(),
        limit,
        remaining,
        reset: reset.map(str::to_owned),
    }
}

const OPENAI_STYLE: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "14400"),
    ("x-ratelimit-remaining-requests", "14370"),
    ("x-ratelimit-reset-requests", "2m59.56s"),
    ("x-ratelimit-limit-tokens", "18000"),
    ("x-ratelimit-remaining-tokens", "17997"),
    ("x-ratelimit-reset-tokens", "7.66s"),
];

#[test]
fn openai_limits_are_per_minute() {
    assert_eq!(
        ratelimit::openai(&headers(&OPENAI_STYLE)),
        vec![
            limit(
                Period::Minute,
                "requests",
                14400,
                Some(14370),
                Some("2m59.56s")
            ),
            limit(Period::Minute, "tokens", 18000, Some(17997), Some("7.66s")),
        ]
    );
}

#[test]
fn groq_requests_are_per_day_and_tokens_per_minute() {
    assert_eq!(
        ratelimit::from_headers(ProviderKind::Groq, &headers(&OPENAI_STYLE)),
        vec![
            limit(
                Period::Day,
                "requests",
                14400,
                Some(14370),
                Some("2m59.56s")
            ),
            limit(Period::Minute, "tokens", 18000, Some(17997), Some("7.66s")),
        ]
    );
}

#[test]
fn anthropic_limits_have_four_metrics() {
    let reset = "2025-06-01T12:00:30Z";
    let mut pairs = Vec::new();
    let owned: Vec<(String, String)> = [
        ("requests", 50),
        ("tokens", 80_000),
        ("input-tokens", 40_000),
        ("output-tokens", 8000),
    ]
    .iter()
    .flat_map(|(m, l)| {
        [
            (format!("anthropic-ratelimit-{m}-limit"), l.to_string()),
            (
                format!("anthropic-ratelimit-{m}-remaining"),
                (l / 2).to_string(),
            ),
            (format!("anthropic-ratelimit-{m}-reset"), reset.to_owned()),
        ]
    })
    .collect();
    for (n, v) in &owned {
        pairs.push((n.as_str(), v.as_str()));
    }
    assert_eq!(
        ratelimit::from_headers(ProviderKind::Anthropic, &headers(&pairs)),
        vec![
            limit(Period::Minute, "requests", 50, Some(25), Some(reset)),
            limit(Period::Minute, "tokens", 80_000, Some(40_000), Some(reset)),
            limit(
                Period::Minute,
                "input-tokens",
                40_000,
                Some(20_000),
                Some(reset)
            ),
            limit(
                Period::Minute,
                "output-tokens",
                8000,
                Some(4000),
                Some(reset)
            ),
        ]
    );
}

#[test]
fn partial_or_invalid_headers() {
    // Only a limit: kept without remaining and reset. Garbage: ignored.
    assert_eq!(
        ratelimit::openai(&headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "lots"),
            ("x-ratelimit-remaining-tokens", "5"),
        ])),
        vec![limit(Period::Minute, "requests", 60, None, None)]
    );
    assert!(ratelimit::anthropic(&HeaderMap::new()).is_empty());
    assert!(ratelimit::from_headers(ProviderKind::AwsBedrock, &headers(&OPENAI_STYLE)).is_empty());
}

#[test]
fn gemini_quota_failure_details() {
    let body = json!({ "error": { "code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            { "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "quotaValue": "15" },
            { "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier", "quotaValue": "1000000" },
            { "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier", "quotaValue": "1500" },
            { "quotaId": "SomethingWithoutAValuePerMinute" },
        ]},
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s" },
    ]}});
    assert_eq!(
        ratelimit::gemini_quota_failure(&body),
        vec![
            limit(Period::Minute, "requests", 15, Some(0), None),
            limit(Period::Minute, "input-tokens", 1_000_000, Some(0), None),
            limit(Period::Day, "requests", 1500, Some(0), None),
        ]
    );
    assert!(ratelimit::gemini_quota_failure(&json!({ "error": {} })).is_empty());
}

// ---------------------------------------------------------------------------------------
// Scrubbing
// ---------------------------------------------------------------------------------------

const SECRET: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123";

#[test]
fn scrub_removes_the_key_and_its_variants() {
    let cases = [
        format!("Incorrect API key provided: {SECRET}."),
        format!("key={}", SECRET.replace('-', "%2D")),
        format!("Bearer {SECRET}"),
        "Incorrect API key provided: sk-proj-********************0123.".to_owned(),
        format!("prefix {} only", &SECRET[..16]),
        format!("suffix {} only", &SECRET[SECRET.len() - 12..]),
        format!("{SECRET}{SECRET}"),
        format!("json: {{\"key\":\"{SECRET}\"}}"),
    ];
    for text in cases {
        let out = scrub_secret(&text, SECRET);
        assert!(out.contains("[REDACTED]"), "{text} -> {out}");
        assert!(!out.contains(SECRET), "{out}");
        for w in SECRET.as_bytes().windows(8) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!out.contains(w), "{w} in {out}");
        }
        assert!(!out.contains("0123."), "masked tail in {out}");
    }
}

#[test]
fn scrub_keeps_the_rest_of_the_message() {
    let text = format!(
        "Rate limit reached for gpt-4o in organization org-1 (key {SECRET}): try again in 7s."
    );
    let out = scrub_secret(&text, SECRET);
    assert_eq!(
        out,
        "Rate limit reached for gpt-4o in organization org-1 (key [REDACTED]): try again in 7s."
    );
    assert_eq!(
        scrub_secret("nothing secret here", SECRET),
        "nothing secret here"
    );
    assert_eq!(scrub_secret("unicode ✓ stays", SECRET), "unicode ✓ stays");
    // A short key is still removed where it appears whole.
    assert_eq!(scrub_secret("k=abc!", "abc"), "k=[REDACTED]!");
    assert_eq!(scrub_secret("anything", ""), "anything");
}
