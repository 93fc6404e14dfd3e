//! Role assumption for the Bedrock connections: STS `AssumeRole` into the connection's
//! `iamRoleArn` with its `externalId`, and a process-wide cache of the temporary credentials.
//!
//! Cache policy:
//! - One entry per (role ARN, external id). Credentials are asked for `session_duration`
//!   (1 hour by default, the least maximum any role allows) and reused until
//!   `refresh_before` (5 minutes) before they expire, so a warm process makes **no STS call
//!   per request**: a request costs a read lock and an `Arc` clone.
//! - A refresh is single-flight per entry: the first caller that finds the entry stale takes
//!   the entry's async lock and calls STS; the others wait on the lock and then take what it
//!   stored (or the error it got), so N concurrent requests on a stale entry make one STS
//!   call, whether it succeeds or fails. Different roles refresh independently.
//! - A failed refresh while the old credentials are still valid (inside the refresh window)
//!   keeps serving them; once they have expired the failure is returned.
//! - Session names are `vmx-<16 hex digits of SHA-256(role ARN, external id)>`: a fixed
//!   prefix customers can match in trust policies and CloudTrail, stable per connection role.
//!
//! [`RoleCredentialsProvider`] implements the SDK's `ProvideCredentials` over this cache, so a
//! Bedrock runtime client can be built once per (role, region) and sign with the current
//! credentials of its role.
//!
//! Errors: STS `AccessDenied` becomes [`ProviderError::Unauthorized`] with status **401** and a
//! message telling the user to check the role's trust policy and the connection's
//! `externalId` (the STS message itself, which names vmx's own principal, is logged, not
//! returned). See `vmx_bedrock` for how the status tells it apart from Bedrock's own 403.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use aws_sdk_sts::Client;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use vmx_domain::clock::{Clock, SystemClock};
use vmx_domain::connection::AwsConfig;
use vmx_domain::inference::ProviderError;

use crate::error::{CallFailure, call_failure, is_throttling};

/// The fixed prefix of every role session name.
pub const SESSION_PREFIX: &str = "vmx-";

/// Tunables of the role credentials cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsOptions {
    /// `DurationSeconds` of `AssumeRole` (900 s to the role's maximum; 1 h is always allowed).
    pub session_duration: Duration,
    /// How long before expiry credentials are refreshed.
    pub refresh_before: Duration,
    /// Most roles kept; past that, stale entries are dropped (all of them if none is stale).
    pub max_roles: usize,
}

impl Default for StsOptions {
    fn default() -> Self {
        Self {
            session_duration: Duration::from_secs(3600),
            refresh_before: Duration::from_secs(300),
            max_roles: 10_000,
        }
    }
}

/// What credentials are cached by: the role and the external id it is assumed with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleKey {
    pub role_arn: String,
    /// Empty when the connection has none (then no `ExternalId` is sent).
    pub external_id: String,
}

impl RoleKey {
    pub fn new(role_arn: impl Into<String>, external_id: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            external_id: external_id.into(),
        }
    }

    pub fn of(config: &AwsConfig) -> Self {
        Self::new(&config.iam_role_arn, &config.external_id)
    }

    /// `vmx-` and 16 hex digits of a hash of the role and external id.
    pub fn session_name(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.role_arn.as_bytes());
        h.update([0u8]);
        h.update(self.external_id.as_bytes());
        let digest = h.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{SESSION_PREFIX}{hex}")
    }
}

/// Credentials of one role, with when to refresh them (on the cache's clock).
#[derive(Clone)]
struct Held {
    credentials: Credentials,
    refresh_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

/// The outcome of the last refresh, kept for the callers that waited on it.
#[derive(Default)]
struct RefreshState {
    last_error: Option<ProviderError>,
}

struct Entry {
    held: RwLock<Option<Held>>,
    /// Single flight: whoever holds this lock is the one refreshing.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Refresh attempts completed, to tell a waiter that one finished while it waited.
    attempts: AtomicU64,
}

impl Entry {
    fn new() -> Self {
        Self {
            held: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            attempts: AtomicU64::new(0),
        }
    }

    fn held(&self) -> Option<Held> {
        self.held.read().ok().and_then(|h| h.clone())
    }

    fn fresh(&self, now: OffsetDateTime) -> Option<Credentials> {
        self.held()
            .filter(|h| now < h.refresh_at)
            .map(|h| h.credentials)
    }
}

/// The process-wide cache of assumed-role credentials. Build one per process, share it.
pub struct AssumedRoles {
    sts: Client,
    options: StsOptions,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<RoleKey, Arc<Entry>>>,
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for AssumedRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumedRoles")
            .field("options", &self.options)
            .field("sts_calls", &self.sts_calls())
            .finish_non_exhaustive()
    }
}

