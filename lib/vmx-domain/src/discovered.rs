//! Writing the rate limits learned from provider responses
//! (`Connection.discovered_capacity.models[model]`).
//!
//! Discovered capacity is written by the inference path, concurrently with admin updates of
//! the same connection, so it is stored apart from the rest of the connection:
//! - recording a model's limits never changes the connection's `version` (an admin's
//!   `If-Match` keeps working) nor any admin-managed field;
//! - `ConnectionStore::replace` never changes discovered capacity: the `discovered_capacity`
//!   of the connection it is given is ignored (it is the copy the admin read, possibly
//!   stale), so an update cannot erase what was recorded meanwhile;
//! - `ConnectionStore::insert` stores the `discovered_capacity` it is given (normally empty);
//! - `ConnectionStore::get`, `get_by_name` and `list` return it merged into the connection;
//! - `ConnectionStore::delete` removes it with the connection.

use async_trait::async_trait;

use crate::Result;
use crate::connection::{AwsConfig, DiscoveredLimit, DiscoveredModel};

/// The one write of discovered capacity. Implemented by each connection store.
///
/// Invariants (checked by `vmx_conformance::store`):
/// - sets `discovered_capacity.models[model]` of the connection to `discovered`, unless the
///   stored entry's `updated_at` is later or equal (an older observation arriving late is
///   dropped, `Ok`);
/// - leaves every other model, every other field and the `version` as they are;
/// - `Error::NotFound` when the connection does not exist (also when deleted concurrently:
///   nothing is left behind).
#[async_trait]
pub trait DiscoveredCapacityStore: Send + Sync {
    async fn record_discovered(
        &self,
        connection_id: &str,
        model: &str,
        discovered: &DiscoveredModel,
    ) -> Result<()>;
}

/// Where the limit refresh reads a Bedrock model's limits: the account's Service Quotas for
/// the model in the connection's region, read through the connection's assumed role.
#[async_trait]
pub trait QuotaSource: Send + Sync {
    /// The on-demand (or, for an inference profile id, cross-Region) limits of `model`. The
    /// error is a message fit to store as the model's `errorMessage` (no AWS principal, no
    /// secret).
    async fn model_limits(
        &self,
        config: &AwsConfig,
        model: &str,
    ) -> std::result::Result<Vec<DiscoveredLimit>, String>;
}

/// Longest model id discovered capacity is kept for.
pub const MODEL_MAX_BYTES: usize = 512;

/// What every store checks before recording: a model id of 1 to [`MODEL_MAX_BYTES`] bytes.
pub fn validate_model(model: &str) -> Result<()> {
    if model.is_empty() || model.len() > MODEL_MAX_BYTES {
        return Err(crate::Error::invalid(
            "model",
            format!("must be 1-{MODEL_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}
