//! The provider adapters of a process, built once at start.
//!
//! [`from_config`] builds the API-key providers (one HTTP client, endpoints and timeouts
//! from configuration). Which other adapters exist is the binary's choice: the local server
//! and the Lambda functions add the Bedrock ones over their AWS SDK configuration with
//! [`Providers::add`]. This crate knows no AWS.

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
    let chat: HashMap<ProviderKind, Arc<dyn ChatProvider>> = ProviderKind::ALL
        .into_iter()
        .filter_map(|k| set.get(k).map(|p| (k, p)))
        .collect();
    let mut messages: HashMap<ProviderKind, Arc<dyn MessagesProvider>> = HashMap::new();
    messages.insert(ProviderKind::Anthropic, set.anthropic_messages());
    Ok(Providers { chat, messages })
}

/// Timeouts and bounds of provider calls, from configuration (the binaries give the same to
/// the adapters they add).
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
