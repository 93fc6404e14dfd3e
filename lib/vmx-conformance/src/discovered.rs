//! The [`DiscoveredCapacityStore`] contract, together with the connection store it belongs
//! to: discovered capacity and admin updates never erase each other, recording never moves
//! the version, deleting a connection removes its discovered capacity; every change of a
//! limit is returned once and kept in the history, which pages newest first.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use vmx_domain::Error;
use vmx_domain::capacity::Period;
use vmx_domain::connection::{Connection, DiscoveredModel};
use vmx_domain::discovered::{ChangeSource, DiscoveredCapacityStore, DiscoveredChange};
use vmx_domain::ports::ConnectionStore;

use crate::store::{api_key_connection, unique_name, updated};

/// The connection store and its discovered-capacity writer (usually the same object).
#[derive(Clone)]
pub struct Stores {
    pub connections: Arc<dyn ConnectionStore>,
    pub discovered: Arc<dyn DiscoveredCapacityStore>,
}

impl Stores {
    /// Both ports of one store.
    pub fn of<S: ConnectionStore + DiscoveredCapacityStore + 'static>(store: Arc<S>) -> Self {
        Self {
            connections: store.clone(),
            discovered: store,
        }
    }
}

/// Runs every case, each on stores fresh from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Stores>,
{
    record_shows_everywhere_without_version_bump(make().await).await;
    survives_replace_and_replace_survives_it(make().await).await;
    late_observations_are_dropped(make().await).await;
    absent_connection_is_not_found(make().await).await;
    delete_removes_discovered(make().await).await;
    concurrent_records_and_replaces_lose_nothing(make().await).await;
    history_keeps_every_change_once(make().await).await;
}

/// A discovered model observed at `at`, with `limit` requests per minute.
pub fn discovered(at: OffsetDateTime, limit: u64) -> DiscoveredModel {
    serde_json::from_value(json!({
        "updatedAt": vmx_domain::connection::rfc3339(at),
        "capacity": [
            { "period": "minute", "metric": "requests", "limit": limit, "remaining": limit - 1, "reset": "1s" },
            { "period": "minute", "metric": "tokens", "limit": limit * 1000 }
        ]
    }))
    .expect("valid discovered model")
}

fn with(c: &Connection, entries: &[(&str, &DiscoveredModel)]) -> Connection {
    let mut c = c.clone();
    for (model, d) in entries {
        c.discovered_capacity
            .models
            .insert((*model).to_owned(), (*d).clone());
    }
    c
}

async fn get(s: &Stores, id: &str) -> Option<Connection> {
    s.connections.get(id).await.expect("get")
}

pub async fn record_shows_everywhere_without_version_bump(s: Stores) {
    let c = api_key_connection(&unique_name("disc"));
    let bystander = api_key_connection(&unique_name("disc-other"));
    s.connections.insert(&c).await.expect("insert");
    s.connections.insert(&bystander).await.expect("insert");
    let t = OffsetDateTime::now_utc();
    let a = discovered(t, 500);
    let b = discovered(t, 60);
    s.discovered
        .record_discovered(&c.id, "gpt-4o", &a, ChangeSource::Headers)
        .await
        .expect("record a");
    s.discovered
        .record_discovered(&c.id, "o1/preview#x", &b, ChangeSource::Headers)
        .await
        .expect("record b");

    let expected = with(&c, &[("gpt-4o", &a), ("o1/preview#x", &b)]);
    assert_eq!(get(&s, &c.id).await.as_ref(), Some(&expected));
    assert_eq!(expected.version, c.version, "recording keeps the version");
    assert_eq!(
        s.connections
            .get_by_name(&c.name)
            .await
            .expect("get by name")
            .as_ref(),
        Some(&expected)
    );
    let listed = s.connections.list(10_000, None).await.expect("list");
    assert_eq!(listed.iter().find(|x| x.id == c.id), Some(&expected));
    assert_eq!(
        get(&s, &bystander.id).await.as_ref(),
        Some(&bystander),
        "other connections are untouched"
    );

    // A newer observation replaces the model's entry, and only it.
    let a2 = discovered(t + Duration::seconds(1), 400);
    s.discovered
        .record_discovered(&c.id, "gpt-4o", &a2, ChangeSource::Headers)
        .await
        .expect("record a2");
    assert_eq!(
        get(&s, &c.id).await,
        Some(with(&c, &[("gpt-4o", &a2), ("o1/preview#x", &b)]))
    );

    // The version did not move: an update expecting version 1 succeeds.
    let next = updated(&c);
    s.connections
        .replace(&c, &next, c.version)
        .await
        .expect("replace after recording");
}

