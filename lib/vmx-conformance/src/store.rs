//! The [`ConnectionStore`] contract.
//!
//! Run every case with [`run_all`], giving it a factory of stores, or call the cases one by
//! one. Each case works on a fresh store and also on a shared one that holds other data: it
//! uses names of its own (random suffix) and only checks the connections it created, except
//! for list order, which it checks across everything the store returns.
//!
//! ```ignore
//! #[tokio::test]
//! async fn store_conformance() {
//!     vmx_conformance::store::run_all(|| async { Arc::new(MyStore::new()) as Arc<dyn ConnectionStore> }).await;
//! }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use vmx_domain::Error;
use vmx_domain::capacity::parse_capacity;
use vmx_domain::connection::{
    AwsConfig, Connection, DiscoveredCapacity, Latency, PerformanceConfig, ProviderConfig,
};
use vmx_domain::ports::ConnectionStore;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::{Envelope, WrappedKey};

pub type Store = Arc<dyn ConnectionStore>;

/// Runs every case, each on a store fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Store>,
{
    insert_get_get_by_name(make().await).await;
    duplicate_name_is_rejected_atomically(make().await).await;
    concurrent_inserts_of_one_name_have_one_winner(make().await).await;
    replace_with_expected_version(make().await).await;
    replace_with_stale_version_changes_nothing(make().await).await;
    replace_absent_is_not_found(make().await).await;
    rename_frees_old_name_and_takes_new(make().await).await;
    rename_onto_taken_name_changes_nothing(make().await).await;
    delete_removes_connection_and_name(make().await).await;
    delete_absent_is_not_found(make().await).await;
    list_pages_in_ascending_id_order(make().await).await;
    large_connection_round_trips(make().await).await;
}

/// A name no other case or run uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A dummy envelope: stores never look inside one.
pub fn dummy_envelope(tag: &str) -> Envelope {
    Envelope {
        v: 1,
        alg: "XChaCha20-Poly1305".to_owned(),
        key: WrappedKey {
            kid: "test:00000000".to_owned(),
            blob: "d3JhcHBlZA==".to_owned(),
        },
        nonce: "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25j".to_owned(),
        ct: format!("Y2lwaGVydGV4dA-{tag}"),
    }
}

