//! A bounded, expiring cache of unwrapped data keys, keyed by a digest of the wrapped key
//! and its context (like the AWS Encryption SDK's caching materials manager). A hit means no
//! key-provider call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vmx_domain::secret::{DataKey, SealContext, WrappedKey};

pub struct DataKeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], (DataKey, Instant)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

fn cache_key(wrapped: &WrappedKey, context: &SealContext<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [
        wrapped.kid.as_bytes(),
        wrapped.blob.as_bytes(),
        context.connection_id.as_bytes(),
        context.field.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl DataKeyCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, wrapped: &WrappedKey, context: &SealContext<'_>) -> Option<DataKey> {
        let key = cache_key(wrapped, context);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = match entries.get(&key) {
            Some((k, at)) if at.elapsed() < self.ttl => Some(k.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, wrapped: &WrappedKey, context: &SealContext<'_>, data_key: DataKey) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let key = cache_key(wrapped, context);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (data_key, Instant::now()));
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
        }
    }
}
