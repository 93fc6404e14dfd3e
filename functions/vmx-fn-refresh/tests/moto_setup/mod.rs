//! What the refresh function's tests share: the sample schedule event, and an SDK config,
//! table and KMS key at moto, with the function's configuration over them.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use serde_json::Value;
use vmx_api::config::Config;
use vmx_api::service::ConnectionService;
use vmx_aws::client::{AwsOptions, config_loader};

pub fn schedule_event() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/refresh/schedule.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub struct Aws {
    pub config: Config,
    pub sdk: SdkConfig,
    /// The admin use cases over the same table and key, to create and read connections.
    pub admin: Arc<ConnectionService>,
}

/// A fresh table and KMS key at moto (`None` when moto is not configured: the test skips),
/// and the function's configuration with `vars` added.
pub async fn aws(test: &str, vars: &[(&str, String)]) -> Option<Aws> {
    let moto = vmx_conformance::aws::moto(test)?;
    let sdk = config_loader(&AwsOptions::default())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(&moto)
        .load()
        .await;
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-refresh", vars).await;
    let admin = vmx_lambda::AwsAdapters::new(&config, sdk.clone())
        .unwrap()
        .app_state(&config, Default::default())
        .connections;
    Some(Aws { config, sdk, admin })
}
