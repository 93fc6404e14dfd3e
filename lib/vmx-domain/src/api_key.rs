//! Gateway API keys: what callers of the inference API authenticate with.
//!
//! A key is `vmx_sk_`, 43 random base62 characters (256 bits from the operating system's
//! generator) and a 6-character checksum: the CRC-32 of everything before it, in base62
//! ([`key_shape`]). The checksum is not a secret; it lets the gateway refuse a made-up or
//! mistyped key without any store lookup (a random string passes it once in 2^32 tries).
//! Keys issued before the checksum existed are the same without its 6 characters
//! ([`KeyShape::Legacy`], 50 characters in all): they still authenticate, through a lookup.
//!
//! A key is shown once, at creation; what is stored is its SHA-256 ([`hash_key`]) and a
//! short [`prefix`](ApiKeyRecord::prefix) that identifies it in listings. Authentication
//! hashes the presented bearer token and looks the hash up ([`ApiKeyStore::find_by_hash`]):
//! the lookup is keyed by a hash of the secret, so its timing tells nothing about the
//! secret, and no stored value ever equals the key.

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::capacity::{CapacityEntry, parse_capacity};
use crate::connection::{has_id_form, rfc3339};
use crate::json::{Obj, type_name};
use crate::{Error, Result};

/// What every key starts with (recognisable by secret scanners and humans).
pub const KEY_PREFIX: &str = "vmx_sk_";
/// Random base62 characters after [`KEY_PREFIX`]: 62^43 > 2^256.
pub const KEY_RANDOM_CHARS: usize = 43;
/// Base62 characters of the checksum at the end of a key: 62^6 > 2^32 (a CRC-32).
pub const KEY_CHECKSUM_CHARS: usize = 6;
/// Length of a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS;
/// Length of a key issued before keys carried a checksum.
pub const LEGACY_KEY_LEN: usize = KEY_PREFIX.len() + KEY_RANDOM_CHARS;
/// Characters of a key shown in listings: `vmx_sk_` and 4 random ones, e.g. `vmx_sk_ab12`.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;
pub const NAME_MAX: usize = 128;
/// Longest connection id or name a key may be limited to (connection names are at most 128).
pub const CONNECTION_REF_MAX: usize = 128;
pub const CONNECTIONS_MAX: usize = 1000;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A stored API key. The key itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    /// UUID v7 (ascending in creation order, like connection ids).
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The first [`DISPLAY_PREFIX_LEN`] characters of the key, for identification.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key ([`hash_key`]).
    pub hash: String,
    /// Ids of the connections the key may use; `None`: every connection. Keys created
    /// through the API hold ids (the names or ids given at creation, resolved then), so a
    /// rename does not change what a key reaches. An entry without the form of an id
    /// ([`has_id_form`]) is a name, as keys stored before scopes were resolved hold: it
    /// still matches the connection of that name ([`ApiKeyRecord::allows`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    /// Coarse: written at most now and then ([`ApiKeyStore::mark_used`]), never per request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub last_used_at: Option<OffsetDateTime>,
    /// The key's own capacity entries (connection-wide ones only, see
    /// [`parse_key_capacity`]): enforced in the same admission as the connection's windows,
    /// per connection the key uses. Empty: no limit of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<CapacityEntry>,
}

/// Why a known key may not make a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyDenied {
    /// 401.
    #[error("the API key has been revoked")]
    Revoked,
    /// 401.
    #[error("the API key has expired")]
    Expired,
    /// The API answers it as a connection that does not exist (404), so a scoped key cannot
    /// tell which connections exist.
    #[error("the API key may not use this connection")]
    NotAllowed,
}

impl ApiKeyRecord {
    /// The key is neither revoked nor expired at `now`.
    pub fn check_active(&self, now: OffsetDateTime) -> std::result::Result<(), KeyDenied> {
        if self.revoked_at.is_some() {
            return Err(KeyDenied::Revoked);
        }
        if self.expires_at.is_some_and(|e| e <= now) {
            return Err(KeyDenied::Expired);
        }
        Ok(())
    }

