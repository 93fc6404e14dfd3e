//! Shared helpers of the Bedrock tests: the moto endpoint (or a skip), SDK configs, and a stub
//! HTTP server that answers every request with one canned AWS error.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use vmx_aws::client::{AwsOptions, config_loader};

pub use vmx_conformance::aws::moto;

/// Retries fast enough for tests, still in standard mode with exponential backoff.
pub fn fast_options(max_attempts: u32) -> AwsOptions {
    AwsOptions {
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(30),
    }
}

/// An SDK config aimed at `endpoint` with dummy credentials, whatever the environment says.
pub async fn config_for(endpoint: &str, options: &AwsOptions) -> SdkConfig {
    config_loader(options)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await
}

pub use vmx_conformance::aws_stub::Stub;