impl AssumedRoles {
    /// A cache over `sts` (built from the process's SDK config: vmx's own identity assumes
    /// the customers' roles), on the wall clock.
    pub fn new(sts: Client, options: StsOptions) -> Self {
        Self::with_clock(sts, options, Arc::new(SystemClock))
    }

    /// Same, with the clock that decides freshness (tests move it forward).
    pub fn with_clock(sts: Client, options: StsOptions, clock: Arc<dyn Clock>) -> Self {
        Self {
            sts,
            options,
            clock,
            entries: Mutex::new(HashMap::new()),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `AssumeRole` calls made so far (each counted once whatever the SDK's retries).
    pub fn sts_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The counter behind [`Self::sts_calls`].
    pub fn call_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.calls)
    }

    pub fn options(&self) -> &StsOptions {
        &self.options
    }

    fn entry(&self, key: &RoleKey) -> Arc<Entry> {
        let Ok(mut entries) = self.entries.lock() else {
            // A poisoned map only means a panic elsewhere: serve from a fresh entry.
            return Arc::new(Entry::new());
        };
        if let Some(e) = entries.get(key) {
            return Arc::clone(e);
        }
        if entries.len() >= self.options.max_roles.max(1) {
            let now = self.clock.now();
            entries.retain(|_, e| e.fresh(now).is_some());
            if entries.len() >= self.options.max_roles.max(1) {
                entries.clear();
            }
        }
        let e = Arc::new(Entry::new());
        entries.insert(key.clone(), Arc::clone(&e));
        e
    }

    /// Current credentials of `key`'s role: from the cache when fresh, else from one
    /// `AssumeRole` shared by every concurrent caller.
    pub async fn credentials(&self, key: &RoleKey) -> Result<Credentials, ProviderError> {
        let entry = self.entry(key);
        if let Some(c) = entry.fresh(self.clock.now()) {
            return Ok(c);
        }
        let seen = entry.attempts.load(Ordering::Acquire);
        let mut state = entry.refresh.lock().await;
        let now = self.clock.now();
        if let Some(c) = entry.fresh(now) {
            return Ok(c);
        }
        if entry.attempts.load(Ordering::Acquire) != seen
            && let Some(e) = &state.last_error
        {
            // The refresh this caller waited for failed: share its outcome.
            return match entry.held().filter(|h| now < h.expires_at) {
                Some(h) => Ok(h.credentials),
                None => Err(e.clone()),
            };
        }
        let result = self.assume(key).await;
        entry.attempts.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(held) => {
                let c = held.credentials.clone();
                if let Ok(mut slot) = entry.held.write() {
                    *slot = Some(held);
                }
                state.last_error = None;
                Ok(c)
            }
            Err(e) => {
                state.last_error = Some(e.clone());
                match entry.held().filter(|h| now < h.expires_at) {
                    Some(h) => {
                        tracing::warn!(
                            role = %key.role_arn,
                            error = %e,
                            "refreshing assumed-role credentials failed; serving the current ones until they expire"
                        );
                        Ok(h.credentials)
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn assume(&self, key: &RoleKey) -> Result<Held, ProviderError> {
        let secs = i32::try_from(self.options.session_duration.as_secs())
            .unwrap_or(3600)
            .clamp(900, 43_200);
        let mut req = self
            .sts
            .assume_role()
            .role_arn(&key.role_arn)
            .role_session_name(key.session_name())
            .duration_seconds(secs);
        if !key.external_id.is_empty() {
            req = req.external_id(&key.external_id);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = req
            .send()
            .await
            .map_err(|e| sts_error(&key.role_arn, &call_failure(&e)))?;
        let Some(c) = out.credentials else {
            return Err(ProviderError::Malformed(
                "AWS STS AssumeRole returned no credentials".into(),
            ));
        };
        let expiry = SystemTime::try_from(c.expiration).map_err(|_| {
            ProviderError::Malformed("AWS STS AssumeRole returned an unreadable expiration".into())
        })?;
        // Anchor the lifetime on the cache's clock: what is left of it now, by the wall clock.
        let left = expiry
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let now = self.clock.now();
        let expires_at = now + left;
        let refresh_at = now + left.saturating_sub(self.options.refresh_before);
        Ok(Held {
            credentials: Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                Some(c.session_token),
                Some(expiry),
                "vmx-assume-role",
            ),
            refresh_at,
            expires_at,
        })
    }
}

/// STS failures as provider errors; never the raw SDK error.
fn sts_error(role_arn: &str, failure: &CallFailure) -> ProviderError {
    match failure {
        CallFailure::Service {
            code,
            message,
            request_id,
        } => {
            tracing::warn!(
                role = %role_arn,
                code = %code,
                message = %message,
                request_id = ?request_id,
                "STS AssumeRole failed"
            );
            match code.as_str() {
                "AccessDenied" | "AccessDeniedException" => ProviderError::Unauthorized {
                    status: 401,
                    message: format!(
                        "vmx could not assume the IAM role {role_arn} (STS AccessDenied): check \
                         that the role's trust policy allows vmx's AWS principal to call \
                         sts:AssumeRole with the condition sts:ExternalId equal to this \
                         connection's externalId, and that the connection's externalId is the \
                         one in the trust policy"
                    ),
                },
                "RegionDisabledException" => ProviderError::Unauthorized {
                    status: 401,
                    message: format!(
                        "vmx could not assume the IAM role {role_arn}: AWS STS is not activated \
                         in this region for the role's account (activate it in the IAM account \
                         settings)"
                    ),
                },
                "ValidationError" | "MalformedPolicyDocument" => ProviderError::BadRequest {
                    status: 400,
                    message: format!("AWS STS rejected AssumeRole on {role_arn}: {message}"),
                    param: Some("config.iamRoleArn".into()),
                    code: Some(code.clone()),
                },
                c if is_throttling(c) => ProviderError::RateLimited {
                    retry_after_secs: Some(1),
                    message: "AWS STS is throttling role assumption".into(),
                    limits: Vec::new(),
                },
                // vmx's own identity was refused: an operator problem, not the connection's.
                "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "IDPCommunicationError" => ProviderError::Upstream {
                    status: 503,
                    message: format!(
                        "AWS STS refused vmx's own credentials ({code}) while assuming {role_arn}"
                    ),
                },
                _ => ProviderError::Upstream {
                    status: 502,
                    message: format!("AWS STS AssumeRole on {role_arn} failed ({code})"),
                },
            }
        }
        CallFailure::Timeout => ProviderError::Timeout,
        CallFailure::Network(m) => ProviderError::Network(format!("AWS STS: {m}")),
        CallFailure::Unreadable => {
            ProviderError::Malformed("an unreadable AWS STS response".into())
        }
        CallFailure::Construction(m) => ProviderError::Upstream {
            status: 502,
            message: format!("the AWS STS request could not be built: {m}"),
        },
    }
}

/// The SDK's credentials provider for one role, reading from [`AssumedRoles`]. Give it to a
/// client built once per (role, region): every signing takes the role's current credentials.
#[derive(Clone)]
pub struct RoleCredentialsProvider {
    roles: Arc<AssumedRoles>,
    key: RoleKey,
}

impl RoleCredentialsProvider {
    pub fn new(roles: Arc<AssumedRoles>, key: RoleKey) -> Self {
        Self { roles, key }
    }
}

impl std::fmt::Debug for RoleCredentialsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleCredentialsProvider")
            .field("role_arn", &self.key.role_arn)
            .finish_non_exhaustive()
    }
}

impl ProvideCredentials for RoleCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.roles
                .credentials(&self.key)
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_name_has_prefix_and_is_stable() {
        let a = RoleKey::new("arn:aws:iam::123456789012:role/r", "ext-1");
        let b = RoleKey::new("arn:aws:iam::123456789012:role/r", "ext-2");
        assert!(a.session_name().starts_with(SESSION_PREFIX));
        assert_eq!(a.session_name().len(), SESSION_PREFIX.len() + 16);
        assert_eq!(a.session_name(), a.clone().session_name());
        assert_ne!(a.session_name(), b.session_name());
        assert!(
            a.session_name()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
    }

    #[test]
    fn access_denied_names_trust_policy_and_external_id() {
        let e = sts_error(
            "arn:aws:iam::1:role/r",
            &CallFailure::Service {
                code: "AccessDenied".into(),
                message: "User: arn:aws:sts::9:assumed-role/vmx/x is not authorized".into(),
                request_id: None,
            },
        );
        let ProviderError::Unauthorized { status, message } = e else {
            panic!("{e:?}");
        };
        assert_eq!(status, 401);
        assert!(message.contains("trust policy"));
        assert!(message.contains("externalId"));
        assert!(!message.contains("assumed-role/vmx"), "{message}");
    }
}