    /// The key may use the connection with this id and name: an entry with the form of an
    /// id matches the id only; any other entry (a name, in keys stored before scopes were
    /// resolved to ids) matches the name. Connection names never have the form of an id.
    pub fn allows(&self, connection_id: &str, connection_name: &str) -> bool {
        match &self.connections {
            None => true,
            Some(list) => list.iter().any(|c| {
                if has_id_form(c) {
                    c.eq_ignore_ascii_case(connection_id)
                } else {
                    c == connection_name
                }
            }),
        }
    }

    /// [`check`]: active at `now` and allowed on the connection.
    pub fn check(
        &self,
        now: OffsetDateTime,
        connection_id: &str,
        connection_name: &str,
    ) -> std::result::Result<(), KeyDenied> {
        check(self, now, connection_id, connection_name)
    }

    /// The public view: everything but the hash. Absent optional fields are `null`.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "connections": self.connections,
            "createdAt": rfc3339(self.created_at),
            "expiresAt": self.expires_at.map(rfc3339),
            "revokedAt": self.revoked_at.map(rfc3339),
            "lastUsedAt": self.last_used_at.map(rfc3339),
            "capacity": self.capacity,
        })
    }
}

/// Validates an API key's `capacity` with the connection's validator
/// ([`parse_capacity`]: errors name the field, e.g. `capacity[0].period`); `null` is no
/// capacity. A key's entries are connection-wide: `dimension` is refused.
pub fn parse_key_capacity(value: &Value, path: &str) -> Result<Vec<CapacityEntry>> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    let entries = parse_capacity(value, path)?;
    if let Some(i) = entries.iter().position(|e| e.dimension.is_some()) {
        return Err(Error::invalid(
            format!("{path}[{i}].dimension"),
            "is not supported on an API key's capacity (a key's entries are per connection)",
        ));
    }
    Ok(entries)
}

/// A validated `PATCH /v1/api-keys/{id}` body: `{capacity: [entries] | null}` (`null` or
/// `[]` removes the key's own limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyPatch {
    pub capacity: Option<Vec<CapacityEntry>>,
}

impl ApiKeyPatch {
    pub fn parse(body: &Value) -> Result<Self> {
        let o = Obj::new(body, "")?;
        o.deny_unknown(&["capacity"])?;
        let capacity = match body.get("capacity") {
            None => None,
            Some(v) => Some(parse_key_capacity(v, "capacity")?),
        };
        Ok(Self { capacity })
    }
}

/// Whether `record` may call the connection `connection_id`/`connection_name` at `now`:
/// revoked first, then expired (both 401), then not allowed (answered as a 404 by the API).
pub fn check(
    record: &ApiKeyRecord,
    now: OffsetDateTime,
    connection_id: &str,
    connection_name: &str,
) -> std::result::Result<(), KeyDenied> {
    record.check_active(now)?;
    if !record.allows(connection_id, connection_name) {
        return Err(KeyDenied::NotAllowed);
    }
    Ok(())
}

/// Lowercase hex SHA-256 of a presented or generated key: what stores are keyed by.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// What a presented token can be, from its characters alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShape {
    /// A key with a checksum, and the checksum matches: worth a lookup.
    Checked,
    /// A key issued before keys carried a checksum (`vmx_sk_` and 43 base62 characters):
    /// nothing but a lookup can tell whether it exists.
    Legacy,
}

/// The shape of a bearer token, or `None` when it cannot be a key (wrong prefix, length or
/// alphabet, or a checksum that does not match): then no lookup is needed to reject it.
pub fn key_shape(token: &str) -> Option<KeyShape> {
    let body = token.strip_prefix(KEY_PREFIX)?;
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match token.len() {
        KEY_LEN => {
            let (head, sum) = token.split_at(KEY_LEN - KEY_CHECKSUM_CHARS);
            (sum.as_bytes() == checksum(head)).then_some(KeyShape::Checked)
        }
        LEGACY_KEY_LEN => Some(KeyShape::Legacy),
        _ => None,
    }
}

