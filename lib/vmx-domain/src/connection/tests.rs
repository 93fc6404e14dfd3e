use super::*;
use secrecy::ExposeSecret;
use serde_json::json;

fn invalid_field<T>(r: Result<T>) -> String {
    match r {
        Err(Error::Invalid { field, .. }) => field,
        Err(other) => format!("other error: {other}"),
        Ok(_) => "accepted".to_owned(),
    }
}

fn bedrock(config: Value) -> Value {
    json!({"name": "b", "provider": "aws-bedrock", "config": config})
}

#[test]
fn each_api_key_provider_accepts_a_key_and_rejects_bad_configs() {
    for p in ["openai", "anthropic", "gemini", "groq", "perplexity"] {
        let ok = NewConnection::parse(
            &json!({"name": "c", "provider": p, "config": {"apiKey": "k-123"}}),
        )
        .expect("valid");
        assert_eq!(ok.provider.id(), p);
        match ok.config {
            ConfigInput::ApiKey(SecretInput::New(s)) => assert_eq!(s.expose_secret(), "k-123"),
            _ => panic!("expected a new secret for {p}"),
        }
        let cases = [
            (json!({"name": "c", "provider": p}), "config"),
            (
                json!({"name": "c", "provider": p, "config": {}}),
                "config.apiKey",
            ),
            (
                json!({"name": "c", "provider": p, "config": {"apiKey": ""}}),
                "config.apiKey",
            ),
            (
                json!({"name": "c", "provider": p, "config": {"apiKey": "  "}}),
                "config.apiKey",
            ),
            (
                json!({"name": "c", "provider": p, "config": {"apiKey": 42}}),
                "config.apiKey",
            ),
            (
                json!({"name": "c", "provider": p, "config": {"apiKey": "********"}}),
                "config.apiKey",
            ),
            (
                json!({"name": "c", "provider": p, "config": {"apiKey": "k", "region": "us-east-1"}}),
                "config.region",
            ),
            (
                json!({"name": "c", "provider": p, "config": "sk-..."}),
                "config",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(
                invalid_field(NewConnection::parse(&body)),
                field,
                "{p}: {body}"
            );
        }
    }
}

#[test]
fn bedrock_configs_are_validated_field_by_field() {
    for p in ["aws-bedrock", "aws-bedrock-invoke"] {
        let body = json!({"name": "b", "provider": p, "config": {
            "region": "us-east-1",
            "iamRoleArn": "arn:aws:iam::123456789012:role/vm-x-ai-bedrock-role",
            "performanceConfig": {"latency": "optimized"},
            "guardrailConfig": {"guardrailIdentifier": "abc123guardrail", "guardrailVersion": "DRAFT"}
        }});
        let parsed = NewConnection::parse(&body).expect("valid");
        match parsed.config {
            ConfigInput::Aws {
                config,
                external_id_given,
            } => {
                assert!(!external_id_given);
                let g = config.guardrail_config.expect("guardrail");
                assert_eq!(
                    g.trace,
                    GuardrailTrace::Enabled,
                    "trace defaults to enabled"
                );
                assert_eq!(
                    config.performance_config.map(|p| p.latency),
                    Some(Latency::Optimized)
                );
            }
            ConfigInput::ApiKey(_) => panic!("expected an AWS config"),
        }
    }
    let arn = "arn:aws:iam::123456789012:role/r";
    let cases = [
        (json!({"iamRoleArn": arn}), "config.region"),
        (
            json!({"region": "US-EAST-1", "iamRoleArn": arn}),
            "config.region",
        ),
        (
            json!({"region": "useast1", "iamRoleArn": arn}),
            "config.region",
        ),
        (json!({"region": "us-east-1"}), "config.iamRoleArn"),
        (
            json!({"region": "us-east-1", "iamRoleArn": "arn:aws:iam::12345:role/r"}),
            "config.iamRoleArn",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:user/r"}),
            "config.iamRoleArn",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "apiKey": "x"}),
            "config.apiKey",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "externalId": "a b"}),
            "config.externalId",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "performanceConfig": {"latency": "fast"}}),
            "config.performanceConfig.latency",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "performanceConfig": {}}),
            "config.performanceConfig.latency",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "performanceConfig": {"latency": "standard", "x": 1}}),
            "config.performanceConfig.x",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "guardrailConfig": {"guardrailVersion": "1"}}),
            "config.guardrailConfig.guardrailIdentifier",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "guardrailConfig": {"guardrailIdentifier": "Bad Id", "guardrailVersion": "1"}}),
            "config.guardrailConfig.guardrailIdentifier",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "guardrailConfig": {"guardrailIdentifier": "abc", "guardrailVersion": "v1"}}),
            "config.guardrailConfig.guardrailVersion",
        ),
        (
            json!({"region": "us-east-1", "iamRoleArn": arn, "guardrailConfig": {"guardrailIdentifier": "abc", "guardrailVersion": "1", "trace": "on"}}),
            "config.guardrailConfig.trace",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(
            invalid_field(NewConnection::parse(&bedrock(config.clone()))),
            field,
            "{config}"
        );
    }
    let ok = [
        json!({"region": "us-gov-west-1", "iamRoleArn": "arn:aws-us-gov:iam::123456789012:role/path/to/r", "externalId": "ext-1"}),
        json!({"region": "eu-central-1", "iamRoleArn": arn, "guardrailConfig": {
            "guardrailIdentifier": "arn:aws:bedrock:eu-central-1:123456789012:guardrail/abc123",
            "guardrailVersion": "12", "trace": "enabled_full"}}),
    ];
    for config in ok {
        assert!(
            NewConnection::parse(&bedrock(config.clone())).is_ok(),
            "{config}"
        );
    }
}

