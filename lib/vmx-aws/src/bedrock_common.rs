//! What the two Bedrock providers share: the Bedrock runtime clients (one per role, external
//! id and region, built once and cached, signing with the role's cached STS credentials), the
//! mapping of Bedrock failures to [`ProviderError`], usage, JSON <-> smithy `Document`, the
//! guardrail trace as JSON, and the event-stream driver (idle timeout and total deadline).
//!
//! Error mapping (Bedrock error code -> [`ProviderError`]; the message keeps Bedrock's own text,
//! which names the customer's role and model but never a credential):
//!
//! | Bedrock | ProviderError |
//! |---|---|
//! | `ThrottlingException`, `ServiceQuotaExceededException` | `RateLimited` (429) |
//! | `AccessDeniedException` "You don't have access to the model" / "Model access is denied" | `BadRequest { status: 403, code: "model_not_enabled" }` |
//! | other `AccessDeniedException` | `Unauthorized { status: 403 }`, message naming the role and the IAM actions it needs |
//! | `ResourceNotFoundException` | `BadRequest { status: 404, code: "guardrail_not_found" }` when about the guardrail, else `"model_not_enabled"` |
//! | `ValidationException` about the guardrail / the model id | `BadRequest { status: 400, code: "guardrail_not_found" / "model_not_enabled" }` |
//! | other `ValidationException` | `BadRequest { status: 400, code: "ValidationException" }` |
//! | `ModelNotReadyException`, `ServiceUnavailableException` | `Upstream { status: 503 }` |
//! | `ModelTimeoutException`, SDK timeouts | `Timeout` |
//! | anything else (`InternalServerException`, `ModelErrorException`, `ModelStreamErrorException`, ...) | `Upstream { status: 502 }` |
//! | STS failures while assuming the role | see [`crate::sts`] (`AccessDenied` -> `Unauthorized { status: 401 }`) |

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{Region, StalledStreamProtectionConfig};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types as bt;
use aws_smithy_runtime_api::client::auth::AuthSchemeId;
use aws_smithy_types::{Document, Number};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use vmx_domain::connection::AwsConfig;
use vmx_domain::inference::{Credentials, ProviderError, Usage};
use vmx_providers::ProviderOptions;
use vmx_providers::image_fetch::{ImageFetcher, ImagePolicy};

use crate::error::{CallFailure, call_failure};
use crate::sts::{AssumedRoles, RoleCredentialsProvider, RoleKey, StsOptions};

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

/// What one Bedrock call is about, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct CallCtx {
    pub op: &'static str,
    pub role_arn: String,
    pub region: String,
    pub model: String,
    pub guardrail: bool,
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

impl CallCtx {
    pub fn new(op: &'static str, config: &AwsConfig, model: &str) -> Self {
        Self {
            op,
            role_arn: config.iam_role_arn.clone(),
            region: config.region.clone(),
            model: model.to_owned(),
            guardrail: config.guardrail_config.is_some(),
        }
    }

    /// A failed SDK call.
    pub fn error<E, R>(&self, err: &SdkError<E, R>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        self.failure(call_failure(err))
    }

