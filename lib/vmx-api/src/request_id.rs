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

/// A new id: `req_` and a UUIDv7 in simple form (sortable by time). Its random bits come
/// from a per-thread SplitMix64 sequence seeded once from the OS (a request id is a label,
/// not a secret), instead of a `getrandom` system call per request.
pub fn generate() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let (a, b) = (next_random(), next_random());
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&a.to_le_bytes());
    random[8..].copy_from_slice(&b.to_le_bytes()[..2]);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    format!("req_{}", id.simple())
}

thread_local! {
    static RANDOM: std::cell::Cell<u64> =
        std::cell::Cell::new(u64::try_from(uuid::Uuid::new_v4().as_u128() >> 64).unwrap_or(0));
}

/// The next value of this thread's SplitMix64 sequence.
fn next_random() -> u64 {
    RANDOM.with(|state| {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
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

    #[test]
    fn generated_ids_are_uuid_v7_distinct_and_ordered_by_time() {
        let ids: Vec<String> = (0..10_000).map(|_| generate()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for id in &ids {
            let u = uuid::Uuid::parse_str(&id["req_".len()..]).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
        }
        // The first 12 hex digits are the milliseconds: never decreasing.
        assert!(ids.windows(2).all(|w| w[0][4..16] <= w[1][4..16]));
        let other = std::thread::spawn(generate).join().unwrap();
        assert!(!unique.contains(&other));
    }

    #[tokio::test]
    async fn the_current_id_is_set_inside_the_scope_only() {
        assert_eq!(current(), None);
        let inner = scope("r1".to_owned(), async { current() }).await;
        assert_eq!(inner.as_deref(), Some("r1"));
    }
}
