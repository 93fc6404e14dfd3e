//! The two Bedrock providers of a process, built once: [`providers`] gives `aws-bedrock`
//! ([`BedrockConverse`], a `ChatProvider`) and `aws-bedrock-invoke` ([`BedrockInvoke`], a
//! `ChatProvider` and a `MessagesProvider`), sharing one role credentials cache
//! ([`AssumedRoles`]) and one set of Bedrock runtime clients.
//!
//! Telling failures apart (what `POST /v1/connections/{id}/test` reports), by the error's
//! shape, with no message parsing ([`failure_class`]):
//!
//! | class | error |
//! |---|---|
//! | `trust_policy`: the role's trust policy or the connection's externalId is wrong | `Unauthorized { status: 401 }` (STS AccessDenied) |
//! | `bedrock_permissions`: the role lacks Bedrock permissions | `Unauthorized { status: 403 }` (Bedrock AccessDeniedException) |
//! | `model_not_enabled`: model not enabled / not available in the region / bad model id | `BadRequest { code: "model_not_enabled" }` |
//! | `guardrail_not_found` | `BadRequest { code: "guardrail_not_found" }` |
//! | `model_required`: the role was assumed but no model was named | `BadRequest { code: "model_required" }` |

use std::sync::Arc;

use aws_config::SdkConfig;
use vmx_domain::inference::{ChatProvider, MessagesProvider, ProviderError};
use vmx_domain::provider::ProviderKind;

pub use crate::bedrock_common::{BedrockOptions, Clients};
pub use crate::bedrock_converse::BedrockConverse;
pub use crate::bedrock_invoke::BedrockInvoke;
pub use crate::sts::{AssumedRoles, RoleKey, StsOptions};

/// The Bedrock providers of a process.
#[derive(Clone)]
pub struct BedrockProviders {
    pub converse: Arc<BedrockConverse>,
    pub invoke: Arc<BedrockInvoke>,
    /// The role credentials cache (its `sts_calls()` counts AssumeRole calls).
    pub roles: Arc<AssumedRoles>,
    pub clients: Arc<Clients>,
}

impl BedrockProviders {
    /// The chat adapter of `kind` (`None` for the API-key providers).
    pub fn chat(&self, kind: ProviderKind) -> Option<Arc<dyn ChatProvider>> {
        match kind {
            ProviderKind::AwsBedrock => Some(self.converse.clone()),
            ProviderKind::AwsBedrockInvoke => Some(self.invoke.clone()),
            _ => None,
        }
    }

    /// The Messages API adapter of `kind`: `aws-bedrock-invoke` only.
    pub fn messages(&self, kind: ProviderKind) -> Option<Arc<dyn MessagesProvider>> {
        match kind {
            ProviderKind::AwsBedrockInvoke => Some(self.invoke.clone()),
            _ => None,
        }
    }
}

/// Both Bedrock providers with default options. `sdk` is the process's SDK config (vmx's
/// own identity, which assumes the customers' roles; its HTTP client, region for STS and
/// endpoints). Call once per process.
pub fn providers(sdk: &SdkConfig) -> BedrockProviders {
    providers_with(sdk, BedrockOptions::default())
}

/// Same, with explicit options (timeouts shared with the API-key providers, retries, a
/// Bedrock endpoint override, the STS cache policy).
pub fn providers_with(sdk: &SdkConfig, options: BedrockOptions) -> BedrockProviders {
    let roles = Arc::new(AssumedRoles::new(
        aws_sdk_sts::Client::new(sdk),
        options.sts.clone(),
    ));
    providers_from(sdk, options, roles)
}

/// Same, over an existing role cache (tests give one with their own clock or STS client).
pub fn providers_from(
    sdk: &SdkConfig,
    options: BedrockOptions,
    roles: Arc<AssumedRoles>,
) -> BedrockProviders {
    let clients = Arc::new(Clients::new(sdk, options, Arc::clone(&roles)));
    BedrockProviders {
        converse: Arc::new(BedrockConverse::new(Arc::clone(&clients))),
        invoke: Arc::new(BedrockInvoke::new(Arc::clone(&clients))),
        roles,
        clients,
    }
}

/// Which Bedrock connection problem `e` is, if it is one of those a connection test tells
/// apart (see the module's table).
pub fn failure_class(e: &ProviderError) -> Option<&'static str> {
    match e {
        ProviderError::Unauthorized { status: 401, .. } => Some("trust_policy"),
        ProviderError::Unauthorized { status: 403, .. } => Some("bedrock_permissions"),
        ProviderError::BadRequest { code: Some(c), .. } => match c.as_str() {
            "model_not_enabled" => Some("model_not_enabled"),
            "guardrail_not_found" => Some("guardrail_not_found"),
            "model_required" => Some("model_required"),
            _ => None,
        },
        _ => None,
    }
}
