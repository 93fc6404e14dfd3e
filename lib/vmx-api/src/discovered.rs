//! Recording discovered limits with their history and event, for both writers: the
//! inference path (response headers, [`ChangeSource::Headers`]) and the limit refresh
//! ([`ChangeSource::Refresh`]).
//!
//! The store works out what changed against the entry it replaces and keeps it as history
//! (see `vmx_domain::discovered`); the changes it returns are then told to the
//! [`ChangeNotifier`] (EventBridge in AWS). Neither a store nor a notifier failure ever fails
//! the request or the refresh that observed the limits: both are logged.

use vmx_domain::connection::{Connection, DiscoveredModel};
use vmx_domain::discovered::ChangeSource;

use crate::gateway::Gateway;

impl Gateway {
    /// Records `entry` as `model`'s discovered capacity of `connection`, keeps the changes
    /// as history and tells the notifier of them. `true` when the store took the entry.
    pub async fn record_discovered(
        &self,
        connection: &Connection,
        model: &str,
        entry: &DiscoveredModel,
        source: ChangeSource,
    ) -> bool {
        let changes = match self
            .discovered
            .record_discovered(&connection.id, model, entry, source)
            .await
        {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, connection_id = %connection.id, "discovered capacity not stored");
                return false;
            }
        };
        if !changes.is_empty() {
            tracing::info!(
                connection_id = %connection.id,
                %model,
                changes = changes.len(),
                "discovered capacity changed"
            );
            if let Err(e) = self
                .notifier()
                .discovered_changed(&connection.id, &connection.name, &changes)
                .await
            {
                tracing::warn!(error = %e, connection_id = %connection.id, "discovered capacity change not notified");
            }
        }
        true
    }
}