/// Whether a bearer token may be a gateway key ([`key_shape`] is not `None`).
pub fn looks_like_key(token: &str) -> bool {
    key_shape(token).is_some()
}

/// The CRC-32 (IEEE) of `head` as 6 base62 digits, most significant first.
fn checksum(head: &str) -> [u8; KEY_CHECKSUM_CHARS] {
    let mut n = crc32fast::hash(head.as_bytes());
    let mut out = [b'0'; KEY_CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A freshly generated key: the secret (shown once), its display prefix and its hash.
pub struct GeneratedKey {
    pub key: SecretString,
    pub prefix: String,
    pub hash: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("key", &"[redacted]")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Draws a new key from the operating system's random generator: `vmx_sk_` + 43 base62
/// characters (rejection sampling, so every character is uniform).
pub fn generate_key() -> Result<GeneratedKey> {
    let mut key = zeroize::Zeroizing::new(String::with_capacity(KEY_LEN));
    key.push_str(KEY_PREFIX);
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    while key.len() < LEGACY_KEY_LEN {
        getrandom::fill(buf.as_mut())
            .map_err(|e| Error::internal(format!("random generator: {e}")))?;
        for b in buf.iter() {
            // 248 = 4 * 62: bytes at or above it would bias the low characters.
            if *b < 248 && key.len() < LEGACY_KEY_LEN {
                key.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    for c in checksum(&key) {
        key.push(char::from(c));
    }
    let prefix = key[..DISPLAY_PREFIX_LEN].to_owned();
    let hash = hash_key(&key);
    Ok(GeneratedKey {
        key: SecretString::from(key.as_str().to_owned()),
        prefix,
        hash,
    })
}

/// A validated `POST /v1/api-keys` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: Option<String>,
    pub connections: Option<Vec<String>>,
    pub expires_at: Option<OffsetDateTime>,
    pub capacity: Vec<CapacityEntry>,
}

impl NewApiKey {
    /// Validates `{name?: string, connections?: [string], expiresAt?: RFC 3339 after now,
    /// capacity?: [entries]}` (`capacity`: [`parse_key_capacity`]).
    /// Errors name the field (`connections[2]`, `expiresAt`). `connections` holds what the
    /// caller wrote (ids or names); the caller resolves each to a connection id
    /// before issuing the key (an unknown one is refused naming `connections[i]`).
    pub fn parse(body: &Value, now: OffsetDateTime) -> Result<Self> {
        let o = Obj::new(body, "")?;
        o.deny_unknown(&["name", "connections", "expiresAt", "capacity"])?;
        let name = match o.str_opt("name")? {
            None => None,
            Some(n) => {
                let len = n.chars().count();
                if n.trim().is_empty() {
                    return Err(Error::invalid("name", "must not be empty"));
                }
                if len > NAME_MAX {
                    return Err(Error::invalid(
                        "name",
                        format!("must be at most {NAME_MAX} characters"),
                    ));
                }
                if n.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "name",
                        "must not contain control characters",
                    ));
                }
                Some(n.to_owned())
            }
        };
        let connections = match o.array_opt("connections")? {
            None => None,
            Some(items) => Some(parse_connections(items)?),
        };
        let expires_at = match o.str_opt("expiresAt")? {
            None => None,
            Some(s) => {
                // `checked_to_offset`: 9999-12-31T23:59:59-01:00 is past year 9999 in UTC,
                // which `to_offset` would panic on.
                let t = OffsetDateTime::parse(s, &Rfc3339)
                    .ok()
                    .and_then(|t| t.checked_to_offset(time::UtcOffset::UTC))
                    .ok_or_else(|| {
                        Error::invalid(
                            "expiresAt",
                            "must be an RFC 3339 date-time such as 2030-01-31T00:00:00Z",
                        )
                    })?;
                if t <= now {
                    return Err(Error::invalid("expiresAt", "must be in the future"));
                }
                Some(t)
            }
        };
        let capacity = match body.get("capacity") {
            None => Vec::new(),
            Some(v) => parse_key_capacity(v, "capacity")?,
        };
        Ok(Self {
            name,
            connections,
            expires_at,
            capacity,
        })
    }

    /// Generates the key and builds its record. Returns the record to store and the key to
    /// show once.
    pub fn issue(self, id: String, now: OffsetDateTime) -> Result<(ApiKeyRecord, SecretString)> {
        let generated = generate_key()?;
        Ok((self.into_record(id, &generated, now), generated.key))
    }

    /// The record of `generated` with this body's settings.
    pub fn into_record(
        self,
        id: String,
        generated: &GeneratedKey,
        now: OffsetDateTime,
    ) -> ApiKeyRecord {
        ApiKeyRecord {
            id,
            name: self.name,
            prefix: generated.prefix.clone(),
            hash: generated.hash.clone(),
            connections: self.connections,
            created_at: now,
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
            capacity: self.capacity,
        }
    }
}

fn parse_connections(items: &[Value]) -> Result<Vec<String>> {
    if items.is_empty() {
        return Err(Error::invalid(
            "connections",
            "must list at least one connection (omit it to allow every connection)",
        ));
    }
    if items.len() > CONNECTIONS_MAX {
        return Err(Error::invalid(
            "connections",
            format!("at most {CONNECTIONS_MAX} connections are allowed"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("connections[{i}]");
        let Value::String(s) = item else {
            return Err(Error::invalid(
                path,
                format!(
                    "must be a connection id or name (a string), got {}",
                    type_name(item)
                ),
            ));
        };
        if s.trim().is_empty()
            || s.chars().count() > CONNECTION_REF_MAX
            || s.chars().any(char::is_control)
            || s.contains('/')
        {
            return Err(Error::invalid(
                path,
                format!(
                    "must be a connection id or name: 1-{CONNECTION_REF_MAX} printable characters, no '/'"
                ),
            ));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// Where API keys live.
///
/// Invariants every adapter keeps (the conformance suite `vmx_conformance::api_keys` checks
/// them):
/// - `find_by_hash` is one keyed lookup (no scan) and strongly consistent: a revocation is
///   seen by the next lookup;
/// - `insert` fails (`Error::Internal`) when the id or the hash is already stored, and then
///   stores nothing;
/// - `list` returns keys in ascending id order, starting after `after`;
/// - `revoke` sets `revoked_at` once (a second revocation keeps the first time) and returns
///   the record; `mark_used` only ever moves `last_used_at` forward; `set_capacity`
///   replaces `capacity` (seen by the next `find_by_hash`); none changes any other field;
///   all are `Error::NotFound` for an absent key, as is `delete`.
#[async_trait]
pub trait ApiKeyStore: crate::prioritization::PrioritizationStore + Send + Sync {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()>;
    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>>;
    /// The key whose [`hash_key`] is `hash` (lowercase hex).
    async fn find_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;
    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes the key (idempotent) and returns it as stored afterwards.
    async fn revoke(&self, id: &str, at: OffsetDateTime) -> Result<ApiKeyRecord>;
    /// Sets `last_used_at` to `at` unless it is already later. Call it rarely (the gateway:
    /// at most once a minute per key and process), never per request.
    async fn mark_used(&self, id: &str, at: OffsetDateTime) -> Result<()>;
    /// Removes the key for good.
    async fn delete(&self, id: &str) -> Result<()>;
    /// Replaces the key's own capacity entries and returns the key as stored afterwards;
    /// `Error::NotFound` for an absent key. Changes no other field.
    async fn set_capacity(&self, id: &str, capacity: Vec<CapacityEntry>) -> Result<ApiKeyRecord>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn field<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => format!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let g = generate_key().unwrap_or_else(|e| unreachable!("{e}"));
            let key = g.key.expose_secret();
            assert_eq!(key_shape(key), Some(KeyShape::Checked), "shape");
            assert_eq!(key.len(), KEY_LEN);
            assert_eq!(g.prefix, key[..DISPLAY_PREFIX_LEN]);
            assert_eq!(g.hash, hash_key(key));
            assert_eq!(g.hash.len(), 64);
            assert!(seen.insert(key.to_owned()), "keys are unique");
            assert!(!format!("{g:?}").contains(key), "Debug redacts the key");
        }
    }

    #[test]
    fn hash_is_lowercase_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn looks_like_key_rejects_other_tokens() {
        let g = generate_key().unwrap_or_else(|e| unreachable!("{e}"));
        let ok = g.key.expose_secret().to_owned();
        assert!(looks_like_key(&ok));
        assert!(!looks_like_key(&ok[..ok.len() - 1]));
        assert!(!looks_like_key(&format!("{ok}a")));
        assert!(!looks_like_key(&ok.replace("vmx_sk_", "vmx_pk_")));
        assert!(!looks_like_key(&format!("{}-", &ok[..ok.len() - 1])));
        assert!(!looks_like_key(""));
        // A legacy key: the shape of keys issued before the checksum.
        let legacy = format!("{KEY_PREFIX}{}", "a".repeat(KEY_RANDOM_CHARS));
        assert_eq!(key_shape(&legacy), Some(KeyShape::Legacy));
        assert!(!looks_like_key(&format!(
            "{}-",
            &legacy[..legacy.len() - 1]
        )));
    }

    #[test]
    fn the_checksum_catches_every_single_character_change() {
        let g = generate_key().unwrap_or_else(|e| unreachable!("{e}"));
        let key = g.key.expose_secret();
        for i in KEY_PREFIX.len()..KEY_LEN {
            for c in BASE62.iter().map(|b| char::from(*b)) {
                if key[i..].starts_with(c) {
                    continue;
                }
                let mut changed = key.to_owned();
                changed.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
                assert_eq!(key_shape(&changed), None, "position {i}, {c}");
            }
        }
    }

    #[test]
    fn the_checksum_is_crc32_in_base62() {
        // The CRC-32 check value: "123456789" gives 0xCBF43926, 3jZRME in base62.
        assert_eq!(&checksum("123456789"), b"3jZRME");
        assert_eq!(&checksum(""), b"000000");
    }

    #[test]
    fn create_body_validation_names_the_field() {
        let n = now();
        let ok = NewApiKey::parse(
            &json!({"name": "ci", "connections": ["prod", "a", "prod"], "expiresAt": "2099-01-01T00:00:00+02:00"}),
            n,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(ok.name.as_deref(), Some("ci"));
        assert_eq!(
            ok.connections,
            Some(vec!["prod".to_owned(), "a".to_owned()])
        );
        assert_eq!(
            ok.expires_at.map(|t| t.offset()),
            Some(time::UtcOffset::UTC)
        );
        let empty = NewApiKey::parse(&json!({}), n).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            empty,
            NewApiKey {
                name: None,
                connections: None,
                expires_at: None,
                capacity: Vec::new(),
            }
        );
        let nulls = NewApiKey::parse(
            &json!({"name": null, "connections": null, "expiresAt": null}),
            n,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(nulls, empty);

        let cases = [
            (json!([]), "body"),
            (json!({"nmae": "x"}), "nmae"),
            (json!({"name": 1}), "name"),
            (json!({"name": " "}), "name"),
            (json!({"name": "x".repeat(129)}), "name"),
            (json!({"name": "a\nb"}), "name"),
            (json!({"connections": "prod"}), "connections"),
            (json!({"connections": []}), "connections"),
            (json!({"connections": ["ok", 3]}), "connections[1]"),
            (json!({"connections": ["ok", ""]}), "connections[1]"),
            (json!({"connections": ["a/b"]}), "connections[0]"),
            (json!({"connections": ["x".repeat(129)]}), "connections[0]"),
            (json!({"expiresAt": 5}), "expiresAt"),
            (json!({"expiresAt": "tomorrow"}), "expiresAt"),
            (json!({"expiresAt": "2000-01-01T00:00:00Z"}), "expiresAt"),
        ];
        for (body, expected) in cases {
            assert_eq!(field(NewApiKey::parse(&body, n)), expected, "{body}");
        }
        let many: Vec<String> = (0..=CONNECTIONS_MAX).map(|i| format!("c{i}")).collect();
        assert_eq!(
            field(NewApiKey::parse(&json!({ "connections": many }), n)),
            "connections"
        );
    }

    #[test]
    fn issue_builds_a_record_without_the_key() {
        let body = NewApiKey::parse(&json!({"name": "k", "connections": ["a"]}), now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let (record, key) = body
            .issue("0190-id".to_owned(), now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let key = key.expose_secret();
        assert_eq!(record.hash, hash_key(key));
        assert!(key.starts_with(&record.prefix));
        let stored = serde_json::to_string(&record).unwrap_or_default();
        assert!(!stored.contains(key), "the record never holds the key");
        let view = record.view().to_string();
        assert!(!view.contains(&record.hash), "the view hides the hash");
        assert!(view.contains("\"prefix\""));
    }

    const CONN_ID: &str = "0190c0de-0000-7000-8000-00000000000a";
    const OTHER_ID: &str = "0190c0de-0000-7000-8000-00000000000b";

    fn record() -> ApiKeyRecord {
        ApiKeyRecord {
            id: "id-1".to_owned(),
            name: None,
            prefix: "vmx_sk_abcd".to_owned(),
            hash: hash_key("x"),
            connections: Some(vec![CONN_ID.to_owned(), "prod".to_owned()]),
            created_at: now(),
            expires_at: Some(now() + Duration::hours(1)),
            revoked_at: None,
            last_used_at: None,
            capacity: Vec::new(),
        }
    }

    #[test]
    fn check_orders_revoked_expired_not_allowed() {
        let r = record();
        let n = now();
        assert_eq!(check(&r, n, CONN_ID, "other-name"), Ok(()));
        assert_eq!(
            check(&r, n, &CONN_ID.to_ascii_uppercase(), "other-name"),
            Ok(())
        );
        assert_eq!(check(&r, n, OTHER_ID, "prod"), Ok(()), "a stored name");
        assert_eq!(
            check(&r, n, OTHER_ID, "staging"),
            Err(KeyDenied::NotAllowed)
        );
        assert_eq!(
            r.check(n + Duration::hours(1), CONN_ID, "prod"),
            Err(KeyDenied::Expired)
        );
        let mut revoked = r.clone();
        revoked.revoked_at = Some(n);
        assert_eq!(
            revoked.check(n + Duration::hours(2), "x", "y"),
            Err(KeyDenied::Revoked)
        );
        let mut all = r;
        all.connections = None;
        all.expires_at = None;
        assert_eq!(all.check(n + Duration::days(9999), "any", "thing"), Ok(()));
    }

    /// An id entry matches the id only, never a connection that took the id as its name;
    /// a name entry (stored before scopes held ids) matches the name only.
    #[test]
    fn id_entries_match_ids_and_name_entries_names() {
        let mut r = record();
        r.connections = Some(vec![CONN_ID.to_owned()]);
        assert!(r.allows(CONN_ID, "renamed"));
        assert!(
            !r.allows(OTHER_ID, CONN_ID),
            "an impostor named like the id"
        );
        r.connections = Some(vec!["prod".to_owned()]);
        assert!(r.allows(OTHER_ID, "prod"));
        assert!(!r.allows("prod", "staging"));
    }

    #[test]
    fn record_serde_round_trips() {
        let mut r = record();
        r.name = Some("n".to_owned());
        r.revoked_at = Some(now() + Duration::nanoseconds(123));
        r.last_used_at = Some(now());
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: ApiKeyRecord =
            serde_json::from_str(&json).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back, r);
    }
}
