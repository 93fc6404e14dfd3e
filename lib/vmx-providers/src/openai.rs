//! OpenAI: the reference wire format. `POST {base}/chat/completions`, Bearer auth, the body
//! passed through unchanged (see [`openai_compat`](crate::openai_compat)).
//!
//! Quirks: none; streams get `stream_options.include_usage: true` and end with
//! `data: [DONE]`. Rate limits: `x-ratelimit-*-requests` and `-tokens`, both per minute.
//! Probe: `GET {base}/models`.

use crate::http::Http;
use crate::openai_compat::{CompatProvider, Flavor, ProbeCall};
use crate::ratelimit;
use vmx_domain::provider::ProviderKind;

/// As the official SDKs take it.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub const FLAVOR: Flavor = Flavor {
    kind: ProviderKind::OpenAi,
    request_stream_usage: true,
    done_optional: false,
    x_groq_usage: false,
    probe: ProbeCall::ListModels,
    limits: ratelimit::openai,
};

pub(crate) fn provider(http: Http, base_url: &str) -> CompatProvider {
    CompatProvider::new(http, base_url, FLAVOR)
}
