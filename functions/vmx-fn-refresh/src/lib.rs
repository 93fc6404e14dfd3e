//! The scheduled limit refresh as a Lambda function: an EventBridge schedule invokes it; it
//! refreshes `discoveredCapacity` (see `vmx_api::refresh`) until shortly before its own
//! deadline and saves where to resume.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmx_api::config::Config;
use vmx_api::refresh::{RefreshOptions, RefreshReport, Refresher};
use vmx_aws::refresh_cursor::RefreshCursor;
use vmx_aws::service_quotas::{ServiceQuotas, ServiceQuotasOptions};
use vmx_aws::sts::{AssumedRoles, StsOptions};
use vmx_domain::Result;

/// Time kept back from the Lambda deadline to save the cursor and answer.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(10);

/// What a cold start builds once.
pub struct Function {
    refresher: Refresher,
    cursor: RefreshCursor,
}

impl Function {
    /// Builds the function over `sdk`; Bedrock limits come from Service Quotas through each
    /// connection's role, with `quotas` (the endpoint override is for tests).
    pub fn new(
        config: &Config,
        sdk: aws_config::SdkConfig,
        quotas: ServiceQuotasOptions,
    ) -> Result<Self> {
        let adapters = vmx_lambda::AwsAdapters::new(config, sdk.clone())?;
        let state = adapters.app_state(config, adapters.providers(config)?);
        let table = config.table_name.clone().unwrap_or_default();
        let roles = Arc::new(AssumedRoles::new(
            aws_sdk_sts::Client::new(&sdk),
            StsOptions::default(),
        ));
        let quotas = Arc::new(ServiceQuotas::new(&sdk, roles, quotas));
        Ok(Self {
            refresher: Refresher {
                gateway: state.gateway,
                quotas: Some(quotas),
                options: RefreshOptions {
                    probe_api_key_providers: config.refresh_probe,
                    ..RefreshOptions::default()
                },
            },
            cursor: RefreshCursor::new(aws_sdk_dynamodb::Client::new(&sdk), table),
        })
    }

    /// Handles one scheduled event; `time_left` is what the invocation has.
    pub async fn handle(&self, _event: Value, time_left: Duration) -> Result<RefreshReport> {
        let deadline = Instant::now() + time_left.saturating_sub(SAFETY_MARGIN);
        let start = self.cursor.load().await?;
        let report = self
            .refresher
            .run(start, deadline)
            .await
            .map_err(|e| vmx_domain::Error::internal(e.to_string()))?;
        self.cursor.save(report.resume_after.as_deref()).await?;
        tracing::info!(
            connections = report.connections,
            refreshed = report.refreshed,
            failed = report.failed,
            resumes = report.resume_after.is_some(),
            "limit refresh run"
        );
        Ok(report)
    }
}
