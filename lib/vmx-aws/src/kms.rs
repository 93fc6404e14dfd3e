//! [`KeyProvider`] on AWS KMS: data keys come from `GenerateDataKey` (AES-256) and are
//! unwrapped with `Decrypt`, both under the encryption context
//! `{"connectionId": <id>, "field": <field>}`, so a wrapped key moved to another connection
//! or field does not unwrap (KMS answers `InvalidCiphertextException`).
//!
//! Error mapping (details carry the operation, the KMS error code and message, the request
//! id; never key material or ciphertext):
//!
//! | KMS error                                                             | domain error                                  |
//! |-----------------------------------------------------------------------|-----------------------------------------------|
//! | `InvalidCiphertextException`, `IncorrectKeyException`, bad blob         | `Crypto` (wrong context, tampered, wrong key) |
//! | `ThrottlingException`, `KMSInternalException`, `KeyUnavailableException`, `DependencyTimeoutException`, transport failures | `Unavailable { retry_after_secs: Some(1) }` |
//! | `DisabledException`, `KMSInvalidStateException`, `AccessDeniedException`, `NotFoundException`, `InvalidKeyUsageException` | `Unavailable { retry_after_secs: None }`: the key is unusable until an operator acts (a 503 without a retry hint) |
//! | anything else                                                         | `Internal`                                    |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use vmx_domain::ports::KeyProvider;
use vmx_domain::secret::{DataKey, SealContext, WrappedKey};
use vmx_domain::{Error, Result};
use zeroize::Zeroize;

use crate::error::{Failure, RETRY_AFTER_SECS, classify, default_error};

/// Encryption context key naming the connection.
pub const CONTEXT_CONNECTION_ID: &str = "connectionId";
/// Encryption context key naming the secret field.
pub const CONTEXT_FIELD: &str = "field";

/// Longest KMS message kept in an error detail.
const MESSAGE_MAX: usize = 300;

/// KMS key provider. Cheap to clone; clones share the call counter.
#[derive(Clone, Debug)]
pub struct KmsKeyProvider {
    client: Client,
    key_id: String,
    calls: Arc<AtomicU64>,
}

impl KmsKeyProvider {
    /// `key_id`: the KMS key that wraps new data keys (key id, key ARN, alias name or alias
    /// ARN). Unwrapping uses the key ARN stored in each wrapped key instead, so data keys
    /// wrapped before a change of `key_id` still open.
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// KMS calls made so far (`GenerateDataKey` and `Decrypt`, each counted once whatever
    /// the SDK's retries), shared with the clones of this provider.
    pub fn call_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.calls)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Takes the plaintext out of a KMS blob into a [`DataKey`], wiping the SDK's buffer.
fn data_key(blob: Option<Blob>, what: &str) -> Result<DataKey> {
    let Some(blob) = blob else {
        return Err(Error::internal(format!(
            "{what}: no plaintext in the response"
        )));
    };
    let mut bytes = blob.into_inner();
    let key = DataKey::from_slice(&bytes);
    let len = bytes.len();
    bytes.zeroize();
    key.ok_or_else(|| Error::internal(format!("{what}: the data key has {len} bytes, expected 32")))
}

/// Maps a KMS failure (see the module's table).
fn kms_error<E, R>(what: &str, err: &SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let failure = classify(err);
    let Failure::Service { code, request_id } = &failure else {
        return default_error(what, failure);
    };
    let message: String = match err {
        SdkError::ServiceError(service) => service
            .err()
            .message()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MESSAGE_MAX)
            .collect(),
        _ => String::new(),
    };
    let mut detail = format!("{what}: {code}");
    if !message.is_empty() {
        detail.push_str(": ");
        detail.push_str(&message);
    }
    if let Some(id) = request_id {
        detail.push_str(&format!(" (request id {id})"));
    }
    match code.as_str() {
        "InvalidCiphertextException" | "IncorrectKeyException" => Error::Crypto { detail },
        "DisabledException"
        | "KMSInvalidStateException"
        | "KmsInvalidStateException"
        | "AccessDeniedException"
        | "NotFoundException"
        | "InvalidKeyUsageException" => Error::unavailable(None, detail),
        _ => match default_error(what, failure) {
            Error::Unavailable { .. } => Error::unavailable(Some(RETRY_AFTER_SECS), detail),
            _ => Error::internal(detail),
        },
    }
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    async fn generate_data_key(&self, context: &SealContext<'_>) -> Result<(DataKey, WrappedKey)> {
        const WHAT: &str = "KMS GenerateDataKey";
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_CONNECTION_ID, context.connection_id)
            .encryption_context(CONTEXT_FIELD, context.field)
            .send()
            .await
            .map_err(|e| kms_error(WHAT, &e))?;
        let key = data_key(out.plaintext.take(), WHAT)?;
        let kid = out
            .key_id
            .take()
            .ok_or_else(|| Error::internal(format!("{WHAT}: no key id in the response")))?;
        let blob = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| Error::internal(format!("{WHAT}: no ciphertext in the response")))?;
        Ok((
            key,
            WrappedKey {
                kid,
                blob: B64.encode(blob.as_ref()),
            },
        ))
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &SealContext<'_>,
    ) -> Result<DataKey> {
        const WHAT: &str = "KMS Decrypt";
        let ciphertext = B64.decode(&wrapped.blob).map_err(|_| Error::Crypto {
            detail: format!("{WHAT}: the wrapped key is not valid base64"),
        })?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut out = self
            .client
            .decrypt()
            .key_id(&wrapped.kid)
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_context(CONTEXT_CONNECTION_ID, context.connection_id)
            .encryption_context(CONTEXT_FIELD, context.field)
            .send()
            .await
            .map_err(|e| kms_error(WHAT, &e))?;
        data_key(out.plaintext.take(), WHAT)
    }
}
