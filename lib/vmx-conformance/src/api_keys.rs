//! The [`ApiKeyStore`] contract.
//!
//! Run every case with [`run_all`], giving it a factory of stores. Each case works on a fresh
//! store and also on a shared one: it only checks the keys it created, except for list order,
//! which it checks across everything the store returns.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use vmx_domain::Error;
use vmx_domain::api_key::{ApiKeyRecord, ApiKeyStore, KeyDenied, NewApiKey, generate_key};
use vmx_domain::secret::ExposeSecret;

pub type Keys = Arc<dyn ApiKeyStore>;

/// Runs every case, each on a store fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Keys>,
{
    insert_get_find_by_hash(make().await).await;
    duplicate_id_or_hash_stores_nothing(make().await).await;
    revoke_is_idempotent_and_seen_by_lookup(make().await).await;
    set_capacity_changes_only_the_capacity(make().await).await;
    mark_used_only_moves_forward(make().await).await;
    delete_removes_every_trace(make().await).await;
    absent_keys_are_not_found(make().await).await;
    list_pages_in_ascending_id_order(make().await).await;
    concurrent_revoke_and_mark_used_lose_nothing(make().await).await;
}

/// A new key record (fresh UUID v7 id and key) with every optional field set.
pub fn key_record(name: &str) -> ApiKeyRecord {
    let now = OffsetDateTime::now_utc();
    let body = NewApiKey {
        name: Some(name.to_owned()),
        connections: Some(vec!["prod".to_owned(), uuid::Uuid::now_v7().to_string()]),
        expires_at: Some(now + Duration::days(30)),
        capacity: vec![vmx_domain::capacity::CapacityEntry {
            period: vmx_domain::capacity::Period::Minute,
            requests: Some(10),
            tokens: Some(1000),
            enabled: true,
            dimension: None,
        }],
    };
    let generated = generate_key().expect("generate key");
    body.into_record(uuid::Uuid::now_v7().to_string(), &generated, now)
}

/// A record with only the required fields.
pub fn bare_key_record() -> ApiKeyRecord {
    let generated = generate_key().expect("generate key");
    NewApiKey {
        name: None,
        connections: None,
        expires_at: None,
        capacity: Vec::new(),
    }
    .into_record(
        uuid::Uuid::now_v7().to_string(),
        &generated,
        OffsetDateTime::now_utc(),
    )
}

fn expect_not_found<T: std::fmt::Debug>(r: vmx_domain::Result<T>, what: &str) {
    match r {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

pub async fn insert_get_find_by_hash(store: Keys) {
    let a = key_record("alpha");
    let b = bare_key_record();
    store.insert(&a).await.expect("insert a");
    store.insert(&b).await.expect("insert b");
    for k in [&a, &b] {
        assert_eq!(store.get(&k.id).await.expect("get").as_ref(), Some(k));
        assert_eq!(
            store
                .find_by_hash(&k.hash)
                .await
                .expect("find by hash")
                .as_ref(),
            Some(k)
        );
    }
    let unknown = generate_key().expect("generate");
    assert_eq!(
        store
            .find_by_hash(&unknown.hash)
            .await
            .expect("find unknown"),
        None
    );
    assert_eq!(
        store
            .get(&uuid::Uuid::now_v7().to_string())
            .await
            .expect("get unknown"),
        None
    );
    // The stored record never holds the key itself.
    let (record, key) = NewApiKey {
        name: None,
        connections: None,
        expires_at: None,
        capacity: Vec::new(),
    }
    .issue(uuid::Uuid::now_v7().to_string(), OffsetDateTime::now_utc())
    .expect("issue");
    store.insert(&record).await.expect("insert issued");
    let found = store
        .find_by_hash(&vmx_domain::api_key::hash_key(key.expose_secret()))
        .await
        .expect("find issued")
        .expect("issued key is found by the hash of the key");
    assert_eq!(found.id, record.id);
    assert!(!format!("{found:?}").contains(key.expose_secret()));
}

pub async fn duplicate_id_or_hash_stores_nothing(store: Keys) {
    let a = key_record("dup");
    store.insert(&a).await.expect("insert");

    let mut same_id = bare_key_record();
    same_id.id = a.id.clone();
    assert!(
        store.insert(&same_id).await.is_err(),
        "a second key with the id is refused"
    );
    assert_eq!(
        store.find_by_hash(&same_id.hash).await.expect("find"),
        None,
        "the refused key left no hash entry"
    );

    let mut same_hash = bare_key_record();
    same_hash.hash = a.hash.clone();
    assert!(
        store.insert(&same_hash).await.is_err(),
        "a second key with the hash is refused"
    );
    assert_eq!(
        store.get(&same_hash.id).await.expect("get"),
        None,
        "the refused key left no record"
    );
    assert_eq!(store.get(&a.id).await.expect("get").as_ref(), Some(&a));
    assert_eq!(
        store.find_by_hash(&a.hash).await.expect("find").as_ref(),
        Some(&a)
    );
}

pub async fn revoke_is_idempotent_and_seen_by_lookup(store: Keys) {
    let a = key_record("revoke");
    let other = key_record("bystander");
    store.insert(&a).await.expect("insert");
    store.insert(&other).await.expect("insert other");
    let t1 = OffsetDateTime::now_utc();

    let revoked = store.revoke(&a.id, t1).await.expect("revoke");
    let mut expected = a.clone();
    expected.revoked_at = Some(t1);
    assert_eq!(revoked, expected, "revoke sets revokedAt and nothing else");
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );
    let found = store
        .find_by_hash(&a.hash)
        .await
        .expect("find")
        .expect("a revoked key is still found");
    assert_eq!(found, expected, "the lookup sees the revocation at once");
    assert_eq!(
        found.check(t1, "prod", "prod"),
        Err(KeyDenied::Revoked),
        "and denies it"
    );

    // Again, later: the first revocation time stays.
    let again = store
        .revoke(&a.id, t1 + Duration::hours(1))
        .await
        .expect("revoke again");
    assert_eq!(again, expected, "a second revocation changes nothing");
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );

    assert_eq!(
        store.get(&other.id).await.expect("get other").as_ref(),
        Some(&other),
        "revoke touches only its key"
    );
}

