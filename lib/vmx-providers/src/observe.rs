//! The provider's own request id of the current call, for the gateway's inference log line.
//!
//! The gateway opens a [`scope`] per request; the shared HTTP client ([`crate::http`])
//! [`record`]s the id from each provider response's headers (`x-request-id`, `request-id`,
//! `x-amzn-requestid`) into it, and the gateway reads it back with [`current`]. Outside a
//! scope, recording does nothing.

use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;

/// The headers providers name their request id in, in the order they are looked at.
pub const REQUEST_ID_HEADERS: [&str; 3] = ["x-request-id", "request-id", "x-amzn-requestid"];

/// The longest id kept; a longer one (or one with characters outside `A-Z a-z 0-9 - _ . :
/// /`) is not recorded.
const MAX_LEN: usize = 128;

tokio::task_local! {
    static SLOT: Arc<Mutex<Option<String>>>;
}

/// Runs `f` with an empty slot for the provider's request id.
pub async fn scope<F: Future>(f: F) -> F::Output {
    SLOT.scope(Arc::new(Mutex::new(None)), f).await
}

/// Records the provider's request id from its response headers, when there is one and a
/// scope is open (the last response of a request wins).
pub fn record(headers: &HeaderMap) {
    let Some(id) = REQUEST_ID_HEADERS.iter().find_map(|h| {
        headers
            .get(*h)
            .and_then(|v| v.to_str().ok())
            .filter(|s| is_safe(s))
    }) else {
        return;
    };
    let _ = SLOT.try_with(|slot| {
        if let Ok(mut s) = slot.lock() {
            *s = Some(id.to_owned());
        }
    });
}

/// The provider's request id recorded in the current scope.
pub fn current() -> Option<String> {
    SLOT.try_with(|slot| slot.lock().ok().and_then(|s| s.clone()))
        .ok()
        .flatten()
}

fn is_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_first_known_header_is_recorded_inside_a_scope_only() {
        let mut h = HeaderMap::new();
        h.insert("request-id", "req_abc".parse().unwrap());
        h.insert("x-amzn-requestid", "amzn-1".parse().unwrap());
        record(&h);
        assert_eq!(current(), None);
        let seen = scope(async {
            assert_eq!(current(), None);
            record(&h);
            current()
        })
        .await;
        assert_eq!(seen.as_deref(), Some("req_abc"));
        let mut bad = HeaderMap::new();
        bad.insert("x-request-id", "has space".parse().unwrap());
        let seen = scope(async {
            record(&bad);
            current()
        })
        .await;
        assert_eq!(seen, None);
    }
}
