//! Shared helpers of the AWS adapter tests: the moto endpoint (or a skip), SDK configs, and a
//! stub HTTP server that answers every request with one canned AWS error.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
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

/// The SDK config as the server builds it, from the environment (`scripts/test.sh` points
/// `AWS_ENDPOINT_URL` at moto and sets dummy credentials).
pub async fn env_config() -> SdkConfig {
    vmx_aws::load_sdk_config(&fast_options(3)).await
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

/// A fresh table of the vmx schema with a unique name.
pub async fn fresh_table(client: &aws_sdk_dynamodb::Client) -> String {
    let name = format!("vmx-test-{}", uuid::Uuid::new_v4().simple());
    vmx_aws::table::ensure_table(client, &name)
        .await
        .expect("create table");
    name
}

pub use vmx_conformance::aws_stub::Stub;