/// `set_capacity` replaces the key's own capacity (seen by the lookup at once), keeps a
/// revocation and `lastUsedAt`, and touches no other key.
pub async fn set_capacity_changes_only_the_capacity(store: Keys) {
    let a = key_record("capacity");
    let other = key_record("bystander");
    store.insert(&a).await.expect("insert");
    store.insert(&other).await.expect("insert other");
    let t1 = OffsetDateTime::now_utc();
    store.mark_used(&a.id, t1).await.expect("mark used");
    let revoked = store.revoke(&a.id, t1).await.expect("revoke");
    let mut capacity = a.capacity.clone();
    capacity.push(vmx_domain::capacity::CapacityEntry {
        period: vmx_domain::capacity::Period::Day,
        requests: None,
        tokens: Some(5),
        enabled: false,
        dimension: None,
    });
    let changed = store
        .set_capacity(&a.id, capacity.clone())
        .await
        .expect("set capacity");
    let mut expected = revoked;
    expected.capacity = capacity;
    assert_eq!(changed, expected, "only the capacity changed");
    let found = store.find_by_hash(&a.hash).await.expect("find");
    assert_eq!(
        found.as_ref(),
        Some(&expected),
        "the lookup sees it at once"
    );
    let cleared = store
        .set_capacity(&a.id, Vec::new())
        .await
        .expect("clear capacity");
    assert!(cleared.capacity.is_empty());
    assert_eq!(
        store.get(&other.id).await.expect("get other").as_ref(),
        Some(&other),
        "set_capacity touches only its key"
    );
}

pub async fn mark_used_only_moves_forward(store: Keys) {
    let a = key_record("used");
    store.insert(&a).await.expect("insert");
    let t = OffsetDateTime::now_utc();

    store.mark_used(&a.id, t).await.expect("mark used");
    let mut expected = a.clone();
    expected.last_used_at = Some(t);
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );

    store
        .mark_used(&a.id, t - Duration::minutes(5))
        .await
        .expect("mark used earlier");
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected),
        "an earlier time does not move lastUsedAt back"
    );

    let later = t + Duration::minutes(5);
    store
        .mark_used(&a.id, later)
        .await
        .expect("mark used later");
    expected.last_used_at = Some(later);
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );
    assert_eq!(
        store.find_by_hash(&a.hash).await.expect("find").as_ref(),
        Some(&expected),
        "the lookup returns the same record as get"
    );

    // mark_used and revoke do not undo each other.
    let revoked_at = later + Duration::seconds(1);
    store.revoke(&a.id, revoked_at).await.expect("revoke");
    let last = later + Duration::minutes(1);
    store.mark_used(&a.id, last).await.expect("mark used");
    expected.revoked_at = Some(revoked_at);
    expected.last_used_at = Some(last);
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );
}

pub async fn delete_removes_every_trace(store: Keys) {
    let a = key_record("delete");
    let keep = key_record("keep");
    store.insert(&a).await.expect("insert");
    store.insert(&keep).await.expect("insert keep");
    store.delete(&a.id).await.expect("delete");
    assert_eq!(store.get(&a.id).await.expect("get"), None);
    assert_eq!(store.find_by_hash(&a.hash).await.expect("find"), None);
    let listed: Vec<ApiKeyRecord> = list_all(&store, 100).await;
    assert!(
        listed.iter().all(|k| k.id != a.id),
        "a deleted key is not listed"
    );
    expect_not_found(store.delete(&a.id).await, "second delete");
    assert_eq!(
        store.get(&keep.id).await.expect("get keep").as_ref(),
        Some(&keep)
    );
    // The hash is free again (only a hash collision could ask for it).
    let mut reuse = bare_key_record();
    reuse.hash = a.hash.clone();
    store
        .insert(&reuse)
        .await
        .expect("insert with a freed hash");
    assert_eq!(
        store.find_by_hash(&a.hash).await.expect("find").as_ref(),
        Some(&reuse)
    );
}

