//! `vmx rewrap`: seals every stored secret again under the current key, so that an old
//! master key (or KMS key) can be retired.
//!
//! Each connection is rewritten on its own with the store's versioned replace, so a crash
//! midway leaves every record either as it was or re-wrapped (both open while the old key
//! is still configured), a rerun skips what is already under the current key, and an edit
//! made meanwhile is never overwritten (the connection is read again and retried).

use std::sync::Arc;

use vmx_api::service::API_KEY_FIELD;
use vmx_domain::connection::{Connection, ProviderConfig};
use vmx_domain::ports::{ConnectionStore, SecretSealer};
use vmx_domain::secret::{Envelope, SealContext, SecretString};
use vmx_domain::{Error, Result};

/// Connections read per page.
const PAGE: usize = 100;
/// Attempts per connection when a concurrent edit changes it between read and write.
const ATTEMPTS: usize = 3;

/// What a run did, counted in envelopes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub rewrapped: u64,
    pub current: u64,
    pub failed: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rewrapped {}, already current {}, failed {}",
            self.rewrapped, self.current, self.failed
        )
    }
}

/// The id of the key new envelopes are wrapped with: the `kid` of a throwaway sealing (one
/// key-provider call; for KMS this resolves an alias to the key ARN that envelopes record).
pub async fn current_key_id(sealer: &dyn SecretSealer) -> Result<String> {
    let probe = sealer
        .seal(
            &SecretString::from(String::new()),
            &SealContext {
                connection_id: "vmx-rewrap-probe",
                field: "probe",
            },
        )
        .await?;
    Ok(probe.key.kid)
}

/// Re-wraps every envelope in `store` whose key is not `current_kid`; `progress` is called
/// after each connection with the counts so far.
pub async fn rewrap_all(
    store: Arc<dyn ConnectionStore>,
    sealer: Arc<dyn SecretSealer>,
    current_kid: &str,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(PAGE, after.as_deref()).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let full = page.len() == PAGE;
        for connection in page {
            match rewrap_one(&*store, &*sealer, connection, current_kid).await {
                Ok(Outcome::Rewrapped) => summary.rewrapped += 1,
                Ok(Outcome::Current) => summary.current += 1,
                Ok(Outcome::Nothing) => continue,
                Err((id, e)) => {
                    tracing::warn!(connection_id = %id, error = %e, "re-wrapping failed");
                    summary.failed += 1;
                }
            }
            progress(&summary);
        }
        if !full {
            break;
        }
    }
    Ok(summary)
}

enum Outcome {
    Rewrapped,
    Current,
    /// No envelope (a Bedrock connection), or deleted meanwhile.
    Nothing,
}

fn envelope(connection: &Connection) -> Option<&Envelope> {
    match &connection.config {
        ProviderConfig::ApiKey { api_key } => Some(api_key),
        ProviderConfig::Aws(_) => None,
    }
}

