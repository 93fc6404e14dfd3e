//! Ports: the narrow traits the application needs from the outside world. Each has one
//! adapter per backend (`vmx-local` for the embedded store, `vmx-aws` for DynamoDB and KMS,
//! `vmx-crypto` for envelope encryption).

use async_trait::async_trait;
use secrecy::SecretString;

use crate::Result;
use crate::connection::Connection;
use crate::secret::{DataKey, Envelope, SealContext, WrappedKey};

/// Where connections live.
///
/// Invariants every adapter keeps (the conformance suite in `tests/` checks them):
/// - names are unique: `insert` and a renaming `replace` fail with `Error::NameTaken`
///   atomically, with no window in which two connections hold one name;
/// - `replace` succeeds only if the stored version equals `expected_version`, else
///   `Error::VersionConflict` (or `NotFound` when gone);
/// - `list` returns connections in ascending id order, starting after `after`.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn insert(&self, connection: &Connection) -> Result<()>;
    async fn get(&self, id: &str) -> Result<Option<Connection>>;
    async fn get_by_name(&self, name: &str) -> Result<Option<Connection>>;
    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<Connection>>;
    /// Writes `next` over the stored connection, which had `previous.name`.
    async fn replace(
        &self,
        previous: &Connection,
        next: &Connection,
        expected_version: u64,
    ) -> Result<()>;
    /// Deletes a connection and its name; `Error::NotFound` when absent.
    async fn delete(&self, id: &str) -> Result<()>;
}

/// Wraps and unwraps data keys (KMS in AWS, a local master key otherwise). The context is
/// bound to the wrapped key: unwrapping with another context fails.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// A fresh data key and its wrapped form.
    async fn generate_data_key(&self, context: &SealContext<'_>) -> Result<(DataKey, WrappedKey)>;
    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &SealContext<'_>,
    ) -> Result<DataKey>;
}

/// Seals secrets into envelopes and opens them again.
#[async_trait]
pub trait SecretSealer: Send + Sync {
    async fn seal(&self, secret: &SecretString, context: &SealContext<'_>) -> Result<Envelope>;
    async fn open(&self, envelope: &Envelope, context: &SealContext<'_>) -> Result<SecretString>;
}

// ---------------------------------------------------------------------------------------
// Capacity ledger

use crate::admission::{
    Adjustment, Admission, AdmitRequest, CapacityUsage, Reservation, UsageRequest,
};
use time::OffsetDateTime;

/// Where capacity counters live (see [`crate::admission`] for the semantics).
///
/// Invariants every adapter keeps (the capacity conformance suite checks them):
/// - `admit` is atomic: it charges one request and the token reservation to every window
///   of the request, or to none; concurrent admissions never overshoot a limit;
/// - the charge is [`AdmitRequest::decide`] applied to one consistent snapshot of the
///   counters (so the output part is capped at what the windows have left);
/// - a request with no window is admitted without any write;
/// - counters are keyed by the window key, so a new window starts from zero with no reset;
///   lifetime counters never expire;
/// - a rejection is a normal outcome (`Ok(Admission::Rejected)`); `Err` is only for a
///   failing backend (`Error::Unavailable` when throttled or unreachable).
#[async_trait]
pub trait CapacityLedger: Send + Sync {
    /// Admits the request into all of its windows, or rejects it naming the window that
    /// tripped.
    async fn admit(&self, request: &AdmitRequest) -> Result<Admission>;

    /// Applies `adjustment` to the live windows of `reservation` (windows that ended
    /// before `now` are skipped: their counters are never read again). Counters never go
    /// below zero. Callers retry on `Err` (and log): a lost adjustment leaves the counters
    /// off the true totals.
    async fn adjust(
        &self,
        reservation: &Reservation,
        adjustment: Adjustment,
        now: OffsetDateTime,
    ) -> Result<()>;

    /// Current counters of the requested windows; for source-ip windows, the `top_n`
    /// busiest IPs and how many IPs have a counter.
    async fn usage(&self, request: &UsageRequest) -> Result<CapacityUsage>;

    /// Removes the counters of `connection_id`'s windows that ended at or before `now` (the
    /// ones admissions have not removed: a connection or an IP without traffic since), its
    /// lifetime counters too unless `keep_lifetime` (the connection still has a lifetime
    /// entry, enabled or not), and lets counter storage that holds nothing live expire.
    /// Returns how many counters were removed. Counters of live windows are never touched;
    /// safe alongside admissions (a lifetime counter that changed meanwhile is kept).
    async fn sweep(
        &self,
        connection_id: &str,
        keep_lifetime: bool,
        now: OffsetDateTime,
    ) -> Result<u64>;

    /// Raises the connection's configuration version: a number kept on the connection's
    /// counter storage that every admission writing it returns
    /// ([`crate::admission::Admitted::config_version`]), so that an instance holding the
    /// connection (or an API key reaching it) in cache sees an admin change at its next
    /// admission. A no-op where the ledger keeps none (one process, whose admin changes
    /// clear its own caches).
    async fn bump_config_version(&self, _connection_id: &str) -> Result<()> {
        Ok(())
    }

    /// Whether this ledger keeps configuration versions ([`Self::bump_config_version`]
    /// does something).
    fn keeps_config_version(&self) -> bool {
        false
    }
}
