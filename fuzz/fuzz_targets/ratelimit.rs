//! Provider rate-limit headers, given as `name: value` lines, for every provider; and
//! Gemini's 429 quota details, given as JSON. No panic; limits keep their invariants.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use vmx_domain::provider::ProviderKind;
use vmx_providers::ratelimit;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(&line[i + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    for kind in ProviderKind::ALL {
        for l in ratelimit::from_headers(kind, &headers) {
            assert!(
                l.reset
                    .as_ref()
                    .is_none_or(|r| !r.is_empty() && r.len() <= 64)
            );
        }
    }
    if let Ok(body) = serde_json::from_slice(data) {
        for l in ratelimit::gemini_quota_failure(&body) {
            assert_eq!(l.remaining, Some(0));
        }
    }
});
