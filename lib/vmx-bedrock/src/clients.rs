//! The Bedrock runtime clients of a process: one per role, external id and region, built once
//! and cached, signing with the role's cached STS credentials; the providers' options, and the
//! image fetcher that turns image URLs into the bytes Bedrock takes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{Region, StalledStreamProtectionConfig};
use aws_smithy_runtime_api::client::auth::AuthSchemeId;
use serde_json::{Map, Value};
use vmx_aws::sts::{AssumedRoles, RoleCredentialsProvider, RoleKey, StsOptions};
use vmx_domain::connection::AwsConfig;
use vmx_domain::inference::{ChatRequest, Credentials, ProviderError};
use vmx_providers::ProviderOptions;
use vmx_providers::content::invalid;
use vmx_providers::image_fetch::{ImageFetcher, ImagePolicy};

/// Settings of the Bedrock providers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockOptions {
    /// Timeouts: `connect_timeout`, `request_timeout` (a whole non-streaming call),
    /// `stream_start_timeout`, `stream_idle_timeout`, `stream_max_duration`. The same type as
    /// the API-key providers, so one configuration serves both.
    pub provider: ProviderOptions,
    /// Attempts per Bedrock call (1 = no retry, as for the API-key providers: a throttled
    /// call reaches the gateway as a 429 at once).
    pub max_attempts: u32,
    /// The Bedrock runtime endpoint, overriding the SDK's (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`,
    /// `AWS_ENDPOINT_URL`, else the regional endpoint). Tests point it at a stub.
    pub endpoint_url: Option<String>,
    pub sts: StsOptions,
    /// Most Bedrock clients kept (one per role, external id and region).
    pub max_clients: usize,
    /// How image URLs in messages are fetched (Bedrock takes images only as bytes).
    pub images: ImagePolicy,
}

impl Default for BedrockOptions {
    fn default() -> Self {
        Self {
            provider: ProviderOptions::default(),
            max_attempts: 1,
            endpoint_url: None,
            sts: StsOptions::default(),
            max_clients: 10_000,
            images: ImagePolicy::default(),
        }
    }
}

type ClientKey = (RoleKey, String);

/// Bedrock runtime clients per (role, external id, region), built once, sharing the process's
/// HTTP client; each signs with its role's credentials from [`AssumedRoles`].
pub struct Clients {
    base: SdkConfig,
    options: BedrockOptions,
    roles: Arc<AssumedRoles>,
    clients: Mutex<HashMap<ClientKey, Client>>,
    /// `None` only if its HTTP client could not be built at start (logged then); image URLs
    /// are refused meanwhile.
    images: Option<ImageFetcher>,
}

