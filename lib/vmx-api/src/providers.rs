//! The provider adapters of a process, built once from configuration.

use std::collections::HashMap;
use std::sync::Arc;

use vmx_domain::inference::{ChatProvider, MessagesProvider};
use vmx_domain::provider::ProviderKind;
use vmx_domain::{Error, Result};
use vmx_providers::{ProviderEndpoints, ProviderOptions, ProviderSet, http_client};

use crate::config::Config;
use crate::gateway::Providers;

/// Every API-key provider adapter over one shared HTTP client, endpoints and timeouts from
/// `config`.
pub fn from_config(config: &Config) -> Result<Providers> {
    from_config_with(config, None)
}

/// [`from_config`] plus the two Bedrock providers over `sdk` (the process's one AWS SDK
/// configuration: vmx's own identity assumes each connection's role), when given.
pub fn from_config_with(config: &Config, sdk: Option<&aws_config::SdkConfig>) -> Result<Providers> {
    let mut endpoints = ProviderEndpoints::default();
    let urls = &config.provider_base_urls;
    for (kind, url) in [
        (ProviderKind::OpenAi, &urls.openai),
        (ProviderKind::Anthropic, &urls.anthropic),
        (ProviderKind::Gemini, &urls.gemini),
        (ProviderKind::Groq, &urls.groq),
        (ProviderKind::Perplexity, &urls.perplexity),
    ] {
        if let Some(u) = url {
            endpoints.set(kind, u.clone());
        }
    }
    endpoints
        .validate()
        .map_err(|m| Error::invalid("VMX_<PROVIDER>_BASE_URL", m))?;
    let options = provider_options(config);
    let client = http_client(&options).map_err(|e| Error::internal(format!("http client: {e}")))?;
    let set = ProviderSet::new(client, endpoints, options);
    let mut chat: HashMap<ProviderKind, Arc<dyn ChatProvider>> = ProviderKind::ALL
        .into_iter()
        .filter_map(|k| set.get(k).map(|p| (k, p)))
        .collect();
    let mut messages: HashMap<ProviderKind, Arc<dyn MessagesProvider>> = HashMap::new();
    messages.insert(ProviderKind::Anthropic, set.anthropic_messages());
    if let Some(sdk) = sdk {
        let bedrock = vmx_bedrock::BedrockProviders::new(
            sdk,
            vmx_bedrock::BedrockOptions {
                provider: options,
                ..Default::default()
            },
            None,
        );
        for kind in [ProviderKind::AwsBedrock, ProviderKind::AwsBedrockInvoke] {
            if let Some(p) = bedrock.chat(kind) {
                chat.insert(kind, p);
            }
            if let Some(p) = bedrock.messages(kind) {
                messages.insert(kind, p);
            }
        }
    }
    Ok(Providers { chat, messages })
}

/// Timeouts and bounds of provider calls, from configuration.
pub fn provider_options(config: &Config) -> ProviderOptions {
    let mut options = ProviderOptions::default();
    if let Some(t) = config.provider_timeout {
        options.request_timeout = t;
    }
    if let Some(t) = config.provider_stream_idle {
        options.stream_idle_timeout = t;
    }
    if let Some(t) = config.provider_connect_timeout {
        options.connect_timeout = t;
    }
    options
}
