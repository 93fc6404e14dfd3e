//! Capacity entries. No panic; accepted entries keep their invariants and round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vmx_domain::Error;
use vmx_domain::capacity::parse_capacity;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_capacity(&value, "capacity") {
        Ok(entries) => {
            for (i, e) in entries.iter().enumerate() {
                assert!(e.requests.is_some() || e.tokens.is_some());
                assert!(
                    entries[..i]
                        .iter()
                        .all(|p| (p.period, p.dimension) != (e.period, e.dimension))
                );
            }
            let again = serde_json::to_value(&entries).ok();
            let reparsed = again.as_ref().map(|v| parse_capacity(v, "capacity"));
            assert!(matches!(reparsed, Some(Ok(ref r)) if *r == entries));
        }
        Err(Error::Invalid { field, .. }) => assert!(field.starts_with("capacity")),
        Err(e) => panic!("not a validation error: {e:?}"),
    }
});
