//! Provider adapters: [`ChatProvider`] for the five API-key providers, each speaking OpenAI
//! Chat Completions to the gateway and its own wire format to the provider.
//!
//! - [`openai`], [`groq`], [`perplexity`]: OpenAI-compatible ([`openai_compat`] does the work;
//!   each file holds its base URL, rate-limit header mapping and quirks).
//! - [`anthropic`]: translation to and from the Messages API.
//! - [`gemini`]: translation to and from the native `generateContent` API (why native: see
//!   that module).
//! - [`sse`]: the one event-stream decoder; [`ratelimit`]: headers to [`DiscoveredLimit`]s.
//!
//! The toolkit every adapter uses, Bedrock's (crate `vmx-bedrock`) included: [`wire`] builds
//! the OpenAI Chat Completions answers, [`content`] walks an OpenAI request's messages and
//! parts, [`drive`] turns a provider's event stream into the gateway's item stream.
//!
//! Build one [`ProviderSet`] per process, with one shared [`reqwest::Client`]
//! ([`http_client`] builds a suitable one): connections are pooled and reused across
//! requests. Base URLs and timeouts come from the caller's configuration.
//!
//! Secrets: the API key only ever goes into a request header marked sensitive; every message
//! that comes from the provider is scrubbed of the key before it enters a [`ProviderError`];
//! nothing here logs.
//!
//! [`DiscoveredLimit`]: vmx_domain::connection::DiscoveredLimit

use std::sync::Arc;
use std::time::Duration;

use vmx_domain::inference::{ChatProvider, MessagesProvider};
use vmx_domain::provider::ProviderKind;

pub mod anthropic;
pub mod content;
pub mod drive;
mod errors;
pub mod gemini;
pub mod groq;
mod http;
pub mod image_fetch;
mod key;
pub mod observe;
pub mod openai;
pub mod openai_compat;
pub mod perplexity;
pub mod ratelimit;
pub mod sse;
#[cfg(feature = "stub")]
pub mod testing;
pub mod wire;

pub use key::scrub_secret;

/// The providers' base URLs, in the form each official SDK takes (`VMX_<PROVIDER>_BASE_URL`
/// replaces one). A trailing `/` is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    /// `https://api.openai.com/v1`; requests go to `{openai}/chat/completions`.
    pub openai: String,
    /// `https://api.anthropic.com`; requests go to `{anthropic}/v1/messages`.
    pub anthropic: String,
    /// `https://generativelanguage.googleapis.com`; requests go to
    /// `{gemini}/v1beta/models/{model}:generateContent`.
    pub gemini: String,
    /// `https://api.groq.com/openai/v1`; requests go to `{groq}/chat/completions`.
    pub groq: String,
    /// `https://api.perplexity.ai`; requests go to `{perplexity}/chat/completions`.
    pub perplexity: String,
}

impl Default for ProviderEndpoints {
    fn default() -> Self {
        Self {
            openai: openai::DEFAULT_BASE_URL.to_owned(),
            anthropic: anthropic::DEFAULT_BASE_URL.to_owned(),
            gemini: gemini::DEFAULT_BASE_URL.to_owned(),
            groq: groq::DEFAULT_BASE_URL.to_owned(),
            perplexity: perplexity::DEFAULT_BASE_URL.to_owned(),
        }
    }
}

impl ProviderEndpoints {
    /// The base URL of `kind`, or `None` for the providers that are not called over an API key
    /// (Bedrock).
    pub fn get(&self, kind: ProviderKind) -> Option<&str> {
        match kind {
            ProviderKind::OpenAi => Some(&self.openai),
            ProviderKind::Anthropic => Some(&self.anthropic),
            ProviderKind::Gemini => Some(&self.gemini),
            ProviderKind::Groq => Some(&self.groq),
            ProviderKind::Perplexity => Some(&self.perplexity),
            ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => None,
        }
    }

    /// Replaces the base URL of `kind` (ignored for Bedrock).
    pub fn set(&mut self, kind: ProviderKind, base_url: impl Into<String>) {
        let url = base_url.into();
        match kind {
            ProviderKind::OpenAi => self.openai = url,
            ProviderKind::Anthropic => self.anthropic = url,
            ProviderKind::Gemini => self.gemini = url,
            ProviderKind::Groq => self.groq = url,
            ProviderKind::Perplexity => self.perplexity = url,
            ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => {}
        }
    }

