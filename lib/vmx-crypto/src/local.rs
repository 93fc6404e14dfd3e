//! The local key provider: data keys wrapped by a 32-byte master key with
//! XChaCha20-Poly1305, the context as associated data.
//!
//! The master key comes from `VMX_MASTER_KEY` (base64) or, if unset, is generated once into
//! `<data dir>/master.key` with mode 0600. Each wrapped key names its master key
//! (`local:<8 hex digits of SHA-256 of the key>`), and previous master keys can be kept for
//! unwrapping, so after a rotation records still open until `vmx rewrap` has sealed them
//! again under the new key.

use std::path::Path;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use vmx_domain::ports::KeyProvider;
use vmx_domain::secret::{DataKey, SealContext, WrappedKey};
use vmx_domain::{Error, Result};
use zeroize::Zeroizing;

use crate::{aead_open, aead_seal, associated_data, random_bytes};

struct MasterKey {
    kid: String,
    key: DataKey,
}

impl MasterKey {
    fn new(key: DataKey) -> Self {
        let digest = Sha256::digest(key.expose());
        let kid = format!(
            "local:{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        );
        Self { kid, key }
    }
}

pub struct LocalKeyProvider {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

/// Decodes a base64 master key; it must be exactly 32 bytes.
pub fn decode_master_key(b64: &SecretString) -> Result<DataKey> {
    let bytes = Zeroizing::new(
        B64.decode(b64.expose_secret().trim())
            .map_err(|_| Error::invalid("VMX_MASTER_KEY", "must be base64"))?,
    );
    DataKey::from_slice(&bytes)
        .ok_or_else(|| Error::invalid("VMX_MASTER_KEY", "must decode to exactly 32 bytes"))
}

impl LocalKeyProvider {
    pub fn new(master: DataKey) -> Self {
        Self {
            current: MasterKey::new(master),
            previous: Vec::new(),
        }
    }

    /// Keeps older master keys for unwrapping records not yet re-wrapped.
    pub fn with_previous(mut self, keys: Vec<DataKey>) -> Self {
        self.previous = keys.into_iter().map(MasterKey::new).collect();
        self
    }

    /// The id of the key new records are wrapped with.
    pub fn key_id(&self) -> &str {
        &self.current.kid
    }

    /// Reads the master key file in `dir`, creating it (mode 0600) with a random key if absent.
    pub fn load_or_create(dir: &Path) -> Result<DataKey> {
        let path = dir.join("master.key");
        match std::fs::read_to_string(&path) {
            Ok(text) => decode_master_key(&SecretString::from(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
                let key: [u8; 32] = random_bytes()?;
                let encoded = Zeroizing::new(B64.encode(key));
                write_private(&path, encoded.as_bytes())?;
                // Another process may have won the race to create it: read back what is there.
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::internal(format!("read {}: {e}", path.display())))?;
                decode_master_key(&SecretString::from(text))
            }
            Err(e) => Err(Error::internal(format!("read {}: {e}", path.display()))),
        }
    }

    fn key_for(&self, kid: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.kid == kid)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => f
            .write_all(contents)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::internal(format!("write {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::internal(format!("create {}: {e}", path.display()))),
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    async fn generate_data_key(&self, context: &SealContext<'_>) -> Result<(DataKey, WrappedKey)> {
        let key = DataKey::from_bytes(random_bytes()?);
        let (nonce, ct) = aead_seal(
            self.current.key.expose(),
            key.expose(),
            &associated_data(context),
        )?;
        let mut blob = Vec::with_capacity(nonce.len() + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok((
            key,
            WrappedKey {
                kid: self.current.kid.clone(),
                blob: B64.encode(blob),
            },
        ))
    }

    async fn decrypt_data_key(
        &self,
        wrapped: &WrappedKey,
        context: &SealContext<'_>,
    ) -> Result<DataKey> {
        let master = self.key_for(&wrapped.kid).ok_or_else(|| Error::Crypto {
            detail: format!("unknown master key {}", wrapped.kid),
        })?;
        let blob = B64.decode(&wrapped.blob).map_err(|_| Error::Crypto {
            detail: "malformed wrapped key".into(),
        })?;
        if blob.len() < 24 {
            return Err(Error::Crypto {
                detail: "malformed wrapped key".into(),
            });
        }
        let (nonce, ct) = blob.split_at(24);
        let plain = aead_open(master.key.expose(), nonce, ct, &associated_data(context))?;
        DataKey::from_slice(&plain).ok_or_else(|| Error::Crypto {
            detail: "wrapped key has the wrong length".into(),
        })
    }
}
