//! Connection create and patch bodies, and the config merge patch onto a stored config, for
//! every provider. No panic; every rejection is a validation error naming a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vmx_domain::Error;
use vmx_domain::connection::{
    ConfigInput, ConnectionPatch, NewConnection, ProviderConfig, parse_config, patched_config,
    validate_name,
};
use vmx_domain::provider::{AuthKind, ProviderKind};
use vmx_domain::secret::{Envelope, WrappedKey};

fn named(r: Result<(), Error>) {
    if let Err(e) = r {
        let Error::Invalid { field, message } = e else {
            panic!("not a validation error: {e:?}");
        };
        assert!(!field.is_empty() && !message.is_empty());
    }
}

fn stored(provider: ProviderKind) -> ProviderConfig {
    match provider.auth() {
        AuthKind::ApiKey => ProviderConfig::ApiKey {
            api_key: Envelope {
                v: 1,
                alg: "XChaCha20-Poly1305".into(),
                key: WrappedKey {
                    kid: "local:fuzz".into(),
                    blob: "AAAA".into(),
                },
                nonce: "AAAA".into(),
                ct: "AAAA".into(),
            },
        },
        AuthKind::IamRole => {
            let v = json!({"region": "us-east-1", "iamRoleArn": "arn:aws:iam::123456789012:role/vmx",
                           "externalId": "vmx-0123456789abcdef"});
            match parse_config(provider, &v, "config") {
                Ok(ConfigInput::Aws { config, .. }) => ProviderConfig::Aws(config),
                _ => panic!("the stored config is valid"),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    named(NewConnection::parse(&body).map(|c| {
        assert!(validate_name(&c.name, "name").is_ok());
        assert!(c.capacity.len() <= vmx_domain::capacity::MAX_ENTRIES);
    }));
    for provider in ProviderKind::ALL {
        named(ConnectionPatch::parse(&body, provider).map(|_| ()));
        let config = body.get("config").unwrap_or(&body);
        named(patched_config(provider, &stored(provider), config).map(|_| ()));
    }
});
