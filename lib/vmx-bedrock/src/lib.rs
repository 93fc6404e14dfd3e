//! The two Bedrock providers of a process, built once: [`BedrockProviders::new`] gives
//! `aws-bedrock` ([`BedrockConverse`], a `ChatProvider`, on the Converse API) and
//! `aws-bedrock-invoke` ([`BedrockInvoke`], a `ChatProvider` and a `MessagesProvider`, on
//! InvokeModel), sharing one role credentials cache ([`AssumedRoles`], from `vmx-aws`) and
//! one set of Bedrock runtime clients ([`Clients`]). Its own crate, so that the API-key
//! providers of `vmx-providers` stay free of the AWS SDK; the OpenAI wire helpers, the
//! content-part walker and the stream driver are `vmx-providers`' ([`vmx_providers::wire`],
//! [`vmx_providers::content`], [`vmx_providers::drive`]).
//!
//! - [`clients`]: options and the per-role runtime clients; [`control`]: the Bedrock control
//!   fields a caller may not send (refused on every route); [`errors`]: Bedrock failures as
//!   `ProviderError`s; [`document`]: JSON <-> smithy `Document`; [`guardrail`]: the
//!   guardrail trace as JSON.
//! - [`converse`]: `aws-bedrock`; [`invoke`]: `aws-bedrock-invoke`.
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

pub mod clients;
pub mod control;
pub mod converse;
pub mod document;
pub mod errors;
pub mod guardrail;
pub mod invoke;

pub use clients::{BedrockOptions, Clients};
pub use converse::BedrockConverse;
pub use invoke::BedrockInvoke;
pub use vmx_aws::sts::{AssumedRoles, RoleKey, StsOptions};

/// One adapter with the kind it serves, its chat adapter and its Messages adapter, if any.
pub type Adapter = (
    ProviderKind,
    Arc<dyn ChatProvider>,
    Option<Arc<dyn MessagesProvider>>,
);

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

    /// Every Bedrock adapter with the kind it serves, its chat adapter and its Messages API
    /// adapter if it has one: what a binary registers with the gateway
    /// (`vmx_api::gateway::Providers` extends from it).
    pub fn adapters(&self) -> [Adapter; 2] {
        [
            (ProviderKind::AwsBedrock, self.converse.clone(), None),
            (
                ProviderKind::AwsBedrockInvoke,
                self.invoke.clone(),
                Some(self.invoke.clone()),
            ),
        ]
    }

    /// Both Bedrock providers. `sdk` is the process's SDK config (vmx's own identity, which
    /// assumes the customers' roles; its HTTP client, region for STS and endpoints);
    /// `options` the timeouts shared with the API-key providers, retries, a Bedrock endpoint
    /// override and the STS cache policy; `roles` an existing role cache (tests give one with
    /// their own clock), else one is built over `sdk` with `options.sts`. Call once per
    /// process.
    pub fn new(sdk: &SdkConfig, options: BedrockOptions, roles: Option<Arc<AssumedRoles>>) -> Self {
        let roles = roles.unwrap_or_else(|| {
            Arc::new(AssumedRoles::new(
                aws_sdk_sts::Client::new(sdk),
                options.sts.clone(),
            ))
        });
        let clients = Arc::new(Clients::new(sdk, options, Arc::clone(&roles)));
        Self {
            converse: Arc::new(BedrockConverse::new(Arc::clone(&clients))),
            invoke: Arc::new(BedrockInvoke::new(Arc::clone(&clients))),
            roles,
            clients,
        }
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
