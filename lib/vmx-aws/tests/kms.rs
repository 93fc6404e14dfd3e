//! KmsKeyProvider against moto (real KMS wire protocol), and against a stub for the errors
//! moto does not produce (disabled key, access denied, throttling).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;

use aws_sdk_kms::Client;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use vmx_aws::KmsKeyProvider;
use vmx_domain::Error;
use vmx_domain::ports::KeyProvider;
use vmx_domain::secret::{SealContext, WrappedKey};

use common::{Stub, config_for, env_config, fast_options, moto};

const CTX: SealContext<'static> = SealContext {
    connection_id: "0190c0de-0000-7000-8000-000000000001",
    field: "apiKey",
};

async fn moto_kms(test: &str) -> Option<Client> {
    moto(test)?;
    Some(Client::new(&env_config().await))
}

async fn create_key(client: &Client) -> String {
    let out = client
        .create_key()
        .description("vmx test key")
        .send()
        .await
        .expect("create key");
    out.key_metadata()
        .expect("metadata")
        .arn()
        .expect("arn")
        .to_owned()
}

#[tokio::test]
async fn round_trip_with_context_and_counter() {
    let Some(client) = moto_kms("round_trip_with_context_and_counter").await else {
        return;
    };
    let arn = create_key(&client).await;
    // Configured by alias, as a deployment would.
    let alias = format!("alias/vmx-test-{}", uuid::Uuid::new_v4().simple());
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&arn)
        .send()
        .await
        .expect("alias");
    let provider = KmsKeyProvider::new(client.clone(), &alias);
    let counter = provider.call_counter();
    assert_eq!(provider.calls(), 0);

    let (key, wrapped) = provider.generate_data_key(&CTX).await.expect("generate");
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    assert_eq!(
        wrapped.kid, arn,
        "the wrapped key names the key ARN, not the alias"
    );
    let blob = B64.decode(&wrapped.blob).expect("base64 blob");
    assert!(!blob.is_empty());
    assert!(
        !blob.windows(32).any(|w| w == key.expose()),
        "the wrapped blob does not contain the plaintext key"
    );

    let again = provider
        .decrypt_data_key(&wrapped, &CTX)
        .await
        .expect("decrypt");
    assert_eq!(again.expose(), key.expose());
    assert_eq!(counter.load(Ordering::SeqCst), 2);

    // Two data keys differ.
    let (other, other_wrapped) = provider.generate_data_key(&CTX).await.expect("generate");
    assert_ne!(other.expose(), key.expose());
    assert_ne!(other_wrapped.blob, wrapped.blob);
    assert_eq!(provider.calls(), 3);

    // Clones share the counter.
    let clone = provider.clone();
    clone
        .decrypt_data_key(&wrapped, &CTX)
        .await
        .expect("decrypt");
    assert_eq!(provider.calls(), 4);
    assert_eq!(counter.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wrong_context_or_tampered_blob_is_crypto_error() {
    let Some(client) = moto_kms("wrong_context_or_tampered_blob_is_crypto_error").await else {
        return;
    };
    let arn = create_key(&client).await;
    let provider = KmsKeyProvider::new(client, &arn);
    let (key, wrapped) = provider.generate_data_key(&CTX).await.expect("generate");
    let key_b64 = B64.encode(key.expose());

    let check = |what: &str, result: vmx_domain::Result<vmx_domain::secret::DataKey>| {
        let err = result.expect_err(what);
        assert!(matches!(err, Error::Crypto { .. }), "{what}: {err:?}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&key_b64), "{what}: error leaks the key");
        assert!(
            !text.contains(&wrapped.blob),
            "{what}: error leaks the blob"
        );
    };

    let other_connection = SealContext {
        connection_id: "0190c0de-0000-7000-8000-000000000002",
        field: CTX.field,
    };
    check(
        "other connection",
        provider.decrypt_data_key(&wrapped, &other_connection).await,
    );
    let other_field = SealContext {
        connection_id: CTX.connection_id,
        field: "secretAccessKey",
    };
    check(
        "other field",
        provider.decrypt_data_key(&wrapped, &other_field).await,
    );

    let mut bytes = B64.decode(&wrapped.blob).expect("base64");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = WrappedKey {
        kid: wrapped.kid.clone(),
        blob: B64.encode(&bytes),
    };
    check("tampered", provider.decrypt_data_key(&tampered, &CTX).await);

    let not_base64 = WrappedKey {
        kid: wrapped.kid.clone(),
        blob: "not base64!".to_owned(),
    };
    check(
        "not base64",
        provider.decrypt_data_key(&not_base64, &CTX).await,
    );

    // Right context still works.
    provider
        .decrypt_data_key(&wrapped, &CTX)
        .await
        .expect("decrypt");
}

/// A wrapped key as if stored earlier; its blob must never show in an error.
fn stored_wrapped() -> WrappedKey {
    WrappedKey {
        kid: "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
            .to_owned(),
        blob: B64.encode(b"wrapped-data-key-ciphertext-bytes-0123456789"),
    }
}

async fn stub_provider(stub: &Stub, attempts: u32) -> KmsKeyProvider {
    let config = config_for(&stub.url, &fast_options(attempts)).await;
    KmsKeyProvider::new(Client::new(&config), "alias/vmx")
}

fn assert_no_material(err: &Error, wrapped: &WrappedKey) {
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(&wrapped.blob),
        "error leaks the blob: {text}"
    );
    assert!(
        !text.contains("wrapped-data-key-ciphertext"),
        "error leaks the ciphertext: {text}"
    );
}

#[tokio::test]
async fn unusable_key_is_unavailable_without_retry_hint() {
    let wrapped = stored_wrapped();
    for (status, code) in [
        (400, "DisabledException"),
        (400, "AccessDeniedException"),
        (400, "KMSInvalidStateException"),
        (400, "NotFoundException"),
    ] {
        let stub = Stub::kms_error(status, code, "the key cannot be used").await;
        let provider = stub_provider(&stub, 3).await;

        let err = provider
            .decrypt_data_key(&wrapped, &CTX)
            .await
            .expect_err("decrypt");
        match &err {
            Error::Unavailable {
                retry_after_secs: None,
                detail,
            } => assert!(detail.contains(code), "{code}: {detail}"),
            other => panic!("{code}: expected Unavailable without retry hint, got {other:?}"),
        }
        assert_no_material(&err, &wrapped);

        let err = provider
            .generate_data_key(&CTX)
            .await
            .expect_err("generate");
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    retry_after_secs: None,
                    ..
                }
            ),
            "{code}: {err:?}"
        );
        assert_eq!(stub.requests(), 2, "{code}: not retried");
        assert_eq!(provider.calls(), 2);
        let targets: Vec<String> = stub.seen().into_iter().map(|s| s.target).collect();
        assert_eq!(
            targets,
            vec!["TrentService.Decrypt", "TrentService.GenerateDataKey"]
        );
    }
}

