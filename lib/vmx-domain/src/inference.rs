//! The provider port: what the gateway asks of an LLM provider adapter, in OpenAI Chat
//! Completions terms (the lingua franca of the `/v1/chat/completions` API). Each adapter
//! translates to and from its provider's wire format.

use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;
use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::connection::{AwsConfig, DiscoveredLimit};

/// A chat completion request, already routed to a connection.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The provider's model id (what followed `<connection>/` in `model`).
    pub model: String,
    /// The OpenAI Chat Completions body as the caller sent it, with `model` already set to
    /// the provider model id. Fields vmx does not model pass through where the provider
    /// understands them.
    pub body: Map<String, Value>,
}

impl ChatRequest {
    pub fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// What a provider call authenticates with. Never `Debug`: it holds secrets.
pub enum Credentials {
    ApiKey(SecretString),
    /// The connection's Bedrock settings: the adapter assumes `config.iam_role_arn` (with
    /// `config.external_id`) through its cached STS credentials.
    Aws {
        config: AwsConfig,
    },
}

/// Token usage as the provider reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a part of `prompt_tokens`).
    pub cached_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic), a part of `prompt_tokens`.
    pub cache_creation_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// A whole (non-streaming) completion.
#[derive(Debug, Clone)]
pub struct ChatCompletion {
    /// An OpenAI `chat.completion` object.
    pub body: Value,
    pub usage: Option<Usage>,
    /// Rate limits read from the response headers.
    pub limits: Vec<DiscoveredLimit>,
}

/// One item of a completion stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// An OpenAI `chat.completion.chunk` object (the usage-only final chunk included, with
    /// empty `choices`, whether or not the caller asked for it: the gateway decides).
    Chunk(Value),
    /// The same as [`StreamItem::Chunk`], as the JSON text an OpenAI-compatible provider
    /// sent: forwarded without being built into a [`Value`] tree (the gateway rewrites only
    /// `model`, and `usage` when the caller did not ask for it).
    ChunkJson(String),
    /// The usage of the whole stream, once known (normally just before the end).
    Usage(Usage),
}

pub type ItemStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ProviderError>> + Send>>;

/// A started streaming completion: the headers are in, the body is still coming.
pub struct ChatStream {
    pub limits: Vec<DiscoveredLimit>,
    pub items: ItemStream,
}

/// The result of a credentials check.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub limits: Vec<DiscoveredLimit>,
    /// Which call was made, e.g. `GET /v1/models`.
    pub call: String,
}

/// Why a provider call failed. Messages are safe to show a caller: adapters remove the
/// credential from anything the provider echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider's 429. `limits` are the rate-limit headers that came with it.
    #[error("the provider is rate limiting this connection: {message}")]
    RateLimited {
        retry_after_secs: Option<u64>,
        message: String,
        limits: Vec<DiscoveredLimit>,
    },
    /// The provider rejected the connection's credentials (401/403).
    #[error("the provider rejected the connection's credentials (HTTP {status})")]
    Unauthorized { status: u16, message: String },
    /// The provider refused the request itself (400, 404, 413, 422): the caller's to fix.
    #[error("the provider rejected the request: {message}")]
    BadRequest {
        status: u16,
        message: String,
        param: Option<String>,
        code: Option<String>,
    },
    /// The provider failed (5xx, or overloaded).
    #[error("the provider failed (HTTP {status})")]
    Upstream { status: u16, message: String },
    #[error("the provider did not answer in time")]
    Timeout,
    /// The provider could not be reached (DNS, connect, TLS, reset).
    #[error("the provider could not be reached: {0}")]
    Network(String),
    /// The provider answered something we cannot read (bad JSON, a broken stream).
    #[error("the provider sent a malformed response: {0}")]
    Malformed(String),
}

/// One adapter per provider (`vmx-providers`), all speaking OpenAI Chat Completions to the
/// gateway.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    async fn chat(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatCompletion, ProviderError>;

    async fn chat_stream(
        &self,
        credentials: &Credentials,
        request: ChatRequest,
    ) -> Result<ChatStream, ProviderError>;

    /// The cheapest call that proves the credentials work (a models list where one exists,
    /// else the smallest completion with `model`).
    async fn probe(
        &self,
        credentials: &Credentials,
        model: Option<&str>,
    ) -> Result<Probe, ProviderError>;
}

/// An Anthropic Messages API response, passed through.
#[derive(Debug, Clone)]
pub struct MessagesResponse {
    /// The Anthropic `message` object as the provider returned it.
    pub body: Value,
    pub usage: Option<Usage>,
    pub limits: Vec<DiscoveredLimit>,
}

/// One event of an Anthropic Messages stream.
#[derive(Debug, Clone)]
pub enum MessagesEvent {
    /// An SSE event as the provider sent it (`message_start`, `content_block_delta`, ...).
    Event { name: String, data: Value },
    /// The usage of the whole stream, once known (after `message_delta`).
    Usage(Usage),
}

pub type MessagesEventStream =
    Pin<Box<dyn Stream<Item = Result<MessagesEvent, ProviderError>> + Send>>;

/// A started Anthropic Messages stream.
pub struct MessagesStream {
    pub limits: Vec<DiscoveredLimit>,
    pub events: MessagesEventStream,
}

/// The Anthropic Messages API, passed through unchanged (cache_control, thinking, tool use
/// and server tools intact), for the providers that speak it: `anthropic` and
/// `aws-bedrock-invoke`.
#[async_trait]
pub trait MessagesProvider: Send + Sync {
    /// `body` is the caller's Messages request; `model` the provider model id, which the
    /// adapter puts where its API wants it (the body for Anthropic, the URL for Bedrock).
    async fn messages(
        &self,
        credentials: &Credentials,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<MessagesResponse, ProviderError>;

    async fn messages_stream(
        &self,
        credentials: &Credentials,
        model: &str,
        body: Map<String, Value>,
    ) -> Result<MessagesStream, ProviderError>;
}
