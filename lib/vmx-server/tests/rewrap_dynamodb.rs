//! `vmx rewrap --store dynamodb` against moto: envelopes sealed under one KMS key are moved
//! to the key `VMX_KMS_KEY_ID` names now, and a rerun finds nothing to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use vmx_api::service::ConnectionService;
use vmx_aws::{DynamoStore, KmsKeyProvider};
use vmx_crypto::EnvelopeSealer;
use vmx_domain::clock::SystemClock;
use vmx_domain::connection::ProviderConfig;
use vmx_domain::ports::ConnectionStore;
use vmx_domain::secret::ExposeSecret;

async fn create_key(kms: &aws_sdk_kms::Client) -> String {
    let out = kms.create_key().send().await.expect("create key");
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

/// `vmx rewrap --store dynamodb` with the moto endpoint and the Lambda variables.
fn rewrap(table: &str, key: &str) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmx"));
    cmd.args(["rewrap", "--store", "dynamodb"])
        .env_clear()
        .env("VMX_TABLE_NAME", table)
        .env("VMX_KMS_KEY_ID", key)
        .stdin(Stdio::null());
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command, not a server: it must exit on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("vmx rewrap did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[tokio::test]
async fn rewrap_moves_envelopes_to_the_current_kms_key() {
    if vmx_conformance::aws::moto("rewrap_moves_envelopes_to_the_current_kms_key").is_none() {
        return;
    }
    let sdk = vmx_aws::load_sdk_config(&vmx_aws::AwsOptions::default()).await;
    let (ddb, kms) = (
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_kms::Client::new(&sdk),
    );
    let table = format!(
        "vmx-rewrap-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    vmx_aws::table::ensure_table(&ddb, &table).await.unwrap();
    let (old_key, new_key) = (create_key(&kms).await, create_key(&kms).await);
    let store: Arc<dyn ConnectionStore> = Arc::new(DynamoStore::new(ddb.clone(), table.clone()));
    let sealer = |key: &str| {
        Arc::new(EnvelopeSealer::new(
            Arc::new(KmsKeyProvider::new(kms.clone(), key)),
            Duration::from_secs(60),
            100,
        ))
    };
    let old = ConnectionService::new(store.clone(), sealer(&old_key), Arc::new(SystemClock));
    let mut ids = Vec::new();
    for (name, secret) in [("a", "sk-kms-a"), ("b", "sk-kms-b")] {
        let c = old
            .create(&json!({"name": name, "provider": "openai", "config": {"apiKey": secret}}))
            .await
            .unwrap();
        ids.push((c.id, secret));
    }

    let first = rewrap(&table, &new_key);
    assert!(
        first.contains("rewrapped 2, already current 0, failed 0"),
        "{first}"
    );
    let second = rewrap(&table, &new_key);
    assert!(
        second.contains("rewrapped 0, already current 2, failed 0"),
        "{second}"
    );

    let new = ConnectionService::new(store.clone(), sealer(&new_key), Arc::new(SystemClock));
    for (id, secret) in ids {
        let c = store.get(&id).await.unwrap().unwrap();
        let ProviderConfig::ApiKey { api_key } = &c.config else {
            panic!("an API-key connection");
        };
        assert_eq!(api_key.key.kid, new_key, "re-wrapped under the new key");
        assert_eq!(c.version, 2, "one versioned replace");
        let opened = new.api_key(&c).await.unwrap().unwrap();
        assert_eq!(opened.expose_secret(), secret);
    }
}