#[tokio::test]
async fn invalid_ciphertext_from_the_wire_is_crypto() {
    let wrapped = stored_wrapped();
    for code in ["InvalidCiphertextException", "IncorrectKeyException"] {
        let stub = Stub::kms_error(400, code, "").await;
        let provider = stub_provider(&stub, 3).await;
        let err = provider
            .decrypt_data_key(&wrapped, &CTX)
            .await
            .expect_err("decrypt");
        assert!(matches!(err, Error::Crypto { .. }), "{code}: {err:?}");
        assert_no_material(&err, &wrapped);
        assert_eq!(stub.requests(), 1, "{code}: not retried");
    }
}

#[tokio::test]
async fn throttling_and_kms_faults_are_retried_then_unavailable() {
    let wrapped = stored_wrapped();
    for (status, code) in [
        (400, "ThrottlingException"),
        (500, "KMSInternalException"),
        (400, "KeyUnavailableException"),
    ] {
        let stub = Stub::kms_error(status, code, "slow down").await;
        let provider = stub_provider(&stub, 3).await;
        let err = provider
            .decrypt_data_key(&wrapped, &CTX)
            .await
            .expect_err("decrypt");
        match &err {
            Error::Unavailable {
                retry_after_secs: Some(s),
                detail,
            } => {
                assert!(*s >= 1);
                assert!(detail.contains(code), "{detail}");
            }
            other => panic!("{code}: expected Unavailable with retry hint, got {other:?}"),
        }
        assert_no_material(&err, &wrapped);
        if code != "KeyUnavailableException" {
            assert_eq!(stub.requests(), 3, "{code}: the SDK retried");
        }
        assert_eq!(provider.calls(), 1, "one logical call");
    }
}