pub async fn absent_keys_are_not_found(store: Keys) {
    let id = uuid::Uuid::now_v7().to_string();
    let now = OffsetDateTime::now_utc();
    expect_not_found(store.revoke(&id, now).await, "revoke absent");
    expect_not_found(store.mark_used(&id, now).await, "mark absent used");
    expect_not_found(store.delete(&id).await, "delete absent");
    expect_not_found(
        store.set_capacity(&id, Vec::new()).await,
        "set the capacity of an absent key",
    );
    assert_eq!(store.get(&id).await.expect("get"), None, "nothing created");
}

async fn list_all(store: &Keys, limit: usize) -> Vec<ApiKeyRecord> {
    list_after(store, limit, None).await
}

async fn list_after(store: &Keys, limit: usize, after: Option<&str>) -> Vec<ApiKeyRecord> {
    let mut all: Vec<ApiKeyRecord> = Vec::new();
    let mut cursor = after.map(str::to_owned);
    for _ in 0..10_000 {
        let page = store
            .list(limit, cursor.as_deref())
            .await
            .expect("list page");
        assert!(page.len() <= limit, "a page holds at most `limit` keys");
        if let Some(c) = &cursor {
            assert!(
                page.iter().all(|k| k.id.as_str() > c.as_str()),
                "a page holds only ids after the cursor"
            );
        }
        let Some(last) = page.last() else {
            return all;
        };
        cursor = Some(last.id.clone());
        let short = page.len() < limit;
        all.extend(page);
        if short {
            let rest = store
                .list(limit, cursor.as_deref())
                .await
                .expect("list after a short page");
            assert!(rest.is_empty(), "a short page is the last page");
            return all;
        }
    }
    panic!("listing did not end");
}

pub async fn list_pages_in_ascending_id_order(store: Keys) {
    let mut mine = Vec::new();
    for i in 0..7 {
        let k = if i % 2 == 0 {
            key_record(&format!("list-{i}"))
        } else {
            bare_key_record()
        };
        store.insert(&k).await.expect("insert");
        mine.push(k);
    }
    store
        .revoke(&mine[1].id, OffsetDateTime::now_utc())
        .await
        .expect("revoke one");
    mine[1] = store.get(&mine[1].id).await.expect("get").expect("present");
    let mut ids: Vec<String> = mine.iter().map(|k| k.id.clone()).collect();
    ids.sort();

    assert!(store.list(0, None).await.expect("list 0").is_empty());
    for limit in [1, 3, 7, 100] {
        let all = list_all(&store, limit).await;
        let all_ids: Vec<&str> = all.iter().map(|k| k.id.as_str()).collect();
        assert!(
            all_ids.windows(2).all(|w| w[0] < w[1]),
            "limit {limit}: strictly ascending ids"
        );
        let seen: Vec<&str> = all_ids
            .iter()
            .copied()
            .filter(|id| ids.iter().any(|m| m == id))
            .collect();
        assert_eq!(
            seen, ids,
            "limit {limit}: every key exactly once, revoked too"
        );
        for k in &mine {
            assert_eq!(
                all.iter().find(|l| l.id == k.id),
                Some(k),
                "list returns the stored record"
            );
        }
    }
    let pivot = ids[3].clone();
    let later: Vec<String> = list_after(&store, 2, Some(&pivot))
        .await
        .into_iter()
        .map(|k| k.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(later, ids[4..].to_vec(), "after a cursor");
    store.delete(&pivot).await.expect("delete pivot");
    let later: Vec<String> = list_after(&store, 2, Some(&pivot))
        .await
        .into_iter()
        .map(|k| k.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(later, ids[4..].to_vec(), "after a deleted cursor");
    let listed: HashSet<String> = list_all(&store, 100)
        .await
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert!(!listed.contains(&pivot));
}

pub async fn concurrent_revoke_and_mark_used_lose_nothing(store: Keys) {
    const TASKS: i64 = 16;
    let a = key_record("race");
    store.insert(&a).await.expect("insert");
    let base = OffsetDateTime::now_utc();
    let revoked_at = base + Duration::seconds(3);
    let mut handles = Vec::new();
    for i in 0..TASKS {
        let store = Arc::clone(&store);
        let id = a.id.clone();
        handles.push(tokio::spawn(async move {
            if i == TASKS / 2 {
                store.revoke(&id, revoked_at).await.map(|_| ())
            } else {
                store.mark_used(&id, base + Duration::seconds(i)).await
            }
        }));
    }
    for h in handles {
        h.await.expect("task").expect("revoke or mark used");
    }
    let mut expected = a.clone();
    expected.revoked_at = Some(revoked_at);
    expected.last_used_at = Some(base + Duration::seconds(TASKS - 1));
    assert_eq!(
        store.get(&a.id).await.expect("get").as_ref(),
        Some(&expected)
    );
    assert_eq!(
        store.find_by_hash(&a.hash).await.expect("find").as_ref(),
        Some(&expected)
    );
}
