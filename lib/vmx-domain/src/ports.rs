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