impl Clients {
    pub fn new(base: &SdkConfig, options: BedrockOptions, roles: Arc<AssumedRoles>) -> Self {
        let images = match ImageFetcher::new(options.images) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "the image-fetch HTTP client could not be built; image URLs will be refused");
                None
            }
        };
        Self {
            base: base.clone(),
            options,
            roles,
            clients: Mutex::new(HashMap::new()),
            images,
        }
    }

    fn images(&self) -> Result<&ImageFetcher, ProviderError> {
        self.images.as_ref().ok_or_else(|| {
            invalid(
                "image URLs cannot be fetched right now: send images as base64 data: URLs",
                Some("messages"),
            )
        })
    }

    /// A chat request's Bedrock settings, and the request with its remote images fetched
    /// into `data:` URLs; a body with a Bedrock control field is refused first.
    pub(crate) async fn chat_request<'c>(
        &self,
        credentials: &'c Credentials,
        mut request: ChatRequest,
    ) -> Result<(&'c AwsConfig, ChatRequest), ProviderError> {
        let config = aws_config(credentials)?;
        crate::control::refuse_control_fields(&request.body)?;
        self.inline_chat_images(&mut request.body).await?;
        Ok((config, request))
    }

    /// Fetches the remote images of an OpenAI Chat Completions body into `data:` URLs.
    pub async fn inline_chat_images(
        &self,
        body: &mut Map<String, Value>,
    ) -> Result<(), ProviderError> {
        if !has_remote_image(body) {
            return Ok(());
        }
        self.images()?.inline_chat_images(body).await
    }

    /// Fetches the URL image sources of an Anthropic Messages body into base64 sources.
    pub async fn inline_message_images(
        &self,
        body: &mut Map<String, Value>,
    ) -> Result<(), ProviderError> {
        if !has_remote_image(body) {
            return Ok(());
        }
        self.images()?.inline_message_images(body).await
    }

    pub fn roles(&self) -> &Arc<AssumedRoles> {
        &self.roles
    }

    pub fn options(&self) -> &BedrockOptions {
        &self.options
    }

    /// Clients built so far.
    pub fn len(&self) -> usize {
        self.clients.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The client for a connection, after making sure its role's credentials are at hand
    /// (so an STS failure surfaces as its own clear error rather than as a signing failure).
    pub(crate) async fn client(&self, config: &AwsConfig) -> Result<Client, ProviderError> {
        let key = RoleKey::of(config);
        self.roles.credentials(&key).await?;
        let ck = (key, config.region.clone());
        if let Ok(clients) = self.clients.lock()
            && let Some(c) = clients.get(&ck)
        {
            return Ok(c.clone());
        }
        let client = self.build(&ck.0, &ck.1);
        if let Ok(mut clients) = self.clients.lock() {
            if clients.len() >= self.options.max_clients.max(1) {
                clients.clear();
            }
            return Ok(clients.entry(ck).or_insert(client).clone());
        }
        Ok(client)
    }

    fn build(&self, key: &RoleKey, region: &str) -> Client {
        let p = &self.options.provider;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(p.connect_timeout)
            .operation_timeout(p.request_timeout)
            .operation_attempt_timeout(p.request_timeout)
            .build();
        let mut b = aws_sdk_bedrockruntime::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .credentials_provider(RoleCredentialsProvider::new(
                Arc::clone(&self.roles),
                key.clone(),
            ))
            // The role cache is the one cache: it refreshes ahead of expiry, single-flight.
            .identity_cache(IdentityCache::no_cache())
            // SigV4 with the role, even if AWS_BEARER_TOKEN_BEDROCK is in the environment.
            .auth_scheme_preference([AuthSchemeId::new("sigv4")])
            .retry_config(
                RetryConfig::standard().with_max_attempts(self.options.max_attempts.clamp(1, 10)),
            )
            .timeout_config(timeouts)
            // Streams are watched by the idle timeout below (a model may think in silence).
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(url) = &self.options.endpoint_url {
            b = b.endpoint_url(url.clone());
        }
        Client::from_conf(b.build())
    }
}

/// The connection's Bedrock settings, or `Unauthorized` for an API-key connection.
pub(crate) fn aws_config(credentials: &Credentials) -> Result<&AwsConfig, ProviderError> {
    match credentials {
        Credentials::Aws { config } => Ok(config),
        Credentials::ApiKey(_) => Err(ProviderError::Unauthorized {
            status: 401,
            message: "a Bedrock connection needs an IAM role, not an API key".into(),
        }),
    }
}

/// Whether a body may hold an image URL to fetch (a cheap scan, so that the common request
/// without one does no work).
fn has_remote_image(body: &Map<String, Value>) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::Object(o) => {
                o.get("type").and_then(Value::as_str) == Some("url")
                    || o.get("url")
                        .and_then(Value::as_str)
                        .is_some_and(|u| !u.starts_with("data:"))
                    || o.get("image_url")
                        .and_then(Value::as_str)
                        .is_some_and(|u| !u.starts_with("data:"))
                    || o.values().any(walk)
            }
            Value::Array(a) => a.iter().any(walk),
            _ => false,
        }
    }
    body.get("messages").is_some_and(walk)
}