pub async fn survives_replace_and_replace_survives_it(s: Stores) {
    let v1 = api_key_connection(&unique_name("disc-patch"));
    s.connections.insert(&v1).await.expect("insert");
    // The admin reads v1 (no discovered capacity yet)...
    let read_by_admin = get(&s, &v1.id).await.expect("present");
    // ...the gateway records a limit meanwhile...
    let t = OffsetDateTime::now_utc();
    let a = discovered(t, 500);
    s.discovered
        .record_discovered(&v1.id, "gpt-4o", &a, ChangeSource::Headers)
        .await
        .expect("record");
    // ...and the admin's update, built on the stale read, is written.
    let mut v2 = updated(&read_by_admin);
    v2.description = Some("patched".to_owned());
    v2.allowed_models = Some(vec!["gpt-4o".to_owned()]);
    s.connections
        .replace(&read_by_admin, &v2, 1)
        .await
        .expect("replace");
    assert_eq!(
        get(&s, &v1.id).await,
        Some(with(&v2, &[("gpt-4o", &a)])),
        "the update kept the discovered capacity and the limit kept the update"
    );

    // An update that carries other discovered capacity does not change it either.
    let mut v3 = updated(&v2);
    v3.discovered_capacity.models.clear();
    v3.discovered_capacity
        .models
        .insert("bogus".to_owned(), discovered(t, 1));
    s.connections.replace(&v2, &v3, 2).await.expect("replace");
    let mut v3_stored = v3.clone();
    v3_stored.discovered_capacity.models.clear();
    assert_eq!(
        get(&s, &v1.id).await,
        Some(with(&v3_stored, &[("gpt-4o", &a)]))
    );

    // Recording after the update keeps the update (and its version).
    let b = discovered(t, 30);
    s.discovered
        .record_discovered(&v1.id, "claude", &b, ChangeSource::Headers)
        .await
        .expect("record after update");
    let now = get(&s, &v1.id).await.expect("present");
    assert_eq!(now, with(&v3_stored, &[("gpt-4o", &a), ("claude", &b)]));
    assert_eq!(now.version, 3);
    // A rename keeps it too.
    let mut v4 = updated(&now);
    v4.name = unique_name("disc-renamed");
    s.connections.replace(&now, &v4, 3).await.expect("rename");
    assert_eq!(
        s.connections
            .get_by_name(&v4.name)
            .await
            .expect("by new name")
            .map(|c| c.discovered_capacity),
        Some(now.discovered_capacity)
    );
}

pub async fn late_observations_are_dropped(s: Stores) {
    let c = api_key_connection(&unique_name("disc-late"));
    s.connections.insert(&c).await.expect("insert");
    let t = OffsetDateTime::now_utc();
    let newer = discovered(t, 500);
    s.discovered
        .record_discovered(&c.id, "m", &newer, ChangeSource::Headers)
        .await
        .expect("record newer");
    for older in [discovered(t - Duration::seconds(5), 1), discovered(t, 2)] {
        s.discovered
            .record_discovered(&c.id, "m", &older, ChangeSource::Headers)
            .await
            .expect("a late observation is not an error");
    }
    assert_eq!(get(&s, &c.id).await, Some(with(&c, &[("m", &newer)])));
}

pub async fn absent_connection_is_not_found(s: Stores) {
    let ghost = api_key_connection(&unique_name("disc-ghost"));
    match s
        .discovered
        .record_discovered(
            &ghost.id,
            "m",
            &discovered(OffsetDateTime::now_utc(), 5),
            ChangeSource::Headers,
        )
        .await
    {
        Err(Error::NotFound { .. }) => {}
        other => panic!("record on an absent connection: expected NotFound, got {other:?}"),
    }
    assert_eq!(get(&s, &ghost.id).await, None, "nothing was created");
    // Invalid model ids are refused.
    let c = api_key_connection(&unique_name("disc-invalid"));
    s.connections.insert(&c).await.expect("insert");
    match s
        .discovered
        .record_discovered(
            &c.id,
            "",
            &discovered(OffsetDateTime::now_utc(), 5),
            ChangeSource::Headers,
        )
        .await
    {
        Err(Error::Invalid { .. }) => {}
        other => panic!("an empty model id: expected Invalid, got {other:?}"),
    }
}