    /// A failure in an event stream: the exception event's type names the code.
    pub fn stream_error<E, R>(
        &self,
        err: &SdkError<E, R>,
        variant: Option<&'static str>,
    ) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let mut failure = call_failure(err);
        if let (CallFailure::Service { code, .. }, Some(v)) = (&mut failure, variant)
            && (code == "Unknown" || code.is_empty())
        {
            v.clone_into(code);
        }
        self.failure(failure)
    }

    pub fn failure(&self, failure: CallFailure) -> ProviderError {
        match failure {
            CallFailure::Service { code, message, .. } => self.service(&code, &message),
            CallFailure::Timeout => ProviderError::Timeout,
            CallFailure::Network(m) => ProviderError::Network(format!("Bedrock runtime: {m}")),
            CallFailure::Unreadable => {
                ProviderError::Malformed("an unreadable Bedrock runtime response".into())
            }
            CallFailure::Construction(m) => ProviderError::Upstream {
                status: 502,
                message: format!("the Bedrock {} request could not be built: {m}", self.op),
            },
        }
    }

    fn service(&self, code: &str, message: &str) -> ProviderError {
        let lower = message.to_ascii_lowercase();
        let about_guardrail = lower.contains("guardrail");
        let about_model_id = lower.contains("model id") || lower.contains("inference profile");
        let bad = |status: u16, code: &str, text: String| ProviderError::BadRequest {
            status,
            message: text,
            param: None,
            code: Some(code.to_owned()),
        };
        let (model, region, role) = (&self.model, &self.region, &self.role_arn);
        match code {
            "ThrottlingException"
            | "ServiceQuotaExceededException"
            | "TooManyRequestsException" => ProviderError::RateLimited {
                retry_after_secs: None,
                message: format!("Bedrock {code}: {message}"),
                limits: Vec::new(),
            },
            "AccessDeniedException" | "AccessDenied"
                if lower.contains("access to the model") || lower.contains("model access") =>
            {
                bad(
                    403,
                    "model_not_enabled",
                    format!(
                        "model '{model}' is not enabled for this account in {region}: enable it \
                         under Amazon Bedrock > Model access ({code}: {message})"
                    ),
                )
            }
            "AccessDeniedException" | "AccessDenied" => ProviderError::Unauthorized {
                status: 403,
                message: format!(
                    "Bedrock denied {op} on model '{model}' in {region} to the role {role} \
                     ({code}: {message}); check that the role's IAM policy allows \
                     bedrock:InvokeModel and bedrock:InvokeModelWithResponseStream on this \
                     model{guardrail}",
                    op = self.op,
                    guardrail = if self.guardrail {
                        ", and bedrock:ApplyGuardrail on the connection's guardrail"
                    } else {
                        ""
                    },
                ),
            },
            "ResourceNotFoundException" | "ValidationException" if about_guardrail => bad(
                if code == "ValidationException" {
                    400
                } else {
                    404
                },
                "guardrail_not_found",
                format!(
                    "the connection's guardrail was not found in {region} (check \
                     guardrailConfig.guardrailIdentifier and guardrailVersion) ({code}: {message})"
                ),
            ),
            "ResourceNotFoundException" => bad(
                404,
                "model_not_enabled",
                format!("model '{model}' is not available in {region} ({code}: {message})"),
            ),
            "ValidationException" if about_model_id => bad(
                400,
                "model_not_enabled",
                format!("model '{model}' cannot be invoked in {region} ({code}: {message})"),
            ),
            "ValidationException" => bad(400, "ValidationException", message.to_owned()),
            "ModelNotReadyException" | "ServiceUnavailableException" | "ServiceUnavailable" => {
                ProviderError::Upstream {
                    status: 503,
                    message: format!("Bedrock {code}: {message}"),
                }
            }
            "ModelTimeoutException" => ProviderError::Timeout,
            _ => ProviderError::Upstream {
                status: 502,
                message: format!("Bedrock {code}: {message}"),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Usage and OpenAI shapes
// ---------------------------------------------------------------------------------------

fn count(n: i32) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Converse `usage`: `inputTokens` excludes cache reads and writes, as Anthropic's does, so
/// the prompt is their sum.
pub(crate) fn usage_from_converse(u: &bt::TokenUsage) -> Usage {
    let read = u.cache_read_input_tokens.map_or(0, count);
    let write = u.cache_write_input_tokens.map_or(0, count);
    Usage {
        prompt_tokens: count(u.input_tokens) + read + write,
        completion_tokens: count(u.output_tokens),
        cached_tokens: read,
        cache_creation_tokens: write,
    }
}

/// The OpenAI `usage` object (with the cache counts alongside, as the anthropic provider does).
pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": { "cached_tokens": u.cached_tokens },
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
    })
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// An OpenAI `chat.completion.chunk` with one choice (or none for the usage chunk).
pub(crate) fn chunk(id: &str, created: i64, model: &str, choices: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    })
}

