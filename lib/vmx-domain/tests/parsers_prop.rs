//! Property tests of the request parsers (issue 8, hostile input): connection create and patch
//! bodies, the config merge patch, capacity entries, API-key bodies and usage ranges.
//!
//! Every parser gets both arbitrary JSON and near-valid bodies built from its own vocabulary
//! (so the deep branches are reached), and must: never panic; on success return values that
//! keep the documented invariants and survive a round trip; on failure return
//! `Error::Invalid` whose `field` names the offending input. Case counts are fixed so the file
//! runs in a few seconds inside `cargo test`; `scripts/fuzz.sh` fuzzes the same parsers with
//! libFuzzer for longer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use vmx_domain::Error;
use vmx_domain::api_key::NewApiKey;
use vmx_domain::capacity::{CapacityEntry, MAX_ENTRIES, parse_capacity};
use vmx_domain::connection::{
    ConfigInput, ConnectionPatch, NewConnection, ProviderConfig, SecretInput, parse_config,
    patched_config, valid_region, valid_role_arn, validate_name,
};
use vmx_domain::json::join;
use vmx_domain::provider::{AuthKind, ProviderKind};
use vmx_domain::secret::{Envelope, ExposeSecret, WrappedKey};
use vmx_domain::usage::UsageRange;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Nothing is written next to the sources; a failure prints its minimal input.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies

/// Strings a parser may meet: arbitrary Unicode, the parsers' own vocabulary, the edges of
/// their bounds, control characters and look-alikes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => prop::sample::select(vec![
            "", " ", "\t", "a", "prod-openai", "a/b", "/", " lead", "trail ", "bad\nname", "nul\0",
            "minute", "hour", "day", "week", "month", "lifetime", "Minute", "fortnight",
            "source-ip", "user", "openai", "anthropic", "gemini", "google", "groq", "perplexity",
            "aws-bedrock", "aws-bedrock-invoke", "********", "****x", "sk-test-123", "us-east-1",
            "us-gov-west-1", "eu-central-2", "us-east", "US-EAST-1", "arn:aws:iam::123456789012:role/vmx",
            "arn:aws:iam::123456789012:role/", "arn:aws-cn:iam::123456789012:role/a/b",
            "arn:aws:iam::12345678901:role/x", "vmx-0123", "e", "DRAFT", "1", "01", "standard",
            "optimized", "enabled", "disabled", "enabled_full", "gr1abc",
            "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123",
            "2030-01-31T00:00:00Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59", "2025-02-30T00:00:00Z", "2025-01-01", "hour", "day",
            "\u{202e}rtl", "ｎａｍｅ", "é", "\u{feff}bom",
        ])
        .prop_map(str::to_owned),
        1 => (0usize..1500, prop::sample::select(vec!['a', 'é', '\u{1F600}', ' '])).prop_map(|(n, c)| {
            std::iter::repeat_n(c, n).collect()
        }),
        1 => prop::sample::select(vec![127usize, 128, 129, 1023, 1024, 1025, 4095, 4096, 4097])
            .prop_map(|n| "x".repeat(n)),
        1 => "[a-z0-9/ \\-]{0,12}",
        1 => rfc3339(),
    ]
}

/// RFC 3339 date-times across the whole four-digit year range, with offsets up to ±23:59 and
/// fractional seconds, plus a few near-misses.
fn rfc3339() -> impl Strategy<Value = String> {
    (
        0u32..=9999,
        1u32..=12,
        1u32..=31,
        0u32..=23,
        0u32..=59,
        0u32..=60,
        prop::option::of(0u32..1_000_000_000),
        prop_oneof![
            Just("Z".to_owned()),
            (any::<bool>(), 0u32..=23, 0u32..=59)
                .prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })),
            Just("z".to_owned()),
            Just(String::new()),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = frac.map(|f| format!(".{f:09}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(100),
            json!(1.5),
            json!(1e300),
            json!(9007199254740992u64),
            json!(9007199254740993u64),
            json!(u64::MAX),
            json!(i64::MIN),
        ]),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, up to a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Mostly `good`, sometimes anything.
fn or_junk<S: Strategy<Value = Value> + 'static>(good: S) -> BoxedStrategy<Value> {
    prop_oneof![4 => good, 1 => any_json()].boxed()
}

