//! Test support (feature `testing`): what the function crates' tests set up at moto before
//! they build a function: a fresh table with vmx's schema and a new KMS key.
#![allow(clippy::expect_used)]

use aws_config::SdkConfig;
use vmx_api::config::Config;

/// Creates a table (`<prefix>-<uuid>`, the schema of `vmx_aws::table`) and a KMS key at the
/// endpoint of `sdk`, and returns the function configuration naming them, plus `vars`.
/// Panics when moto refuses: it is test setup.
pub async fn config_at_moto(sdk: &SdkConfig, prefix: &str, vars: &[(&str, String)]) -> Config {
    let table = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    vmx_aws::table::ensure_table(&aws_sdk_dynamodb::Client::new(sdk), &table)
        .await
        .expect("create the table at moto");
    let key = aws_sdk_kms::Client::new(sdk)
        .create_key()
        .send()
        .await
        .expect("create a KMS key at moto");
    let key_id = key
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .expect("the new key's metadata");
    let mut all = vec![
        ("VMX_TABLE_NAME".to_owned(), table),
        ("VMX_KMS_KEY_ID".to_owned(), key_id),
    ];
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Config::from_vars(all).expect("a valid test configuration")
}
