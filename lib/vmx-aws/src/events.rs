//! [`ChangeNotifier`] on Amazon EventBridge: one event per discovered-capacity change on the
//! bus `VMX_EVENT_BUS_NAME` names, so users can route it anywhere with a rule.
//!
//! Event: `source = vmx`, `detail-type = DiscoveredCapacityChanged`, `detail =
//! {connectionId, connectionName, model, period, metric, old, new, at, source}` (`old` or
//! `new` is `null` when the limit did not exist before or no longer does). One `PutEvents`
//! call carries up to ten changes; an entry EventBridge refuses (`FailedEntryCount`) makes
//! the call an error, which the caller logs.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::json;
use vmx_domain::connection::rfc3339;
use vmx_domain::discovered::{ChangeNotifier, DiscoveredChange};
use vmx_domain::{Error, Result};

use crate::error::{classify, default_error};

/// `source` of every event vmx sends.
pub const EVENT_SOURCE: &str = "vmx";
/// `detail-type` of a discovered-capacity change.
pub const DETAIL_TYPE_DISCOVERED: &str = "DiscoveredCapacityChanged";
/// Entries per `PutEvents` call (EventBridge's limit).
const ENTRIES_PER_CALL: usize = 10;

/// The EventBridge notifier. Build once per process (the client is shared).
#[derive(Clone, Debug)]
pub struct EventBridgeNotifier {
    client: Client,
    bus: String,
}

impl EventBridgeNotifier {
    pub fn new(client: Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    /// The notifier with its own client over the process's SDK configuration
    /// ([`crate::load_sdk_config`]: the shared HTTP client, retries and timeouts).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        Self::new(Client::new(sdk), bus)
    }
}

/// The `detail` of the event of one change.
pub fn detail(
    connection_id: &str,
    connection_name: &str,
    c: &DiscoveredChange,
) -> serde_json::Value {
    json!({
        "connectionId": connection_id,
        "connectionName": connection_name,
        "model": c.model,
        "period": c.period,
        "metric": c.metric,
        "old": c.old,
        "new": c.new,
        "at": rfc3339(c.at),
        "source": c.source,
    })
}

#[async_trait]
impl ChangeNotifier for EventBridgeNotifier {
    async fn discovered_changed(
        &self,
        connection_id: &str,
        connection_name: &str,
        changes: &[DiscoveredChange],
    ) -> Result<()> {
        for chunk in changes.chunks(ENTRIES_PER_CALL) {
            let entries = chunk
                .iter()
                .map(|c| {
                    PutEventsRequestEntry::builder()
                        .source(EVENT_SOURCE)
                        .detail_type(DETAIL_TYPE_DISCOVERED)
                        .event_bus_name(&self.bus)
                        .detail(detail(connection_id, connection_name, c).to_string())
                        .build()
                })
                .collect();
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| default_error("EventBridge PutEvents", classify(&e)))?;
            if out.failed_entry_count() > 0 {
                let code = out
                    .entries()
                    .iter()
                    .find_map(|e| e.error_code())
                    .unwrap_or("unknown");
                return Err(Error::internal(format!(
                    "EventBridge PutEvents: {} of {} entries failed ({code})",
                    out.failed_entry_count(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}
