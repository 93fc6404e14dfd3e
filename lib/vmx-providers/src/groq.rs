//! Groq: OpenAI-compatible at `https://api.groq.com/openai/v1`, Bearer auth.
//!
//! Quirks: usage also arrives in `x_groq.usage` on the last content chunk (read when no
//! standard usage chunk came); the body passes through unchanged, so Groq itself answers 400
//! for the few OpenAI fields it does not support. Rate limits: `x-ratelimit-limit-requests`
//! is requests per **day** (RPD), `x-ratelimit-limit-tokens` tokens per minute (TPM).
//! Probe: `GET {base}/models`.

use crate::http::Http;
use crate::openai_compat::{CompatProvider, Flavor, ProbeCall};
use crate::ratelimit;
use vmx_domain::provider::ProviderKind;

/// As the official SDKs take it (the OpenAI SDK pointed at Groq).
pub const DEFAULT_BASE_URL: &str = "https://api.groq.com/openai/v1";

pub const FLAVOR: Flavor = Flavor {
    kind: ProviderKind::Groq,
    request_stream_usage: true,
    done_optional: false,
    x_groq_usage: true,
    probe: ProbeCall::ListModels,
    limits: ratelimit::groq,
};

pub(crate) fn provider(http: Http, base_url: &str) -> CompatProvider {
    CompatProvider::new(http, base_url, FLAVOR)
}
