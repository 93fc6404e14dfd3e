//! Request ids: the caller's `x-request-id` when it is a safe token, else one made here. The
//! router's outermost middleware ([`crate::router_with`]) sets it for the request's task; it
//! is returned in the `x-request-id` header of every response, in every JSON error body
//! (`error.request_id`), and in the request's and the inference's log lines.

use axum::http::{HeaderMap, HeaderValue};

/// The response and request header.
pub const HEADER: &str = "x-request-id";

/// The longest caller-sent id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// The caller's id if it is 1 to [`MAX_LEN`] characters of `A-Z a-z 0-9 - _ . : /` (no
/// spaces, quotes or control characters that could forge a log field), else a new one.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| is_acceptable(s))
        .map(str::to_owned)
        .unwrap_or_else(generate)
}

/// Whether a caller-sent id is kept as it is.
pub fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// A new id: `req_` and a UUIDv7 in simple form (sortable by time).
pub fn generate() -> String {
    format!("req_{}", uuid::Uuid::now_v7().simple())
}

/// Runs `f` with `id` as the current request id, and a slot for the provider's own request
/// id ([`vmx_providers::observe`]).
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    CURRENT.scope(id, vmx_providers::observe::scope(f)).await
}

/// The current request's id, inside [`scope`].
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Sets the `x-request-id` response header.
pub fn set_header(headers: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_safe_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123_x.y:z/w"));
        assert_eq!(from_headers(&h), "abc-123_x.y:z/w");
        for bad in ["", "has space", "quote\"", &"a".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert(HEADER, v);
            }
            let id = from_headers(&h);
            assert!(id.starts_with("req_") && id.len() == 36, "{bad:?} -> {id}");
        }
        assert!(is_acceptable(&"a".repeat(MAX_LEN)));
    }

    #[tokio::test]
    async fn the_current_id_is_set_inside_the_scope_only() {
        assert_eq!(current(), None);
        let inner = scope("r1".to_owned(), async { current() }).await;
        assert_eq!(inner.as_deref(), Some("r1"));
    }
}
