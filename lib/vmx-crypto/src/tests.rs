use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use vmx_domain::secret::{DataKey, WrappedKey};

/// Counts calls through to a local provider.
struct Counting {
    inner: LocalKeyProvider,
    generated: AtomicU64,
    decrypted: AtomicU64,
}

#[async_trait]
impl KeyProvider for Counting {
    async fn generate_data_key(&self, c: &SealContext<'_>) -> Result<(DataKey, WrappedKey)> {
        self.generated.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(c).await
    }
    async fn decrypt_data_key(&self, w: &WrappedKey, c: &SealContext<'_>) -> Result<DataKey> {
        self.decrypted.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt_data_key(w, c).await
    }
}

fn ctx<'a>(id: &'a str) -> SealContext<'a> {
    SealContext {
        connection_id: id,
        field: "apiKey",
    }
}

fn counting(master: [u8; 32]) -> Arc<Counting> {
    Arc::new(Counting {
        inner: LocalKeyProvider::new(DataKey::from_bytes(master)),
        generated: AtomicU64::new(0),
        decrypted: AtomicU64::new(0),
    })
}

#[tokio::test]
async fn round_trip_and_no_plaintext_in_envelope() {
    let sealer = EnvelopeSealer::new(counting([7; 32]), Duration::from_secs(60), 10);
    let secret = SecretString::from("sk-canary-0123456789".to_owned());
    let env = sealer.seal(&secret, &ctx("c1")).await.expect("seal");
    let stored = format!("{env:?}");
    assert!(!stored.contains("sk-canary"));
    assert_eq!(env.alg, ALG);
    assert!(env.key.kid.starts_with("local:"));
    let opened = sealer.open(&env, &ctx("c1")).await.expect("open");
    assert_eq!(opened.expose_secret(), "sk-canary-0123456789");
}

#[tokio::test]
async fn ciphertext_is_bound_to_connection_and_field() {
    let keys = counting([7; 32]);
    // No cache, so every open goes to the key provider.
    let sealer = EnvelopeSealer::new(keys, Duration::ZERO, 0);
    let env = sealer
        .seal(&SecretString::from("s".to_owned()), &ctx("c1"))
        .await
        .expect("seal");
    for other in [
        ctx("c2"),
        SealContext {
            connection_id: "c1",
            field: "other",
        },
    ] {
        match sealer.open(&env, &other).await {
            Err(Error::Crypto { .. }) => {}
            Ok(_) => panic!("opened under a foreign context"),
            Err(e) => panic!("wrong error: {e}"),
        }
    }
    // Tampering with the ciphertext fails too.
    let mut bad = env.clone();
    bad.ct = B64.encode(vec![0u8; 40]);
    assert!(matches!(
        sealer.open(&bad, &ctx("c1")).await,
        Err(Error::Crypto { .. })
    ));
}

#[tokio::test]
async fn warm_cache_makes_no_key_provider_calls() {
    let keys = counting([9; 32]);
    let sealer = EnvelopeSealer::new(keys.clone(), Duration::from_secs(300), 100);
    let env = sealer
        .seal(&SecretString::from("s".to_owned()), &ctx("c1"))
        .await
        .expect("seal");
    for _ in 0..50 {
        sealer.open(&env, &ctx("c1")).await.expect("open");
    }
    assert_eq!(keys.generated.load(Ordering::SeqCst), 1);
    assert_eq!(
        keys.decrypted.load(Ordering::SeqCst),
        0,
        "seal seeds the cache"
    );
    // A cold process (new sealer, same provider) unwraps once, then hits.
    let cold = EnvelopeSealer::new(keys.clone(), Duration::from_secs(300), 100);
    for _ in 0..50 {
        cold.open(&env, &ctx("c1")).await.expect("open");
    }
    assert_eq!(keys.decrypted.load(Ordering::SeqCst), 1);
    assert_eq!(cold.cache_stats().hits, 49);
}

#[tokio::test]
async fn cache_is_bounded() {
    let keys = counting([1; 32]);
    let sealer = EnvelopeSealer::new(keys, Duration::from_secs(300), 3);
    for i in 0..10 {
        let id = format!("c{i}");
        sealer
            .seal(&SecretString::from("s".to_owned()), &ctx(&id))
            .await
            .expect("seal");
    }
    assert_eq!(sealer.cache_stats().entries, 3);
}

#[tokio::test]
async fn rotated_master_key_still_opens_old_records() {
    let old = LocalKeyProvider::new(DataKey::from_bytes([1; 32]));
    let old_kid = old.key_id().to_owned();
    let sealer = EnvelopeSealer::new(Arc::new(old), Duration::ZERO, 0);
    let env = sealer
        .seal(&SecretString::from("s".to_owned()), &ctx("c1"))
        .await
        .expect("seal");
    assert_eq!(env.key.kid, old_kid);
    let rotated = LocalKeyProvider::new(DataKey::from_bytes([2; 32]))
        .with_previous(vec![DataKey::from_bytes([1; 32])]);
    assert_ne!(rotated.key_id(), old_kid);
    let sealer = EnvelopeSealer::new(Arc::new(rotated), Duration::ZERO, 0);
    assert_eq!(
        sealer
            .open(&env, &ctx("c1"))
            .await
            .expect("open")
            .expose_secret(),
        "s"
    );
    // Without the old key the record is unreadable, and says which key it needs.
    let only_new = EnvelopeSealer::new(
        Arc::new(LocalKeyProvider::new(DataKey::from_bytes([2; 32]))),
        Duration::ZERO,
        0,
    );
    match only_new.open(&env, &ctx("c1")).await {
        Err(Error::Crypto { detail }) => assert!(detail.contains(&old_kid)),
        _ => panic!("expected a crypto error"),
    }
}

#[test]
fn master_key_file_is_created_once_with_private_mode() {
    let dir = std::env::temp_dir().join(format!("vmx-key-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let a = LocalKeyProvider::load_or_create(&dir).expect("create");
    let b = LocalKeyProvider::load_or_create(&dir).expect("load");
    assert_eq!(a.expose(), b.expose());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("master.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(local::decode_master_key(&SecretString::from("c2hvcnQ=".to_owned())).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
