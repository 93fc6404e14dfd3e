//! Secret values and their encrypted, storable form.
//!
//! Architecture invariant: a plaintext secret is only ever held in a [`SecretString`] (no
//! `Debug`/`Display` of the value, zeroized on drop) and a plaintext data key only in a
//! [`DataKey`]. What is stored is an [`Envelope`]: ciphertext plus the wrapped data key.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use secrecy::{ExposeSecret, SecretString};

/// What every response shows in place of a secret.
pub const MASK: &str = "********";

/// True for a value a client sends back unchanged from a response: it keeps the stored secret.
pub fn is_masked(value: &str) -> bool {
    value.starts_with("****")
}

/// A 256-bit plaintext data key. Zeroized on drop; its `Debug` shows nothing of the key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies from a slice; `None` unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(redacted)")
    }
}

/// A data key wrapped (encrypted) by a key provider, and the id of the key that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Key id, e.g. `local:3f2a9c01` or a KMS key ARN. Names the wrapping key so records can
    /// be re-wrapped under a new key without losing any.
    pub kid: String,
    /// The wrapped key blob, base64.
    pub blob: String,
}

/// An encrypted secret as stored: one fresh data key per sealing (so per connection and per
/// rotation), the secret encrypted with it under associated data bound to the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version.
    pub v: u8,
    /// AEAD algorithm of `ct`, e.g. `XChaCha20-Poly1305`.
    pub alg: String,
    /// The wrapped data key.
    pub key: WrappedKey,
    /// Nonce, base64.
    pub nonce: String,
    /// Ciphertext with tag, base64.
    pub ct: String,
}

/// What a secret is bound to: a ciphertext moved to another connection or field fails to open.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    pub connection_id: &'a str,
    pub field: &'a str,
}