#[test]
fn top_level_fields_are_validated() {
    let base = |extra: Value| {
        let mut b = json!({"name": "c", "provider": "openai", "config": {"apiKey": "k"}});
        merge_patch(&mut b, &extra);
        b
    };
    let long = "x".repeat(NAME_MAX + 1);
    let cases = [
        (json!([1, 2]), "body"),
        (base(json!({"name": ""})), "name"),
        (base(json!({"name": long})), "name"),
        (base(json!({"name": "a/b"})), "name"),
        (base(json!({"name": 5})), "name"),
        (base(json!({"provider": "google"})), "provider"),
        (base(json!({"provider": "OpenAI"})), "provider"),
        (base(json!({"description": 1})), "description"),
        (base(json!({"allowedModels": "gpt-4o"})), "allowedModels"),
        (
            base(json!({"allowedModels": ["gpt-4o", 3]})),
            "allowedModels[1]",
        ),
        (base(json!({"allowedModels": [""]})), "allowedModels[0]"),
        (
            base(json!({"capacity": [{"period": "week"}]})),
            "capacity[0]",
        ),
        (base(json!({"id": "mine"})), "id"),
        (
            base(json!({"discoveredCapacity": {}})),
            "discoveredCapacity",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(invalid_field(NewConnection::parse(&body)), field, "{body}");
    }
    let mut no_name = base(json!({}));
    if let Value::Object(m) = &mut no_name {
        m.remove("name");
    }
    assert_eq!(invalid_field(NewConnection::parse(&no_name)), "name");
}

#[test]
fn patch_keeps_masked_or_absent_secrets_and_takes_new_ones() {
    let stored = ProviderConfig::ApiKey {
        api_key: Envelope {
            v: 1,
            alg: "test".into(),
            key: crate::secret::WrappedKey {
                kid: "k".into(),
                blob: "b".into(),
            },
            nonce: "n".into(),
            ct: "c".into(),
        },
    };
    for patch in [
        json!({}),
        json!({"apiKey": "********"}),
        json!({"apiKey": "****old"}),
    ] {
        match patched_config(ProviderKind::OpenAi, &stored, &patch) {
            Ok(ConfigInput::ApiKey(SecretInput::Keep)) => {}
            _ => panic!("{patch} should keep the stored key"),
        }
    }
    match patched_config(ProviderKind::OpenAi, &stored, &json!({"apiKey": "sk-new"})) {
        Ok(ConfigInput::ApiKey(SecretInput::New(s))) => assert_eq!(s.expose_secret(), "sk-new"),
        _ => panic!("a new key is a rotation"),
    }
    assert_eq!(
        invalid_field(patched_config(
            ProviderKind::OpenAi,
            &stored,
            &json!({"apiKey": ""})
        )),
        "config.apiKey"
    );
}

#[test]
fn patch_merges_bedrock_config_and_validates_the_result() {
    let stored = ProviderConfig::Aws(AwsConfig {
        region: "us-east-1".into(),
        iam_role_arn: "arn:aws:iam::123456789012:role/r".into(),
        external_id: "vmx-ext".into(),
        performance_config: None,
        guardrail_config: None,
    });
    match patched_config(
        ProviderKind::AwsBedrock,
        &stored,
        &json!({"region": "eu-west-1"}),
    ) {
        Ok(ConfigInput::Aws { config, .. }) => {
            assert_eq!(config.region, "eu-west-1");
            assert_eq!(config.external_id, "vmx-ext", "untouched fields stay");
        }
        _ => panic!("valid merge"),
    }
    assert_eq!(
        invalid_field(patched_config(
            ProviderKind::AwsBedrock,
            &stored,
            &json!({"region": "nowhere"})
        )),
        "config.region"
    );
}

#[test]
fn patch_body_is_validated() {
    let p = ProviderKind::OpenAi;
    assert_eq!(
        invalid_field(ConnectionPatch::parse(&json!({"provider": "groq"}), p)),
        "provider"
    );
    assert_eq!(
        invalid_field(ConnectionPatch::parse(&json!({"name": null}), p)),
        "name"
    );
    assert_eq!(
        invalid_field(ConnectionPatch::parse(&json!({"version": 0}), p)),
        "version"
    );
    assert_eq!(
        invalid_field(ConnectionPatch::parse(&json!({"config": "x"}), p)),
        "config"
    );
    assert_eq!(
        invalid_field(ConnectionPatch::parse(&json!({"createdAt": "x"}), p)),
        "createdAt"
    );
    let ok = ConnectionPatch::parse(
        &json!({"description": null, "allowedModels": null, "version": 3}),
        p,
    )
    .expect("valid");
    assert_eq!(ok.description, Some(None));
    assert_eq!(ok.allowed_models, Some(None));
    assert_eq!(ok.version, Some(3));
    assert!(ok.name.is_none() && ok.capacity.is_none() && ok.config.is_none());
}

#[test]
fn the_view_masks_secrets_and_stored_json_holds_no_plaintext() {
    let c = Connection {
        id: "id1".into(),
        name: "n".into(),
        description: None,
        provider: ProviderKind::Anthropic,
        config: ProviderConfig::ApiKey {
            api_key: Envelope {
                v: 1,
                alg: "XChaCha20-Poly1305".into(),
                key: crate::secret::WrappedKey {
                    kid: "local:1".into(),
                    blob: "AAAA".into(),
                },
                nonce: "bm9uY2U=".into(),
                ct: "Y3Q=".into(),
            },
        },
        capacity: vec![],
        allowed_models: None,
        discovered_capacity: DiscoveredCapacity::default(),
        created_at: OffsetDateTime::UNIX_EPOCH,
        updated_at: OffsetDateTime::UNIX_EPOCH,
        version: 1,
    };
    let view = c.view();
    assert_eq!(view["config"], json!({"apiKey": "********"}));
    assert_eq!(view["createdAt"], "1970-01-01T00:00:00Z");
    let stored = serde_json::to_string(&c).expect("serializes");
    let back: Connection = serde_json::from_str(&stored).expect("round trip");
    assert_eq!(back, c);
}

#[test]
fn names_may_not_have_the_form_of_an_id() {
    let id = "0190c0de-7a1b-7c2d-8e3f-0123456789AB";
    assert!(has_id_form(id));
    assert!(has_id_form(&id.to_ascii_lowercase()));
    for not_id in [
        "0190c0de7a1b7c2d8e3f0123456789ab",
        "0190c0de-7a1b-7c2d-8e3f-0123456789ag",
        "0190c0de-7a1b-7c2d-8e3f-0123456789a",
        "-190c0de-7a1b-7c2d-8e3f-0123456789ab0",
        "prod-openai",
    ] {
        assert!(!has_id_form(not_id), "{not_id}");
        assert!(validate_name(not_id, "name").is_ok(), "{not_id}");
    }
    let body = json!({"name": id, "provider": "openai", "config": {"apiKey": "k"}});
    assert_eq!(invalid_field(NewConnection::parse(&body)), "name");
    assert_eq!(
        invalid_field(ConnectionPatch::parse(
            &json!({ "name": id }),
            ProviderKind::OpenAi
        )),
        "name"
    );
}