/// A version-1 OpenAI connection with a fresh UUID v7 id.
pub fn api_key_connection(name: &str) -> Connection {
    let now = OffsetDateTime::now_utc();
    Connection {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        description: Some("conformance".to_owned()),
        provider: ProviderKind::OpenAi,
        config: ProviderConfig::ApiKey {
            api_key: dummy_envelope(name),
        },
        capacity: parse_capacity(
            &json!([{ "period": "minute", "requests": 100, "tokens": 100000 }]),
            "capacity",
        )
        .expect("valid capacity"),
        allowed_models: None,
        discovered_capacity: DiscoveredCapacity::default(),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// A version-1 Bedrock connection with a fresh UUID v7 id.
pub fn aws_connection(name: &str) -> Connection {
    let mut c = api_key_connection(name);
    c.provider = ProviderKind::AwsBedrock;
    c.config = ProviderConfig::Aws(AwsConfig {
        region: "us-east-1".to_owned(),
        iam_role_arn: "arn:aws:iam::123456789012:role/vmx-bedrock".to_owned(),
        external_id: "ext-123".to_owned(),
        performance_config: Some(PerformanceConfig {
            latency: Latency::Optimized,
        }),
        guardrail_config: None,
    });
    c.capacity = Vec::new();
    c
}

/// `c` as the service would store it after an update: next version, new timestamp.
pub fn updated(c: &Connection) -> Connection {
    let mut next = c.clone();
    next.version = c.version + 1;
    next.updated_at = OffsetDateTime::now_utc();
    next
}

fn assert_name_taken(result: vmx_domain::Result<()>, name: &str, what: &str) {
    match result {
        Err(Error::NameTaken(n)) => assert_eq!(n, name, "{what}: NameTaken names the name"),
        other => panic!("{what}: expected NameTaken({name}), got {other:?}"),
    }
}

pub async fn insert_get_get_by_name(store: Store) {
    let a = api_key_connection(&unique_name("alpha"));
    let b = aws_connection(&unique_name("beta"));
    store.insert(&a).await.expect("insert a");
    store.insert(&b).await.expect("insert b");

    assert_eq!(store.get(&a.id).await.expect("get a").as_ref(), Some(&a));
    assert_eq!(store.get(&b.id).await.expect("get b").as_ref(), Some(&b));
    assert_eq!(
        store
            .get_by_name(&a.name)
            .await
            .expect("get a by name")
            .as_ref(),
        Some(&a)
    );
    assert_eq!(
        store
            .get_by_name(&b.name)
            .await
            .expect("get b by name")
            .as_ref(),
        Some(&b)
    );

    let absent_id = uuid::Uuid::now_v7().to_string();
    assert_eq!(store.get(&absent_id).await.expect("get absent"), None);
    assert_eq!(
        store
            .get_by_name(&unique_name("absent"))
            .await
            .expect("get absent by name"),
        None
    );
}

pub async fn duplicate_name_is_rejected_atomically(store: Store) {
    let name = unique_name("dup");
    let first = api_key_connection(&name);
    store.insert(&first).await.expect("first insert");

    let second = aws_connection(&name);
    assert_name_taken(store.insert(&second).await, &name, "duplicate insert");

    assert_eq!(
        store.get(&second.id).await.expect("get second"),
        None,
        "the rejected connection must not be half-written"
    );
    assert_eq!(
        store
            .get_by_name(&name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(&first),
        "the name still resolves to the first connection"
    );
}

pub async fn concurrent_inserts_of_one_name_have_one_winner(store: Store) {
    const TASKS: usize = 20;
    let name = unique_name("race");
    let candidates: Vec<Connection> = (0..TASKS).map(|_| api_key_connection(&name)).collect();
    let mut handles = Vec::with_capacity(TASKS);
    for c in candidates.iter().cloned() {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let result = store.insert(&c).await;
            (c, result)
        }));
    }
    let mut winners = Vec::new();
    for handle in handles {
        let (c, result) = handle.await.expect("insert task");
        match result {
            Ok(()) => winners.push(c),
            Err(Error::NameTaken(n)) => assert_eq!(n, name),
            Err(other) => panic!("concurrent insert: expected Ok or NameTaken, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent insert wins");
    let winner = &winners[0];
    assert_eq!(
        store
            .get_by_name(&name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(winner)
    );
    for c in candidates.iter().filter(|c| c.id != winner.id) {
        assert_eq!(
            store.get(&c.id).await.expect("get loser"),
            None,
            "a losing insert left its connection behind"
        );
    }
}

pub async fn replace_with_expected_version(store: Store) {
    let v1 = api_key_connection(&unique_name("replace"));
    store.insert(&v1).await.expect("insert");

    let mut v2 = updated(&v1);
    v2.description = Some("second".to_owned());
    v2.config = ProviderConfig::ApiKey {
        api_key: dummy_envelope("rotated"),
    };
    v2.allowed_models = Some(vec!["gpt-4o".to_owned()]);
    store.replace(&v1, &v2, 1).await.expect("replace v1 -> v2");
    assert_eq!(store.get(&v1.id).await.expect("get").as_ref(), Some(&v2));
    assert_eq!(
        store
            .get_by_name(&v1.name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(&v2)
    );

    let mut v3 = updated(&v2);
    v3.description = None;
    store.replace(&v2, &v3, 2).await.expect("replace v2 -> v3");
    assert_eq!(store.get(&v1.id).await.expect("get").as_ref(), Some(&v3));
}

pub async fn replace_with_stale_version_changes_nothing(store: Store) {
    let v1 = api_key_connection(&unique_name("stale"));
    store.insert(&v1).await.expect("insert");
    let mut v2 = updated(&v1);
    v2.description = Some("winner".to_owned());
    store.replace(&v1, &v2, 1).await.expect("first replace");

    // A second writer that read v1 too.
    let mut late = updated(&v1);
    late.description = Some("loser".to_owned());
    match store.replace(&v1, &late, 1).await {
        Err(Error::VersionConflict { current }) => assert_eq!(current, 2),
        other => panic!("stale replace: expected VersionConflict, got {other:?}"),
    }
    assert_eq!(store.get(&v1.id).await.expect("get").as_ref(), Some(&v2));

    // The same with a rename: the new name must stay free.
    let mut late_rename = updated(&v1);
    late_rename.name = unique_name("stale-rename");
    match store.replace(&v1, &late_rename, 1).await {
        Err(Error::VersionConflict { current }) => assert_eq!(current, 2),
        other => panic!("stale renaming replace: expected VersionConflict, got {other:?}"),
    }
    assert_eq!(store.get(&v1.id).await.expect("get").as_ref(), Some(&v2));
    assert_eq!(
        store
            .get_by_name(&late_rename.name)
            .await
            .expect("get new name"),
        None,
        "a failed rename must not take the new name"
    );
    assert_eq!(
        store
            .get_by_name(&v1.name)
            .await
            .expect("get old name")
            .as_ref(),
        Some(&v2),
        "a failed rename must keep the old name"
    );
}

pub async fn replace_absent_is_not_found(store: Store) {
    let ghost = api_key_connection(&unique_name("ghost"));
    let next = updated(&ghost);
    match store.replace(&ghost, &next, 1).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("replace of an absent connection: expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get(&ghost.id).await.expect("get"), None);
    assert_eq!(
        store.get_by_name(&ghost.name).await.expect("get by name"),
        None
    );

    // Also after a delete.
    let gone = api_key_connection(&unique_name("gone"));
    store.insert(&gone).await.expect("insert");
    store.delete(&gone.id).await.expect("delete");
    match store.replace(&gone, &updated(&gone), 1).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("replace of a deleted connection: expected NotFound, got {other:?}"),
    }
    assert_eq!(store.get(&gone.id).await.expect("get"), None);
}

pub async fn rename_frees_old_name_and_takes_new(store: Store) {
    let old_name = unique_name("old");
    let new_name = unique_name("new");
    let v1 = api_key_connection(&old_name);
    store.insert(&v1).await.expect("insert");

    let mut v2 = updated(&v1);
    v2.name = new_name.clone();
    store.replace(&v1, &v2, 1).await.expect("rename");

    assert_eq!(store.get(&v1.id).await.expect("get").as_ref(), Some(&v2));
    assert_eq!(store.get_by_name(&old_name).await.expect("old name"), None);
    assert_eq!(
        store
            .get_by_name(&new_name)
            .await
            .expect("new name")
            .as_ref(),
        Some(&v2)
    );

    // The old name is free for another connection, the new one is not.
    let other = aws_connection(&old_name);
    store
        .insert(&other)
        .await
        .expect("insert under the freed name");
    assert_eq!(
        store
            .get_by_name(&old_name)
            .await
            .expect("old name")
            .as_ref(),
        Some(&other)
    );
    assert_name_taken(
        store.insert(&api_key_connection(&new_name)).await,
        &new_name,
        "insert under the new name",
    );

    // Renaming back and forth keeps one name per connection.
    let mut v3 = updated(&v2);
    v3.name = unique_name("third");
    store.replace(&v2, &v3, 2).await.expect("second rename");
    assert_eq!(store.get_by_name(&new_name).await.expect("new name"), None);
    assert_eq!(
        store
            .get_by_name(&v3.name)
            .await
            .expect("third name")
            .as_ref(),
        Some(&v3)
    );
}

pub async fn rename_onto_taken_name_changes_nothing(store: Store) {
    let a = api_key_connection(&unique_name("a"));
    let b = api_key_connection(&unique_name("b"));
    store.insert(&a).await.expect("insert a");
    store.insert(&b).await.expect("insert b");

    let mut b2 = updated(&b);
    b2.name = a.name.clone();
    b2.description = Some("should not be stored".to_owned());
    assert_name_taken(store.replace(&b, &b2, 1).await, &a.name, "rename onto a");

    assert_eq!(store.get(&b.id).await.expect("get b").as_ref(), Some(&b));
    assert_eq!(store.get(&a.id).await.expect("get a").as_ref(), Some(&a));
    assert_eq!(
        store
            .get_by_name(&a.name)
            .await
            .expect("a by name")
            .as_ref(),
        Some(&a)
    );
    assert_eq!(
        store
            .get_by_name(&b.name)
            .await
            .expect("b by name")
            .as_ref(),
        Some(&b)
    );

    // The version did not move: an update with version 1 still works.
    let mut b3 = updated(&b);
    b3.description = Some("after the failed rename".to_owned());
    store
        .replace(&b, &b3, 1)
        .await
        .expect("replace after failed rename");
    assert_eq!(store.get(&b.id).await.expect("get b").as_ref(), Some(&b3));
}

pub async fn delete_removes_connection_and_name(store: Store) {
    let name = unique_name("del");
    let a = api_key_connection(&name);
    let keep = api_key_connection(&unique_name("keep"));
    store.insert(&a).await.expect("insert");
    store.insert(&keep).await.expect("insert keep");

    store.delete(&a.id).await.expect("delete");
    assert_eq!(store.get(&a.id).await.expect("get"), None);
    assert_eq!(store.get_by_name(&name).await.expect("get by name"), None);
    assert_eq!(
        store.get(&keep.id).await.expect("get keep").as_ref(),
        Some(&keep),
        "delete touches only its connection"
    );

    match store.delete(&a.id).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("second delete: expected NotFound, got {other:?}"),
    }

    // The name is free again.
    let b = aws_connection(&name);
    store
        .insert(&b)
        .await
        .expect("insert under the deleted name");
    assert_eq!(
        store
            .get_by_name(&name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(&b)
    );

    // A renamed connection is deleted with its current name, not its first one.
    let mut b2 = updated(&b);
    b2.name = unique_name("del-renamed");
    store.replace(&b, &b2, 1).await.expect("rename");
    store.delete(&b.id).await.expect("delete renamed");
    assert_eq!(
        store.get_by_name(&b2.name).await.expect("renamed name"),
        None
    );
    store
        .insert(&api_key_connection(&b2.name))
        .await
        .expect("the renamed name is free after delete");
}

pub async fn delete_absent_is_not_found(store: Store) {
    match store.delete(&uuid::Uuid::now_v7().to_string()).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("delete absent: expected NotFound, got {other:?}"),
    }
}

/// Pages through the whole store with `limit`, checking order and cursor behaviour.
async fn list_all(store: &Store, limit: usize, after: Option<&str>) -> Vec<Connection> {
    let mut all: Vec<Connection> = Vec::new();
    let mut cursor = after.map(str::to_owned);
    for _ in 0..10_000 {
        let page = store
            .list(limit, cursor.as_deref())
            .await
            .expect("list page");
        assert!(page.len() <= limit, "a page holds at most `limit` items");
        if let Some(c) = &cursor {
            assert!(
                page.iter().all(|p| p.id.as_str() > c.as_str()),
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
            // A short page may end the listing; the next must then be empty.
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

pub async fn list_pages_in_ascending_id_order(store: Store) {
    let mut mine: Vec<Connection> = Vec::new();
    for i in 0..7 {
        let c = if i % 2 == 0 {
            api_key_connection(&unique_name("list"))
        } else {
            aws_connection(&unique_name("list"))
        };
        store.insert(&c).await.expect("insert");
        mine.push(c);
    }
    let mut mine_ids: Vec<String> = mine.iter().map(|c| c.id.clone()).collect();
    mine_ids.sort();

    assert!(
        store.list(0, None).await.expect("list 0").is_empty(),
        "limit 0 lists nothing"
    );

    for limit in [1, 3, 7, 100] {
        let all = list_all(&store, limit, None).await;
        let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "limit {limit}: ids strictly ascending, no duplicates"
        );
        let seen: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| mine_ids.iter().any(|m| m == id))
            .collect();
        assert_eq!(
            seen, mine_ids,
            "limit {limit}: every connection exactly once"
        );
        for c in &mine {
            let listed = all.iter().find(|l| l.id == c.id).expect("listed");
            assert_eq!(listed, c, "list returns the stored connection");
        }
    }

    // `after` an id in the middle: exactly the later ones.
    let pivot = &mine_ids[3];
    let later = list_all(&store, 2, Some(pivot)).await;
    let later_mine: Vec<&str> = later
        .iter()
        .map(|c| c.id.as_str())
        .filter(|id| mine_ids.iter().any(|m| m == id))
        .collect();
    let expected: Vec<&str> = mine_ids[4..].iter().map(String::as_str).collect();
    assert_eq!(later_mine, expected, "after a cursor");

    // A cursor whose connection was deleted meanwhile still works.
    store.delete(pivot).await.expect("delete pivot");
    let later = list_all(&store, 2, Some(pivot)).await;
    let later_mine: Vec<&str> = later
        .iter()
        .map(|c| c.id.as_str())
        .filter(|id| mine_ids.iter().any(|m| m == id))
        .collect();
    assert_eq!(later_mine, expected, "after a deleted cursor");

    // Deleted connections are not listed.
    let all = list_all(&store, 100, None).await;
    let ids: HashSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
    assert!(
        !ids.contains(pivot.as_str()),
        "a deleted connection is not listed"
    );
}

/// The largest connection validation lets through, give or take: 1000 allowed models of
/// 256 characters, a 1024-character description, 32 capacity entries and discovered
/// capacity for 50 models.
pub fn large_connection(name: &str) -> Connection {
    let mut c = api_key_connection(name);
    c.description = Some("d".repeat(1024));
    c.allowed_models = Some(
        (0..1000)
            .map(|i| format!("{i:04}-{}", "m".repeat(251)))
            .collect(),
    );
    let periods = ["minute", "hour", "day", "week", "month", "lifetime"];
    let mut entries = Vec::new();
    for p in periods {
        entries.push(json!({ "period": p, "requests": 1000, "tokens": 1_000_000 }));
        entries.push(json!({ "period": p, "requests": 10, "dimension": "source-ip" }));
    }
    c.capacity = parse_capacity(&json!(entries), "capacity").expect("valid capacity");
    let mut models = BTreeMap::new();
    for i in 0..50 {
        models.insert(
            format!("model-{i}"),
            serde_json::from_value(json!({
                "updatedAt": "2025-01-02T03:04:05.123456789Z",
                "capacity": [
                    { "period": "minute", "metric": "requests", "limit": 500, "remaining": 499, "reset": "6m0s" },
                    { "period": "minute", "metric": "tokens", "limit": 30000 }
                ],
                "errorMessage": "rate limited"
            }))
            .expect("valid discovered model"),
        );
    }
    c.discovered_capacity = DiscoveredCapacity { models };
    c
}

pub async fn large_connection_round_trips(store: Store) {
    let big = large_connection(&unique_name("large"));
    let size = serde_json::to_string(&big).expect("json").len();
    assert!(
        size > 250_000,
        "the large connection is large ({size} bytes)"
    );
    store.insert(&big).await.expect("insert large");
    assert_eq!(store.get(&big.id).await.expect("get").as_ref(), Some(&big));
    assert_eq!(
        store
            .get_by_name(&big.name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(&big)
    );

    let mut next = updated(&big);
    next.allowed_models = next
        .allowed_models
        .map(|m| m.into_iter().rev().collect::<Vec<_>>());
    store.replace(&big, &next, 1).await.expect("replace large");
    assert_eq!(store.get(&big.id).await.expect("get").as_ref(), Some(&next));

    // Several large ones in one listing (DynamoDB pages end at 1 MB).
    let mut ids = vec![big.id.clone()];
    for _ in 0..4 {
        let more = large_connection(&unique_name("large"));
        store.insert(&more).await.expect("insert large");
        ids.push(more.id.clone());
    }
    ids.sort();
    let listed = list_all(&store, 10, None).await;
    let listed_mine: Vec<String> = listed
        .into_iter()
        .map(|c| c.id)
        .filter(|id| ids.contains(id))
        .collect();
    assert_eq!(listed_mine, ids, "large connections list");
}