pub async fn delete_removes_discovered(s: Stores) {
    let name = unique_name("disc-del");
    let c = api_key_connection(&name);
    s.connections.insert(&c).await.expect("insert");
    let t = OffsetDateTime::now_utc();
    s.discovered
        .record_discovered(&c.id, "m", &discovered(t, 5), ChangeSource::Headers)
        .await
        .expect("record");
    s.connections.delete(&c.id).await.expect("delete");
    assert_eq!(get(&s, &c.id).await, None);
    match s
        .discovered
        .record_discovered(&c.id, "m2", &discovered(t, 6), ChangeSource::Headers)
        .await
    {
        Err(Error::NotFound { .. }) => {}
        other => panic!("record after delete: expected NotFound, got {other:?}"),
    }
    assert_eq!(get(&s, &c.id).await, None, "recording did not resurrect it");
    // A new connection under the same name starts with nothing discovered.
    let again = api_key_connection(&name);
    s.connections.insert(&again).await.expect("insert again");
    assert_eq!(get(&s, &again.id).await, Some(again));
}

pub async fn concurrent_records_and_replaces_lose_nothing(s: Stores) {
    // Recorders write successive observations of their model while updaters run the
    // service's PATCH loop; at the end every update and every model's last observation must
    // be there.
    const MODELS: usize = 6;
    const OBSERVATIONS: i64 = 6;
    const UPDATERS: usize = 4;
    const UPDATES_EACH: usize = 4;
    let c = api_key_connection(&unique_name("disc-race"));
    s.connections.insert(&c).await.expect("insert");
    let t = OffsetDateTime::now_utc();
    let observation = move |i: usize, k: i64| discovered(t + Duration::seconds(k), 10 + i as u64);
    let mut handles = Vec::new();
    for i in 0..MODELS {
        let s = s.clone();
        let id = c.id.clone();
        handles.push(tokio::spawn(async move {
            for k in 0..OBSERVATIONS {
                s.discovered
                    .record_discovered(
                        &id,
                        &format!("model-{i}"),
                        &observation(i, k),
                        ChangeSource::Headers,
                    )
                    .await
                    .expect("record");
            }
        }));
    }
    for i in 0..UPDATERS {
        let s = s.clone();
        let id = c.id.clone();
        handles.push(tokio::spawn(async move {
            for j in 0..UPDATES_EACH {
                // The service's PATCH loop: read, change, replace; on a conflict, read again.
                let mut done = false;
                for _ in 0..500 {
                    let current = s.connections.get(&id).await.expect("get").expect("present");
                    let mut next = updated(&current);
                    let mut models = next.allowed_models.take().unwrap_or_default();
                    models.push(format!("allowed-{i}-{j}"));
                    next.allowed_models = Some(models);
                    match s
                        .connections
                        .replace(&current, &next, current.version)
                        .await
                    {
                        Ok(()) => {
                            done = true;
                            break;
                        }
                        Err(Error::VersionConflict { .. }) => continue,
                        Err(e) => panic!("replace: {e}"),
                    }
                }
                assert!(done, "replace kept conflicting");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let end = get(&s, &c.id).await.expect("present");
    let updates = UPDATERS * UPDATES_EACH;
    assert_eq!(end.version, 1 + updates as u64, "every update applied once");
    let mut allowed = end.allowed_models.clone().unwrap_or_default();
    allowed.sort();
    let mut want: Vec<String> = (0..UPDATERS)
        .flat_map(|i| (0..UPDATES_EACH).map(move |j| format!("allowed-{i}-{j}")))
        .collect();
    want.sort();
    assert_eq!(allowed, want, "no update lost");
    assert_eq!(
        end.discovered_capacity.models.len(),
        MODELS,
        "no discovered model lost"
    );
    for i in 0..MODELS {
        assert_eq!(
            end.discovered_capacity.models.get(&format!("model-{i}")),
            Some(&observation(i, OBSERVATIONS - 1)),
            "model-{i} holds its last observation"
        );
    }
}

/// (model, metric, old, new, source) of each change, for comparisons.
type Seen = (String, String, Option<u64>, Option<u64>, ChangeSource);

fn seen(changes: &[DiscoveredChange]) -> Vec<Seen> {
    changes
        .iter()
        .map(|c| (c.model.clone(), c.metric.clone(), c.old, c.new, c.source))
        .collect()
}

fn change(
    model: &str,
    metric: &str,
    old: Option<u64>,
    new: Option<u64>,
    source: ChangeSource,
) -> Seen {
    (model.to_owned(), metric.to_owned(), old, new, source)
}

pub async fn history_keeps_every_change_once(s: Stores) {
    use ChangeSource::{Headers, Refresh};
    let c = api_key_connection(&unique_name("disc-hist"));
    let other = api_key_connection(&unique_name("disc-hist-other"));
    s.connections.insert(&c).await.expect("insert");
    s.connections.insert(&other).await.expect("insert");
    let t = OffsetDateTime::now_utc();
    let record = |model: &'static str, at: OffsetDateTime, limit: u64, source: ChangeSource| {
        let s = s.clone();
        let id = c.id.clone();
        async move {
            s.discovered
                .record_discovered(&id, model, &discovered(at, limit), source)
                .await
                .expect("record")
        }
    };

    // First limits: changes from nothing.
    let first = record("gpt-4o", t, 500, Headers).await;
    assert_eq!(
        seen(&first),
        vec![
            change("gpt-4o", "requests", None, Some(500), Headers),
            change("gpt-4o", "tokens", None, Some(500_000), Headers),
        ]
    );
    assert!(
        first
            .iter()
            .all(|x| x.at == t && x.period == Period::Minute)
    );
    // The same limits again (remaining differs): no change.
    assert!(
        record("gpt-4o", t + Duration::seconds(1), 500, Headers)
            .await
            .is_empty()
    );
    // Lowered by a refresh.
    let lowered = record("gpt-4o", t + Duration::seconds(2), 400, Refresh).await;
    assert_eq!(
        seen(&lowered),
        vec![
            change("gpt-4o", "requests", Some(500), Some(400), Refresh),
            change("gpt-4o", "tokens", Some(500_000), Some(400_000), Refresh),
        ]
    );
    // Another model, and a late observation that changes nothing.
    let o1 = record("o1/x#y", t + Duration::seconds(3), 7, Headers).await;
    assert_eq!(o1.len(), 2);
    assert!(
        record("gpt-4o", t - Duration::seconds(5), 1, Headers)
            .await
            .is_empty()
    );

    // Newest first: o1's, the refresh's, the first.
    let all = s
        .discovered
        .discovered_history(&c.id, None, 100, None)
        .await
        .expect("history");
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].key() > w[1].key()),
        "newest first"
    );
    assert_eq!(
        seen(&all[..2]).into_iter().map(|x| x.0).collect::<Vec<_>>(),
        vec!["o1/x#y", "o1/x#y"]
    );
    let mut expected: Vec<Seen> = seen(&first);
    expected.extend(seen(&lowered));
    let mut gpt = seen(&all[2..]);
    gpt.reverse();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by(|a, b| a.1.cmp(&b.1).then(a.3.cmp(&b.3)));
    gpt.sort_by(|a, b| a.1.cmp(&b.1).then(a.3.cmp(&b.3)));
    assert_eq!(gpt, expected_sorted);
    assert_eq!(all[2..].iter().filter(|x| x.at == t).count(), 2);

    // Filtered by model.
    let only = s
        .discovered
        .discovered_history(&c.id, Some("gpt-4o"), 100, None)
        .await
        .expect("history of a model");
    assert_eq!(only, all[2..].to_vec());
    let none = s
        .discovered
        .discovered_history(&c.id, Some("absent"), 100, None)
        .await
        .expect("history of an unknown model");
    assert!(none.is_empty());

    // Pages of 4 then the rest, resuming after the last key; with a filter too.
    let page1 = s
        .discovered
        .discovered_history(&c.id, None, 4, None)
        .await
        .expect("page 1");
    assert_eq!(page1, all[..4].to_vec());
    let after = page1.last().map(DiscoveredChange::key);
    let page2 = s
        .discovered
        .discovered_history(&c.id, None, 4, after.as_deref())
        .await
        .expect("page 2");
    assert_eq!(page2, all[4..].to_vec());
    let filtered = s
        .discovered
        .discovered_history(&c.id, Some("gpt-4o"), 1, Some(&all[2].key()))
        .await
        .expect("filtered page");
    assert_eq!(filtered, all[3..4].to_vec());

    // Other connections have their own history.
    assert!(
        s.discovered
            .discovered_history(&other.id, None, 100, None)
            .await
            .expect("other history")
            .is_empty()
    );
}