    /// Checks that every base URL is an absolute `http(s)` URL without query or fragment, so
    /// configuration fails at start rather than on the first request.
    pub fn validate(&self) -> Result<(), String> {
        for (kind, url) in [
            (ProviderKind::OpenAi, &self.openai),
            (ProviderKind::Anthropic, &self.anthropic),
            (ProviderKind::Gemini, &self.gemini),
            (ProviderKind::Groq, &self.groq),
            (ProviderKind::Perplexity, &self.perplexity),
        ] {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| format!("the {kind} base URL '{url}' is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("the {kind} base URL '{url}' must be http or https"));
            }
            if parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(format!(
                    "the {kind} base URL '{url}' must not have a query or fragment"
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err(format!(
                    "the {kind} base URL must not carry credentials (the API key is sent as a header)"
                ));
            }
        }
        Ok(())
    }
}

/// Timeouts and size bounds of provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderOptions {
    /// TCP + TLS connect (used by [`http_client`]).
    pub connect_timeout: Duration,
    /// A whole non-streaming call, body included, and a probe.
    pub request_timeout: Duration,
    /// A streaming call until the response headers arrive.
    pub stream_start_timeout: Duration,
    /// Longest silence between two pieces of a stream (SSE keep-alive comments count).
    pub stream_idle_timeout: Duration,
    /// Longest a stream may last in total.
    pub stream_max_duration: Duration,
    /// Largest non-streaming response body, and largest single stream event.
    pub max_response_bytes: usize,
}

impl Default for ProviderOptions {
    /// Generous defaults for LLM calls (long generations, reasoning models that think before
    /// the first token), bounded by what one Lambda invocation can last (15 minutes).
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            stream_start_timeout: Duration::from_secs(120),
            stream_idle_timeout: Duration::from_secs(300),
            stream_max_duration: Duration::from_secs(900),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The shared HTTP client for provider calls: rustls (ring) with the webpki roots, HTTP/2 where
/// the provider offers it, pooled keep-alive connections, `connect_timeout` from `options`,
/// no automatic redirects (a provider API does not redirect; following one could send the
/// key elsewhere).
pub fn http_client(options: &ProviderOptions) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vmx/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One adapter per API-key provider, built once per process.
#[derive(Clone)]
pub struct ProviderSet {
    openai: Arc<dyn ChatProvider>,
    anthropic: Arc<anthropic::AnthropicProvider>,
    gemini: Arc<dyn ChatProvider>,
    groq: Arc<dyn ChatProvider>,
    perplexity: Arc<dyn ChatProvider>,
}

impl ProviderSet {
    /// All five adapters over one shared `client`.
    pub fn new(
        client: reqwest::Client,
        endpoints: ProviderEndpoints,
        options: ProviderOptions,
    ) -> Self {
        let http = http::Http::new(client, options);
        Self {
            openai: Arc::new(openai::provider(http.clone(), &endpoints.openai)),
            anthropic: Arc::new(anthropic::AnthropicProvider::new(
                http.clone(),
                &endpoints.anthropic,
            )),
            gemini: Arc::new(gemini::GeminiProvider::new(http.clone(), &endpoints.gemini)),
            groq: Arc::new(groq::provider(http.clone(), &endpoints.groq)),
            perplexity: Arc::new(perplexity::provider(http, &endpoints.perplexity)),
        }
    }

    /// The Anthropic Messages passthrough adapter (the `anthropic` provider).
    pub fn anthropic_messages(&self) -> Arc<dyn MessagesProvider> {
        self.anthropic.clone()
    }

    /// The adapter of `kind`; `None` for the Bedrock providers (not API-key providers).
    pub fn get(&self, kind: ProviderKind) -> Option<Arc<dyn ChatProvider>> {
        match kind {
            ProviderKind::OpenAi => Some(self.openai.clone()),
            ProviderKind::Anthropic => Some(self.anthropic.clone() as Arc<dyn ChatProvider>),
            ProviderKind::Gemini => Some(self.gemini.clone()),
            ProviderKind::Groq => Some(self.groq.clone()),
            ProviderKind::Perplexity => Some(self.perplexity.clone()),
            ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => None,
        }
    }
}
