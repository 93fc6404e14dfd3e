//! Property tests of the prioritization pool parser (`PUT /v1/prioritization`): arbitrary
//! and near-valid bodies never panic; an accepted definition keeps every invariant (sum of
//! minimums, unique names, ranks and keys, known keys, min <= max) and survives a round
//! trip; a refused one is `Error::Invalid` naming a field of the body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};
use vmx_domain::Error;
use vmx_domain::prioritization::Prioritization;

const KNOWN: [&str; 4] = ["k1", "k2", "k3", "k4"];

fn known(id: &str) -> bool {
    KNOWN.contains(&id)
}

fn pool() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["web", "batch", "api", "default", "Bad!", ""]),
        prop_oneof![(0u64..5).prop_map(|r| json!(r)), Just(json!(-1)), Just(json!("1"))],
        prop::collection::vec(prop::sample::select(vec!["k1", "k2", "k3", "k4", "x9"]), 0..3),
        prop_oneof![(0u64..=110).prop_map(|v| json!(v)), Just(json!(null)), Just(json!(1.5))],
        prop_oneof![(0u64..=110).prop_map(|v| json!(v)), Just(json!("50"))],
    )
        .prop_map(|(name, rank, keys, min, max)| {
            json!({"name": name, "rank": rank, "apiKeys": keys, "minReservation": min, "maxReservation": max})
        })
}

fn check(body: &Value) {
    match Prioritization::parse(body, known) {
        Ok(def) => {
            let min_sum: u32 = def.pools.iter().map(|p| u32::from(p.min_reservation)).sum();
            assert!(min_sum <= 100, "{body}");
            let names: BTreeSet<_> = def.pools.iter().map(|p| &p.name).collect();
            let ranks: BTreeSet<_> = def.pools.iter().map(|p| p.rank).collect();
            assert_eq!(names.len(), def.pools.len());
            assert_eq!(ranks.len(), def.pools.len());
            let keys: Vec<_> = def.key_ids().collect();
            let unique: BTreeSet<_> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len(), "a key in two pools: {body}");
            assert!(keys.iter().all(|k| known(k)));
            for p in &def.pools {
                assert!(p.min_reservation <= p.max_reservation && p.max_reservation <= 100);
                assert!(p.max_reservation > 0 && p.name != "default");
            }
            let again = serde_json::to_value(&def).unwrap();
            assert_eq!(Prioritization::parse(&again, known).unwrap(), def);
        }
        Err(Error::Invalid { field, .. }) => {
            assert!(
                ["pools", "body", "extra"].contains(&field.as_str()) || field.starts_with("pools["),
                "{field}"
            );
            if let Some(rest) = field.strip_prefix("pools[") {
                let i: usize = rest.split(']').next().unwrap().parse().unwrap();
                assert!(
                    body["pools"].get(i).is_some(),
                    "{field} names no pool of {body}"
                );
            }
        }
        Err(other) => panic!("not a validation error: {other:?}"),
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn near_valid_definitions(pools in prop::collection::vec(pool(), 0..6)) {
        check(&json!({"pools": pools}));
    }

    #[test]
    fn malformed_bodies(v in prop_oneof![
        Just(json!(null)), Just(json!([])), Just(json!({"pools": {}})),
        Just(json!({"pools": [1, "x"]})), Just(json!({"pools": [], "extra": 1})),
        ".*".prop_map(|s| json!({"pools": [{"name": s}]})),
    ]) {
        check(&v);
    }
}

#[test]
fn the_sum_of_minimums_names_the_pool_that_crosses_100() {
    let body = json!({"pools": [
        {"name": "a", "rank": 1, "apiKeys": ["k1"], "minReservation": 50, "maxReservation": 100},
        {"name": "b", "rank": 2, "apiKeys": ["k2"], "minReservation": 50, "maxReservation": 100},
        {"name": "c", "rank": 3, "apiKeys": ["k3"], "minReservation": 1, "maxReservation": 100},
    ]});
    match Prioritization::parse(&body, known) {
        Err(Error::Invalid { field, message }) => {
            assert_eq!(field, "pools[2].minReservation");
            assert!(message.contains("101"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