pub(crate) fn delta_choice(delta: Value, finish_reason: Option<&str>) -> Value {
    json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }])
}

/// `BadRequest` for a request vmx cannot translate.
pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> ProviderError {
    ProviderError::BadRequest {
        status: 400,
        message: message.into(),
        param: param.map(str::to_owned),
        code: Some("invalid_request_error".into()),
    }
}

// ---------------------------------------------------------------------------------------
// JSON <-> Document
// ---------------------------------------------------------------------------------------

pub(crate) fn to_document(v: &Value) -> Document {
    match v {
        Value::Null => Document::Null,
        Value::Bool(b) => Document::Bool(*b),
        Value::Number(n) => Document::Number(if let Some(u) = n.as_u64() {
            Number::PosInt(u)
        } else if let Some(i) = n.as_i64() {
            Number::NegInt(i)
        } else {
            Number::Float(n.as_f64().unwrap_or(0.0))
        }),
        Value::String(s) => Document::String(s.clone()),
        Value::Array(a) => Document::Array(a.iter().map(to_document).collect()),
        Value::Object(o) => {
            Document::Object(o.iter().map(|(k, v)| (k.clone(), to_document(v))).collect())
        }
    }
}

pub(crate) fn from_document(d: &Document) -> Value {
    match d {
        Document::Null => Value::Null,
        Document::Bool(b) => Value::Bool(*b),
        Document::Number(Number::PosInt(u)) => json!(u),
        Document::Number(Number::NegInt(i)) => json!(i),
        Document::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Document::String(s) => Value::String(s.clone()),
        Document::Array(a) => Value::Array(a.iter().map(from_document).collect()),
        Document::Object(o) => {
            // Sorted keys: the same document always serializes the same way.
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .filter_map(|k| o.get(k).map(|v| (k.clone(), from_document(v))))
                    .collect(),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Guardrail trace
// ---------------------------------------------------------------------------------------

/// The guardrail trace in Bedrock's own JSON names (`inputAssessment`, `outputAssessments`,
/// `actionReason`, `modelOutput`; per policy the topics, filters, words, PII entities, regexes
/// and grounding scores with their action and detection), for the `vmx.guardrail` field.
pub(crate) fn guardrail_json(t: &bt::GuardrailTraceAssessment) -> Value {
    let mut o = Map::new();
    if let Some(input) = &t.input_assessment {
        o.insert(
            "inputAssessment".into(),
            assessment_map(input.iter().map(|(k, v)| (k, assessment(v)))),
        );
    }
    if let Some(outputs) = &t.output_assessments {
        o.insert(
            "outputAssessments".into(),
            assessment_map(
                outputs
                    .iter()
                    .map(|(k, v)| (k, Value::Array(v.iter().map(assessment).collect()))),
            ),
        );
    }
    if let Some(r) = &t.action_reason {
        o.insert("actionReason".into(), Value::String(r.clone()));
    }
    if let Some(m) = &t.model_output {
        o.insert("modelOutput".into(), json!(m));
    }
    Value::Object(o)
}

fn assessment_map<'a>(items: impl Iterator<Item = (&'a String, Value)>) -> Value {
    let mut v: Vec<(&String, Value)> = items.collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    Value::Object(v.into_iter().map(|(k, v)| (k.clone(), v)).collect())
}

fn assessment(a: &bt::GuardrailAssessment) -> Value {
    let mut o = Map::new();
    if let Some(p) = &a.topic_policy {
        let topics: Vec<Value> = p
            .topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type": t.r#type.as_str(),
                    "action": t.action.as_str(),
                    "detected": t.detected,
                })
            })
            .collect();
        o.insert("topicPolicy".into(), json!({ "topics": topics }));
    }
    if let Some(p) = &a.content_policy {
        let filters: Vec<Value> = p
            .filters
            .iter()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "confidence": f.confidence.as_str(),
                    "filterStrength": f.filter_strength.as_ref().map(|s| s.as_str()),
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        o.insert("contentPolicy".into(), json!({ "filters": filters }));
    }
    if let Some(p) = &a.word_policy {
        let custom: Vec<Value> = p
            .custom_words
            .iter()
            .map(|w| json!({ "match": w.r#match, "action": w.action.as_str(), "detected": w.detected }))
            .collect();
        let managed: Vec<Value> = p
            .managed_word_lists
            .iter()
            .map(|w| {
                json!({
                    "match": w.r#match,
                    "type": w.r#type.as_str(),
                    "action": w.action.as_str(),
                    "detected": w.detected,
                })
            })
            .collect();
        o.insert(
            "wordPolicy".into(),
            json!({ "customWords": custom, "managedWordLists": managed }),
        );
    }
    if let Some(p) = &a.sensitive_information_policy {
        let pii: Vec<Value> = p
            .pii_entities
            .iter()
            .map(|e| {
                json!({
                    "match": e.r#match,
                    "type": e.r#type.as_str(),
                    "action": e.action.as_str(),
                    "detected": e.detected,
                })
            })
            .collect();
        let regexes: Vec<Value> = p
            .regexes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "match": r.r#match,
                    "regex": r.regex,
                    "action": r.action.as_str(),
                    "detected": r.detected,
                })
            })
            .collect();
        o.insert(
            "sensitiveInformationPolicy".into(),
            json!({ "piiEntities": pii, "regexes": regexes }),
        );
    }
    if let Some(p) = &a.contextual_grounding_policy {
        let filters: Vec<Value> = p
            .filters
            .iter()
            .flatten()
            .map(|f| {
                json!({
                    "type": f.r#type.as_str(),
                    "threshold": f.threshold,
                    "score": f.score,
                    "action": f.action.as_str(),
                    "detected": f.detected,
                })
            })
            .collect();
        o.insert(
            "contextualGroundingPolicy".into(),
            json!({ "filters": filters }),
        );
    }
    if let Some(p) = &a.automated_reasoning_policy {
        o.insert(
            "automatedReasoningPolicy".into(),
            json!({ "findings": p.findings.as_ref().map_or(0, Vec::len) }),
        );
    }
    if let Some(m) = &a.invocation_metrics {
        o.insert(
            "invocationMetrics".into(),
            json!({ "guardrailProcessingLatency": m.guardrail_processing_latency }),
        );
    }
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------
// Event streams
// ---------------------------------------------------------------------------------------

