//! Perplexity: OpenAI-compatible at `https://api.perplexity.ai/chat/completions` (no `/v1`),
//! Bearer auth. Its own fields pass through both ways: search options in the request
//! (`search_domain_filter`, `search_recency_filter`, `web_search_options`, `return_images`,
//! ...), `citations` and `search_results` in the response and on stream chunks.
//!
//! Quirks:
//! - its API has no `stream_options`: none is sent (the caller's is removed); it reports
//!   `usage` on its stream chunks without being asked, and the adapter ends the stream with
//!   a usage-only chunk built from the last one, like OpenAI's.
//! - streams have been seen to end without `data: [DONE]`: a stream that ends after every
//!   choice has its `finish_reason` is complete; one that ends before is a cut stream.
//! - no models endpoint: the probe is the smallest completion (`max_tokens: 1`) with the
//!   given model, else `sonar`.
//!
//! Rate limits: Perplexity documents no rate-limit headers; `x-ratelimit-*` are read as
//! per-minute limits if it sends them.

use crate::http::Http;
use crate::openai_compat::{CompatProvider, Flavor, ProbeCall};
use crate::ratelimit;
use vmx_domain::provider::ProviderKind;

/// As the official SDKs take it.
pub const DEFAULT_BASE_URL: &str = "https://api.perplexity.ai";

/// The model of the probe when none is given.
pub const PROBE_MODEL: &str = "sonar";

pub const FLAVOR: Flavor = Flavor {
    kind: ProviderKind::Perplexity,
    request_stream_usage: false,
    done_optional: true,
    x_groq_usage: false,
    probe: ProbeCall::SmallestCompletion {
        default_model: PROBE_MODEL,
    },
    limits: ratelimit::openai,
};

pub(crate) fn provider(http: Http, base_url: &str) -> CompatProvider {
    CompatProvider::new(http, base_url, FLAVOR)
}