/// An object with each of `fields` present or not; extra keys now and then.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, s)| {
            prop::option::weighted(0.7, s)
                .prop_map(move |v| v.map(|v| (k.to_owned(), v)))
                .boxed()
        })
        .collect();
    let extra = prop::option::weighted(0.1, (text(), any_json()));
    (parts, extra)
        .prop_map(|(parts, extra)| {
            let mut m = Map::new();
            for (k, v) in parts.into_iter().flatten().chain(extra) {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

fn capacity_entry() -> BoxedStrategy<Value> {
    let period = prop::sample::select(vec![
        "minute", "hour", "day", "week", "month", "lifetime", "Minute", "year",
    ])
    .prop_map(Value::from);
    let limit = prop_oneof![
        4 => (1u64..1_000_000).prop_map(Value::from),
        1 => number(),
    ];
    object(vec![
        ("period", or_junk(period)),
        ("requests", or_junk(limit.clone())),
        ("tokens", or_junk(limit)),
        ("enabled", or_junk(any::<bool>().prop_map(Value::Bool))),
        (
            "dimension",
            or_junk(prop::sample::select(vec!["source-ip", "user"]).prop_map(Value::from)),
        ),
    ])
}

fn capacity() -> BoxedStrategy<Value> {
    or_junk(
        prop_oneof![
            8 => prop::collection::vec(capacity_entry(), 0..8),
            1 => prop::collection::vec(capacity_entry(), 30..36),
        ]
        .prop_map(Value::Array),
    )
}

fn api_key_config() -> BoxedStrategy<Value> {
    object(vec![("apiKey", or_junk(text().prop_map(Value::String)))])
}

fn aws_config() -> BoxedStrategy<Value> {
    let perf = object(vec![(
        "latency",
        or_junk(prop::sample::select(vec!["standard", "optimized", "fast"]).prop_map(Value::from)),
    )]);
    let guard = object(vec![
        (
            "guardrailIdentifier",
            or_junk(
                prop::sample::select(vec![
                    "gr1abc",
                    "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123",
                    "arn:aws:bedrock:us-east-1:123:guardrail/abc",
                    "Bad",
                ])
                .prop_map(Value::from),
            ),
        ),
        (
            "guardrailVersion",
            or_junk(prop::sample::select(vec!["DRAFT", "1", "12", "01", ""]).prop_map(Value::from)),
        ),
        (
            "trace",
            or_junk(
                prop::sample::select(vec!["enabled", "disabled", "enabled_full", "on"])
                    .prop_map(Value::from),
            ),
        ),
    ]);
    object(vec![
        (
            "region",
            or_junk(
                prop::sample::select(vec![
                    "us-east-1",
                    "us-gov-west-1",
                    "eu-central-2",
                    "us-east",
                ])
                .prop_map(Value::from),
            ),
        ),
        (
            "iamRoleArn",
            or_junk(
                prop::sample::select(vec![
                    "arn:aws:iam::123456789012:role/vmx",
                    "arn:aws:iam::123456789012:role/path/vmx",
                    "arn:aws:iam::1234:role/vmx",
                    "arn:aws:s3:::bucket",
                ])
                .prop_map(Value::from),
            ),
        ),
        (
            "externalId",
            or_junk(prop_oneof!["[A-Za-z0-9+=,.@:/_-]{0,20}", text()].prop_map(Value::String)),
        ),
        ("performanceConfig", or_junk(perf)),
        ("guardrailConfig", or_junk(guard)),
    ])
}

fn provider_id() -> BoxedStrategy<Value> {
    or_junk(
        prop::sample::select(vec![
            "openai",
            "anthropic",
            "gemini",
            "groq",
            "perplexity",
            "aws-bedrock",
            "aws-bedrock-invoke",
            "google",
            "OpenAI",
        ])
        .prop_map(Value::from),
    )
}

fn allowed_models() -> BoxedStrategy<Value> {
    or_junk(
        prop::collection::vec(or_junk(text().prop_map(Value::String)), 0..6).prop_map(Value::Array),
    )
}

fn connection_body() -> BoxedStrategy<Value> {
    object(vec![
        ("name", or_junk(text().prop_map(Value::String))),
        ("description", or_junk(text().prop_map(Value::String))),
        ("provider", provider_id()),
        (
            "config",
            prop_oneof![api_key_config(), aws_config()].boxed(),
        ),
        ("capacity", capacity()),
        ("allowedModels", allowed_models()),
        ("version", or_junk(number())),
    ])
}

fn any_body() -> BoxedStrategy<Value> {
    prop_oneof![3 => connection_body(), 1 => any_json()].boxed()
}

fn provider() -> impl Strategy<Value = ProviderKind> {
    prop::sample::select(ProviderKind::ALL.to_vec())
}

// ---------------------------------------------------------------------------------------
// Checks

/// The error is `Invalid` and its field is `body` (not an object) or starts at a key that
/// the input really has (`capacity[3].period`, `config.apiKey`, an unknown key itself).
fn assert_names_field(body: &Value, root: &str, e: &Error) {
    let Error::Invalid { field, message } = e else {
        panic!("a parser returned a non-validation error: {e:?}");
    };
    assert!(!message.is_empty(), "empty message for {field}");
    assert!(!field.is_empty(), "an error names its field ({message})");
    let under = |key: &str| {
        let full = join(root, key);
        field == &full
            || field.starts_with(&format!("{full}."))
            || field.starts_with(&format!("{full}["))
    };
    let ok = field == "body"
        || field == root
        || match body {
            Value::Object(m) => m.keys().any(|k| under(k)) || known_required(field),
            _ => false,
        };
    assert!(
        ok,
        "error field {field:?} ({message}) names nothing in {body}"
    );
}

/// Required fields are named even when absent.
fn known_required(field: &str) -> bool {
    [
        "name",
        "provider",
        "config",
        "config.apiKey",
        "config.region",
        "config.iamRoleArn",
        "config.performanceConfig.latency",
        "config.guardrailConfig.guardrailIdentifier",
        "config.guardrailConfig.guardrailVersion",
    ]
    .contains(&field)
        || (field.starts_with("capacity[") && field.ends_with("].period"))
}

fn check_capacity(entries: &[CapacityEntry]) {
    assert!(entries.len() <= MAX_ENTRIES);
    for (i, e) in entries.iter().enumerate() {
        assert!(e.requests.is_some() || e.tokens.is_some());
        for n in [e.requests, e.tokens].into_iter().flatten() {
            assert!((1..=1u64 << 53).contains(&n));
        }
        assert!(
            entries[..i]
                .iter()
                .all(|p| (p.period, p.dimension) != (e.period, e.dimension)),
            "duplicate entry accepted"
        );
    }
}

fn check_allowed(models: &Option<Vec<String>>) {
    if let Some(models) = models {
        for (i, m) in models.iter().enumerate() {
            assert!(!m.trim().is_empty() && m.len() <= 256 && !m.chars().any(char::is_control));
            assert!(!models[..i].contains(m), "duplicates are dropped");
        }
    }
}

fn check_config(provider: ProviderKind, c: &ConfigInput) {
    match (provider.auth(), c) {
        (AuthKind::ApiKey, ConfigInput::ApiKey(SecretInput::New(s))) => {
            let s = s.expose_secret();
            assert!(!s.trim().is_empty() && s.len() <= 4096 && !s.chars().any(char::is_control));
            assert!(
                !s.starts_with("****"),
                "a masked value is never a new secret"
            );
        }
        (AuthKind::ApiKey, ConfigInput::ApiKey(SecretInput::Keep)) => {}
        (AuthKind::IamRole, ConfigInput::Aws { config, .. }) => {
            assert!(valid_region(&config.region));
            assert!(valid_role_arn(&config.iam_role_arn));
        }
        _ => panic!("config kind does not match provider {provider}"),
    }
}

/// The JSON a client would send for a parsed config (to re-parse it).
fn config_json(c: &ConfigInput) -> Value {
    match c {
        ConfigInput::ApiKey(SecretInput::New(s)) => json!({"apiKey": s.expose_secret()}),
        ConfigInput::ApiKey(SecretInput::Keep) => json!({}),
        ConfigInput::Aws {
            config,
            external_id_given,
        } => {
            let mut v = serde_json::to_value(config).unwrap();
            if !external_id_given && let Value::Object(o) = &mut v {
                o.remove("externalId");
            }
            v
        }
    }
}

fn same_config(a: &ConfigInput, b: &ConfigInput) -> bool {
    match (a, b) {
        (ConfigInput::ApiKey(SecretInput::New(x)), ConfigInput::ApiKey(SecretInput::New(y))) => {
            x.expose_secret() == y.expose_secret()
        }
        (ConfigInput::ApiKey(SecretInput::Keep), ConfigInput::ApiKey(SecretInput::Keep)) => true,
        (
            ConfigInput::Aws {
                config: x,
                external_id_given: gx,
            },
            ConfigInput::Aws {
                config: y,
                external_id_given: gy,
            },
        ) => x == y && gx == gy,
        _ => false,
    }
}

fn stored(provider: ProviderKind) -> ProviderConfig {
    match provider.auth() {
        AuthKind::ApiKey => ProviderConfig::ApiKey {
            api_key: Envelope {
                v: 1,
                alg: "XChaCha20-Poly1305".into(),
                key: WrappedKey {
                    kid: "local:test".into(),
                    blob: "AAAA".into(),
                },
                nonce: "AAAA".into(),
                ct: "AAAA".into(),
            },
        },
        AuthKind::IamRole => {
            let ConfigInput::Aws { config, .. } = parse_config(
                provider,
                &json!({"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx",
                        "externalId": "vmx-0123456789abcdef"}),
                "config",
            )
            .unwrap() else {
                unreachable!()
            };
            ProviderConfig::Aws(config)
        }
    }
}

const NOW: OffsetDateTime = datetime!(2026-06-15 12:00:00 UTC);

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn connection_create(body in any_body()) {
        match NewConnection::parse(&body) {
            Ok(c) => {
                validate_name(&c.name, "name").unwrap();
                assert!(c.description.as_ref().is_none_or(|d| d.chars().count() <= 1024));
                check_capacity(&c.capacity);
                check_allowed(&c.allowed_models);
                check_config(c.provider, &c.config);
                assert!(!matches!(c.config, ConfigInput::ApiKey(SecretInput::Keep)));
                // Round trip: what was accepted, sent again, is accepted the same.
                let mut again = json!({
                    "name": c.name, "provider": c.provider.id(), "config": config_json(&c.config),
                    "capacity": c.capacity,
                });
                if let Some(d) = &c.description { again["description"] = json!(d); }
                if let Some(m) = &c.allowed_models { again["allowedModels"] = json!(m); }
                let b = NewConnection::parse(&again).unwrap();
                assert_eq!(b.name, c.name);
                assert_eq!(b.description, c.description);
                assert_eq!(b.capacity, c.capacity);
                assert_eq!(b.allowed_models, c.allowed_models);
                assert!(same_config(&b.config, &c.config));
            }
            Err(e) => assert_names_field(&body, "", &e),
        }
    }

    #[test]
    fn connection_patch(body in any_body(), provider in provider()) {
        match ConnectionPatch::parse(&body, provider) {
            Ok(p) => {
                if let Some(n) = &p.name { validate_name(n, "name").unwrap(); }
                if let Some(c) = &p.capacity { check_capacity(c); }
                if let Some(m) = &p.allowed_models { check_allowed(m); }
                assert!(p.config.as_ref().is_none_or(Value::is_object));
                assert!(p.version.is_none_or(|v| v >= 1));
            }
            Err(e) => assert_names_field(&body, "", &e),
        }
    }

    #[test]
    fn capacity_entries(value in prop_oneof![3 => capacity(), 1 => any_json()]) {
        match parse_capacity(&value, "capacity") {
            Ok(entries) => {
                check_capacity(&entries);
                let again = parse_capacity(&serde_json::to_value(&entries).unwrap(), "capacity")
                    .unwrap();
                assert_eq!(again, entries);
            }
            Err(e) => {
                let Error::Invalid { field, message } = &e else { panic!("{e:?}") };
                assert!(field.starts_with("capacity") && !message.is_empty(), "{field}");
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn config_merge_patch(
        patch in prop_oneof![api_key_config(), aws_config(), any_json()],
        provider in provider(),
    ) {
        let stored = stored(provider);
        match patched_config(provider, &stored, &patch) {
            Ok(c) => {
                check_config(provider, &c);
                if let (ProviderConfig::Aws(s), ConfigInput::Aws { config, .. }) = (&stored, &c)
                    && patch.as_object().is_some_and(Map::is_empty)
                {
                    assert_eq!(s, config, "an empty patch keeps the stored config");
                }
            }
            Err(e) => {
                let Error::Invalid { field, .. } = &e else { panic!("{e:?}") };
                assert!(field.starts_with("config"), "config errors are under config: {field}");
            }
        }
        // An empty patch is always accepted and keeps the secret.
        let kept = patched_config(provider, &stored, &json!({})).unwrap();
        if provider.auth() == AuthKind::ApiKey {
            assert!(matches!(kept, ConfigInput::ApiKey(SecretInput::Keep)));
        }
    }

    #[test]
    fn api_key_body(
        body in prop_oneof![
            3 => object(vec![
                ("name", or_junk(text().prop_map(Value::String))),
                ("connections", allowed_models()),
                ("expiresAt", or_junk(prop_oneof![rfc3339(), text()].prop_map(Value::String))),
            ]),
            1 => any_json(),
        ],
    ) {
        match NewApiKey::parse(&body, NOW) {
            Ok(k) => {
                if let Some(n) = &k.name {
                    assert!(!n.trim().is_empty() && n.chars().count() <= 128);
                }
                if let Some(c) = &k.connections {
                    assert!(!c.is_empty() && c.iter().all(|c| !c.contains('/')));
                }
                assert!(k.expires_at.is_none_or(|t| t > NOW && t.offset().is_utc()));
                let mut again = json!({});
                if let Some(n) = &k.name { again["name"] = json!(n); }
                if let Some(c) = &k.connections { again["connections"] = json!(c); }
                if let Some(t) = k.expires_at { again["expiresAt"] = json!(t.format(&Rfc3339).unwrap()); }
                assert_eq!(NewApiKey::parse(&again, NOW).unwrap(), k);
            }
            Err(e) => assert_names_field(&body, "", &e),
        }
    }

    #[test]
    fn usage_range(
        from in prop::option::of(prop_oneof![3 => rfc3339(), 1 => text()]),
        to in prop::option::of(prop_oneof![3 => rfc3339(), 1 => text()]),
        granularity in prop::option::of(prop::sample::select(vec!["hour", "day", "week", "", "HOUR"])),
    ) {
        match UsageRange::parse(from.as_deref(), to.as_deref(), granularity, NOW) {
            Ok(r) => {
                assert!(r.from < r.to);
                assert!(r.from.offset().is_utc() && r.to.offset().is_utc());
                assert!(r.to - r.from <= time::Duration::days(400));
            }
            Err(e) => {
                let Error::Invalid { field, .. } = &e else { panic!("{e:?}") };
                assert!(["from", "to", "granularity"].contains(&field.as_str()), "{field}");
            }
        }
    }
}

/// Inputs the properties found or that sit on an edge, kept as plain regression tests.
#[test]
fn date_times_at_the_edge_of_the_range_are_errors_not_panics() {
    for t in [
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T12:00:00-12:00",
        "0000-01-01T00:00:00+23:59",
    ] {
        let _ = NewApiKey::parse(&json!({"expiresAt": t}), NOW);
        let _ = UsageRange::parse(Some(t), None, None, NOW);
        let _ = UsageRange::parse(None, Some(t), Some("day"), NOW);
    }
}

#[test]
fn an_empty_key_is_still_named() {
    let field = |r: Result<(), Error>| match r {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(NewConnection::parse(&json!({"": 1})).map(|_| ())),
        "[\"\"]"
    );
    assert_eq!(
        field(
            NewConnection::parse(&json!({"name": "a", "provider": "openai",
                "config": {"apiKey": "k", "": 1}}))
            .map(|_| ())
        ),
        "config[\"\"]"
    );
    assert_eq!(
        field(NewApiKey::parse(&json!({"": 1}), NOW).map(|_| ())),
        "[\"\"]"
    );
}