async fn rewrap_one(
    store: &dyn ConnectionStore,
    sealer: &dyn SecretSealer,
    mut connection: Connection,
    current_kid: &str,
) -> std::result::Result<Outcome, (String, Error)> {
    let id = connection.id.clone();
    let fail = |e| (id.clone(), e);
    for _ in 0..ATTEMPTS {
        let Some(old) = envelope(&connection) else {
            return Ok(Outcome::Nothing);
        };
        if old.key.kid == current_kid {
            return Ok(Outcome::Current);
        }
        let context = SealContext {
            connection_id: &connection.id,
            field: API_KEY_FIELD,
        };
        let secret = sealer.open(old, &context).await.map_err(fail)?;
        let sealed = sealer.seal(&secret, &context).await.map_err(fail)?;
        let mut next = connection.clone();
        next.config = ProviderConfig::ApiKey { api_key: sealed };
        next.version = connection.version + 1;
        match store.replace(&connection, &next, connection.version).await {
            Ok(()) => return Ok(Outcome::Rewrapped),
            // Edited meanwhile: start again from what is stored now.
            Err(Error::VersionConflict { .. }) => match store.get(&id).await.map_err(fail)? {
                Some(fresh) => connection = fresh,
                None => return Ok(Outcome::Nothing),
            },
            Err(Error::NotFound { .. }) => return Ok(Outcome::Nothing),
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(Error::VersionConflict {
        current: connection.version,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use vmx_api::service::ConnectionService;
    use vmx_crypto::{EnvelopeSealer, LocalKeyProvider};
    use vmx_domain::clock::SystemClock;
    use vmx_domain::secret::{DataKey, ExposeSecret};
    use vmx_local::{LocalStore, open_database};

    use super::*;

    fn sealer(current: u8, previous: &[u8]) -> Arc<EnvelopeSealer> {
        let keys = LocalKeyProvider::new(DataKey::from_bytes([current; 32])).with_previous(
            previous
                .iter()
                .map(|b| DataKey::from_bytes([*b; 32]))
                .collect(),
        );
        Arc::new(EnvelopeSealer::new(
            Arc::new(keys),
            Duration::from_secs(60),
            10,
        ))
    }

    /// A store on which an admin edits the connection between the rewrap's read and its
    /// first write.
    struct AdminEditsFirst {
        inner: LocalStore,
        edited: AtomicBool,
    }

    #[async_trait]
    impl ConnectionStore for AdminEditsFirst {
        async fn insert(&self, c: &Connection) -> Result<()> {
            self.inner.insert(c).await
        }
        async fn get(&self, id: &str) -> Result<Option<Connection>> {
            self.inner.get(id).await
        }
        async fn get_by_name(&self, name: &str) -> Result<Option<Connection>> {
            self.inner.get_by_name(name).await
        }
        async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<Connection>> {
            self.inner.list(limit, after).await
        }
        async fn replace(&self, previous: &Connection, next: &Connection, v: u64) -> Result<()> {
            if !self.edited.swap(true, Ordering::SeqCst) {
                let current = self.inner.get(&previous.id).await?.unwrap();
                let mut edited = current.clone();
                edited.description = Some("edited by an admin".into());
                edited.version += 1;
                self.inner
                    .replace(&current, &edited, current.version)
                    .await?;
            }
            self.inner.replace(previous, next, v).await
        }
        async fn delete(&self, id: &str) -> Result<()> {
            self.inner.delete(id).await
        }
    }

    #[tokio::test]
    async fn a_concurrent_edit_is_kept_and_the_envelope_still_rewrapped() {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalStore::new(open_database(dir.path()).unwrap()).unwrap();
        let store = Arc::new(AdminEditsFirst {
            inner,
            edited: AtomicBool::new(false),
        });
        let old = ConnectionService::new(store.clone(), sealer(1, &[]), Arc::new(SystemClock));
        let body =
            serde_json::json!({"name": "a", "provider": "openai", "config": {"apiKey": "sk-a"}});
        let id = old.create(&body).await.unwrap().id;

        let new = sealer(2, &[1]);
        let kid = current_key_id(&*new).await.unwrap();
        let summary = rewrap_all(store.clone(), new.clone(), &kid, |_| {})
            .await
            .unwrap();
        assert_eq!(
            summary,
            Summary {
                rewrapped: 1,
                current: 0,
                failed: 0
            }
        );
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!(stored.description.as_deref(), Some("edited by an admin"));
        assert_eq!(stored.version, 3, "created, edited, re-wrapped");
        assert_eq!(envelope(&stored).unwrap().key.kid, kid);
        // Only the new key is needed now.
        let only_new = ConnectionService::new(store.clone(), sealer(2, &[]), Arc::new(SystemClock));
        let secret = only_new.api_key(&stored).await.unwrap().unwrap();
        assert_eq!(secret.expose_secret(), "sk-a");

        // A key nobody holds any more is a counted failure, not a stop.
        let stranger = sealer(3, &[]);
        let kid = current_key_id(&*stranger).await.unwrap();
        let summary = rewrap_all(store, stranger, &kid, |_| {}).await.unwrap();
        assert_eq!(
            summary,
            Summary {
                rewrapped: 0,
                current: 0,
                failed: 1
            }
        );
    }
}
