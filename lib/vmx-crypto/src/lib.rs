//! Envelope encryption of connection secrets.
//!
//! Every sealing draws a fresh 256-bit data key from a [`KeyProvider`] (KMS in AWS, a local
//! master key otherwise), encrypts the secret with XChaCha20-Poly1305 under associated data
//! that binds the connection id and the field name, and stores the data key only in wrapped
//! form. Opening unwraps the data key (through a bounded, expiring in-memory cache, so a warm
//! process makes no key-provider call per request) and decrypts.
//!
//! Architecture invariant: plaintext data keys never leave this crate and the key-provider
//! adapters; they live in zeroizing [`DataKey`]s and are never logged.

pub mod cache;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use vmx_domain::ports::{KeyProvider, SecretSealer};
use vmx_domain::secret::{Envelope, SealContext};
use vmx_domain::{Error, Result};
use zeroize::Zeroizing;

pub use cache::{CacheStats, DataKeyCache};
pub use local::LocalKeyProvider;

/// The AEAD algorithm name recorded in every envelope.
pub const ALG: &str = "XChaCha20-Poly1305";
const FORMAT_VERSION: u8 = 1;

/// The associated data for a context: a ciphertext only opens on the connection and field it
/// was sealed for.
pub fn associated_data(context: &SealContext<'_>) -> Vec<u8> {
    format!(
        "vmx/v1|connectionId={}|field={}",
        context.connection_id, context.field
    )
    .into_bytes()
}

/// Fills a buffer from the OS random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| Error::internal(format!("random source: {e}")))?;
    Ok(buf)
}

/// Encrypts with a 256-bit key; returns (nonce, ciphertext).
pub(crate) fn aead_seal(
    key: &[u8; 32],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<([u8; 24], Vec<u8>)> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce: [u8; 24] = random_bytes()?;
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::internal("encryption failed"))?;
    Ok((nonce, ct))
}

pub(crate) fn aead_open(
    key: &[u8; 32],
    nonce: &[u8],
    ct: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if nonce.len() != 24 {
        return Err(Error::Crypto {
            detail: "malformed nonce".into(),
        });
    }
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| Error::Crypto {
            detail: "authentication failed (wrong key or context, or tampered ciphertext)".into(),
        })
}

/// Seals and opens secrets with data keys from a [`KeyProvider`].
pub struct EnvelopeSealer {
    keys: Arc<dyn KeyProvider>,
    cache: DataKeyCache,
}

impl EnvelopeSealer {
    /// `ttl` and `capacity` bound the decrypted data-key cache.
    pub fn new(keys: Arc<dyn KeyProvider>, ttl: Duration, capacity: usize) -> Self {
        Self {
            keys,
            cache: DataKeyCache::new(ttl, capacity),
        }
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

#[async_trait]
impl SecretSealer for EnvelopeSealer {
    async fn seal(&self, secret: &SecretString, context: &SealContext<'_>) -> Result<Envelope> {
        let (key, wrapped) = self.keys.generate_data_key(context).await?;
        let aad = associated_data(context);
        let (nonce, ct) = aead_seal(key.expose(), secret.expose_secret().as_bytes(), &aad)?;
        self.cache.insert(&wrapped, context, key);
        Ok(Envelope {
            v: FORMAT_VERSION,
            alg: ALG.to_owned(),
            key: wrapped,
            nonce: B64.encode(nonce),
            ct: B64.encode(ct),
        })
    }

    async fn open(&self, envelope: &Envelope, context: &SealContext<'_>) -> Result<SecretString> {
        if envelope.v != FORMAT_VERSION || envelope.alg != ALG {
            return Err(Error::Crypto {
                detail: format!("unsupported envelope v{} {}", envelope.v, envelope.alg),
            });
        }
        let malformed = |_| Error::Crypto {
            detail: "malformed envelope encoding".into(),
        };
        let nonce = B64.decode(&envelope.nonce).map_err(malformed)?;
        let ct = B64.decode(&envelope.ct).map_err(malformed)?;
        let key = match self.cache.get(&envelope.key, context) {
            Some(k) => k,
            None => {
                let k = self.keys.decrypt_data_key(&envelope.key, context).await?;
                self.cache.insert(&envelope.key, context, k.clone());
                k
            }
        };
        let plain = aead_open(key.expose(), &nonce, &ct, &associated_data(context))?;
        let text = std::str::from_utf8(&plain).map_err(|_| Error::Crypto {
            detail: "secret is not UTF-8".into(),
        })?;
        Ok(SecretString::from(text.to_owned()))
    }
}

#[cfg(test)]
mod tests;
