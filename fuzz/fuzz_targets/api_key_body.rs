//! `POST /v1/api-keys` bodies. No panic (date-times at the edge of the range included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vmx_domain::Error;
use vmx_domain::api_key::NewApiKey;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    match NewApiKey::parse(&body, now) {
        Ok(k) => assert!(k.expires_at.is_none_or(|t| t > now)),
        Err(Error::Invalid { field, .. }) => assert!(!field.is_empty()),
        Err(e) => panic!("not a validation error: {e:?}"),
    }
});