pub(crate) type Out<I> = VecDeque<Result<I, ProviderError>>;

pub(crate) enum Flow {
    Continue,
    /// The last event arrived; stop reading.
    Done,
}

/// A source of decoded stream events (an SDK `EventReceiver` with its error mapping).
pub(crate) trait Receiver: Send + 'static {
    type Event: Send + 'static;
    fn recv(&mut self) -> BoxFuture<'_, Result<Option<Self::Event>, ProviderError>>;
}

/// Turns one stream's events into the items the gateway reads.
pub(crate) trait Translate<E>: Send + 'static {
    type Item: Send + 'static;
    fn on_event(&mut self, event: E, out: &mut Out<Self::Item>) -> Result<Flow, ProviderError>;
    /// The stream ended before [`Flow::Done`]: final items, or the error that makes it a
    /// broken stream.
    fn on_end(&mut self, out: &mut Out<Self::Item>) -> Result<(), ProviderError>;
}

pub(crate) type ItemsOf<I> = Pin<Box<dyn Stream<Item = Result<I, ProviderError>> + Send>>;

struct Drive<R, T: Translate<R::Event>>
where
    R: Receiver,
{
    rx: R,
    translator: T,
    out: Out<T::Item>,
    finished: bool,
    idle: Duration,
    deadline: tokio::time::Instant,
}

