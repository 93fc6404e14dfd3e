//! A bounded per-process cache whose entries expire a fixed time after they were loaded,
//! over `quick_cache`: eviction is per entry (S3-FIFO: an entry read once leaves before
//! one read again, so a flood of one-off keys does not push out the ones in use), and
//! concurrent misses of one key make one load while the others wait for its result.

use std::hash::Hash;
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, EntryAction, EntryResult};

#[derive(Clone)]
struct Entry<V> {
    value: V,
    expires: Instant,
}

/// Up to `capacity` entries, each kept for `ttl` after it was loaded. A zero `ttl` keeps
/// nothing: every lookup loads.
pub struct TtlCache<K, V> {
    inner: Cache<K, Entry<V>>,
    ttl: Duration,
}

impl<K, V> TtlCache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Cache::new(capacity.max(1)),
            ttl,
        }
    }

    /// The cached value of `key`, unless absent or expired.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inner
            .get(key)
            .filter(|e| e.expires > Instant::now())
            .map(|e| e.value)
    }

    /// Caches `value` for `ttl` (nothing when `ttl` is zero).
    pub fn insert(&self, key: K, value: V) {
        if !self.ttl.is_zero() {
            self.inner.insert(
                key,
                Entry {
                    value,
                    expires: Instant::now() + self.ttl,
                },
            );
        }
    }

    /// The cached value of `key`, or what `load` gives: `Some` is cached, `None` and errors
    /// are not. While one caller loads a key, others asking for it wait and take its result
    /// (or, when it cached nothing, load in turn).
    pub async fn get_or_load<E>(
        &self,
        key: &K,
        load: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, E> {
        if self.ttl.is_zero() {
            return load.await;
        }
        if let Some(v) = self.get(key) {
            return Ok(Some(v));
        }
        let guard = match self
            .inner
            .entry_async(key, |_, e| {
                if e.expires > Instant::now() {
                    EntryAction::Retain(e.value.clone())
                } else {
                    EntryAction::ReplaceWithGuard
                }
            })
            .await
        {
            EntryResult::Retained(v) => return Ok(Some(v)),
            EntryResult::Vacant(g) | EntryResult::Replaced(g, _) => Some(g),
            // Not produced by the callback above (no `Remove`) nor by `entry_async`
            // (no timeout); load without caching should they ever be.
            EntryResult::Removed(..) | EntryResult::Timeout => None,
        };
        let loaded = load.await?;
        if let (Some(g), Some(v)) = (guard, &loaded) {
            let _ = g.insert(Entry {
                value: v.clone(),
                expires: Instant::now() + self.ttl,
            });
        }
        Ok(loaded)
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &K) {
        self.inner.remove(key);
    }

    /// Forgets every entry whose value `drop` selects.
    pub fn remove_where(&self, drop: impl Fn(&V) -> bool) {
        self.inner.retain(|_, e| !drop(&e.value));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Entries held, expired ones included until they are evicted or replaced.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn counting_load(loads: &AtomicUsize, value: Option<u32>) -> Result<Option<u32>, ()> {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }

    #[tokio::test]
    async fn a_loaded_value_is_reused_and_none_is_not_cached() {
        let cache = TtlCache::new(10, Duration::from_secs(60));
        let loads = AtomicUsize::new(0);
        for _ in 0..3 {
            let v = cache
                .get_or_load(&"a", counting_load(&loads, Some(1)))
                .await;
            assert_eq!(v, Ok(Some(1)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            let v = cache.get_or_load(&"b", counting_load(&loads, None)).await;
            assert_eq!(v, Ok(None));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 4);
        cache.remove(&"a");
        let _ = cache
            .get_or_load(&"a", counting_load(&loads, Some(2)))
            .await;
        assert_eq!(cache.get(&"a"), Some(2));
        cache.remove_where(|v| *v == 2);
        assert_eq!(cache.get(&"a"), None);
    }

    #[tokio::test]
    async fn a_zero_ttl_caches_nothing() {
        let cache = TtlCache::new(10, Duration::ZERO);
        let loads = AtomicUsize::new(0);
        for _ in 0..3 {
            let _ = cache.get_or_load(&1, counting_load(&loads, Some(1))).await;
        }
        cache.insert(2, 2);
        assert_eq!(loads.load(Ordering::SeqCst), 3);
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn an_expired_entry_is_loaded_again() {
        let cache = TtlCache::new(10, Duration::from_millis(1));
        cache.insert(1, 1);
        // The entry expires 1 ms after it was stored: wait until it has.
        while cache.get(&1).is_some() {
            tokio::task::yield_now().await;
        }
        let loads = AtomicUsize::new(0);
        let v = cache.get_or_load(&1, counting_load(&loads, Some(5))).await;
        assert_eq!((v, loads.load(Ordering::SeqCst)), (Ok(Some(5)), 1));
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_key_load_once() {
        let cache = Arc::new(TtlCache::new(10, Duration::from_secs(60)));
        let loads = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads, mut gate) = (cache.clone(), loads.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_load(&"k", async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok::<_, ()>(Some(7))
                    })
                    .await
            }));
        }
        // One loader has started; the others are waiting on it.
        while loads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let _ = release.send(true);
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(Some(7)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_flood_of_one_off_keys_keeps_a_key_in_use() {
        let cache = TtlCache::new(100, Duration::from_secs(60));
        let loads = AtomicUsize::new(0);
        for i in 0..10_000u32 {
            let _ = cache.get_or_load(&0, counting_load(&loads, Some(0))).await;
            cache.insert(i + 1, i);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1, "the key in use stayed");
        assert!(cache.len() <= 100);
    }
}
