//! `GET /v1/connections/{id}/usage` query: `from`, `to` and `granularity` are the input's
//! first three lines (a missing line is an absent parameter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmx_domain::Error;
use vmx_domain::usage::UsageRange;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (from, to, granularity) = (lines.next(), lines.next(), lines.next());
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    match UsageRange::parse(from, to, granularity, now) {
        Ok(r) => assert!(r.from < r.to),
        Err(Error::Invalid { field, .. }) => {
            assert!(["from", "to", "granularity"].contains(&field.as_str()))
        }
        Err(e) => panic!("not a validation error: {e:?}"),
    }
});