/// The item stream of an event receiver: each event is read within the idle timeout and the
/// whole stream within the deadline; a failure ends the stream with exactly one `Err`.
pub(crate) fn drive<R, T>(rx: R, translator: T, opts: &ProviderOptions) -> ItemsOf<T::Item>
where
    R: Receiver,
    T: Translate<R::Event>,
{
    let state = Drive {
        rx,
        translator,
        out: VecDeque::new(),
        finished: false,
        idle: opts.stream_idle_timeout,
        deadline: tokio::time::Instant::now() + opts.stream_max_duration,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.out.pop_front() {
                return Some((item, st));
            }
            if st.finished {
                return None;
            }
            let left = st
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                st.finished = true;
                st.out.push_back(Err(ProviderError::Timeout));
                continue;
            }
            let next = tokio::time::timeout(st.idle.min(left), st.rx.recv()).await;
            let result = match next {
                Err(_) => Err(ProviderError::Timeout),
                Ok(Err(e)) => Err(e),
                Ok(Ok(None)) => {
                    st.finished = true;
                    st.translator.on_end(&mut st.out)
                }
                Ok(Ok(Some(event))) => match st.translator.on_event(event, &mut st.out) {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::Done) => {
                        st.finished = true;
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                st.finished = true;
                st.out.push_back(Err(e));
            }
        }
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallCtx {
        CallCtx {
            op: "Converse",
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            region: "us-east-1".into(),
            model: "m".into(),
            guardrail: true,
        }
    }

    #[test]
    fn error_codes_map_to_provider_errors() {
        let c = ctx();
        assert!(matches!(
            c.service("ThrottlingException", "slow down"),
            ProviderError::RateLimited { .. }
        ));
        assert!(matches!(
            c.service("ValidationException", "bad field"),
            ProviderError::BadRequest { status: 400, ref code, .. } if code.as_deref() == Some("ValidationException")
        ));
        assert!(matches!(
            c.service("ValidationException", "The provided model identifier is invalid."),
            ProviderError::BadRequest { ref code, .. } if code.as_deref() == Some("model_not_enabled")
        ));
        assert!(matches!(
            c.service("ValidationException", "The guardrail identifier or version provided in the request does not exist."),
            ProviderError::BadRequest { ref code, .. } if code.as_deref() == Some("guardrail_not_found")
        ));
        assert!(matches!(
            c.service("AccessDeniedException", "You don't have access to the model with the specified model ID."),
            ProviderError::BadRequest { status: 403, ref code, .. } if code.as_deref() == Some("model_not_enabled")
        ));
        let ProviderError::Unauthorized { status, message } = c.service(
            "AccessDeniedException",
            "not authorized to perform bedrock:InvokeModel",
        ) else {
            panic!()
        };
        assert_eq!(status, 403);
        assert!(message.contains("arn:aws:iam::123456789012:role/r"));
        assert!(message.contains("bedrock:ApplyGuardrail"));
        assert!(matches!(
            c.service("ModelNotReadyException", "x"),
            ProviderError::Upstream { status: 503, .. }
        ));
        assert!(matches!(
            c.service("ServiceUnavailableException", "x"),
            ProviderError::Upstream { status: 503, .. }
        ));
        assert!(matches!(
            c.service("InternalServerException", "x"),
            ProviderError::Upstream { status: 502, .. }
        ));
        assert!(matches!(
            c.service("ModelTimeoutException", "x"),
            ProviderError::Timeout
        ));
    }

    #[test]
    fn documents_round_trip() {
        let v = json!({"a": [1, -2, 1.5, "s", true, null], "b": {"c": {}}});
        assert_eq!(from_document(&to_document(&v)), v);
    }
}
