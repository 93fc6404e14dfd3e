//! The Bedrock providers end to end on loopback: STS is moto (through a proxy that counts
//! `AssumeRole` on the wire), or a stub for the errors moto cannot produce (it does not check
//! trust policies); Bedrock runtime is `vmx_conformance::bedrock_stub` (moto does not implement
//! Converse/InvokeModel), which records what reached it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use vmx_bedrock::{
    AssumedRoles, BedrockOptions, BedrockProviders, RoleKey, StsOptions, failure_class,
};
use vmx_conformance::bedrock_stub::{self, BedrockStub, Reply};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::clock::Clock;
use vmx_domain::connection::{
    AwsConfig, GuardrailConfig, GuardrailTrace, Latency, PerformanceConfig,
};
use vmx_domain::inference::{
    ChatProvider, ChatRequest, Credentials, MessagesEvent, MessagesProvider, ProviderError,
    StreamItem,
};
use vmx_providers::ProviderOptions;
use vmx_providers::testing::images::{ImageHost, PNG};

use common::{Stub, config_for, fast_options, moto};

const ROLE: &str = "arn:aws:iam::123456789012:role/vmx-bedrock";
const EXTERNAL_ID: &str = "vmx-ext-0190c0de";
const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const CLAUDE: &str = "us.anthropic.claude-3-7-sonnet-20250219-v1:0";

/// A clock tests move forward.
struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(OffsetDateTime::now_utc())))
    }

    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

struct Env {
    stub: BedrockStub,
    sts: SerialProxy,
    clock: Arc<ManualClock>,
    providers: BedrockProviders,
}

impl Env {
    fn converse(&self) -> &dyn ChatProvider {
        &*self.providers.converse
    }

    fn invoke_chat(&self) -> &dyn ChatProvider {
        &*self.providers.invoke
    }

    fn invoke_messages(&self) -> &dyn MessagesProvider {
        &*self.providers.invoke
    }

    fn assume_role_calls(&self) -> usize {
        self.sts.count("Action=AssumeRole")
    }
}

fn options(endpoint: &str) -> BedrockOptions {
    BedrockOptions {
        provider: ProviderOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            stream_start_timeout: Duration::from_secs(20),
            stream_idle_timeout: Duration::from_secs(10),
            stream_max_duration: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
        },
        endpoint_url: Some(endpoint.to_owned()),
        ..BedrockOptions::default()
    }
}

/// Providers whose STS is moto (through a counting proxy) and whose Bedrock is a stub.
async fn env(test: &str) -> Option<Env> {
    env_with(test, |_| {}).await
}

async fn env_with(test: &str, tweak: impl FnOnce(&mut BedrockOptions)) -> Option<Env> {
    let moto_url = moto(test)?;
    let sts = SerialProxy::start(&moto_url).await;
    let sdk = config_for(&sts.url, &fast_options(1)).await;
    let stub = BedrockStub::start().await;
    let clock = ManualClock::new();
    let roles = Arc::new(AssumedRoles::with_clock(
        aws_sdk_sts::Client::new(&sdk),
        StsOptions::default(),
        clock.clone(),
    ));
    let mut options = options(&stub.url);
    tweak(&mut options);
    let providers = BedrockProviders::new(&sdk, options, Some(roles));
    Some(Env {
        stub,
        sts,
        clock,
        providers,
    })
}

fn aws(region: &str) -> AwsConfig {
    AwsConfig {
        region: region.to_owned(),
        iam_role_arn: ROLE.to_owned(),
        external_id: EXTERNAL_ID.to_owned(),
        performance_config: None,
        guardrail_config: None,
    }
}

fn with_guardrail(mut c: AwsConfig) -> AwsConfig {
    c.performance_config = Some(PerformanceConfig {
        latency: Latency::Optimized,
    });
    c.guardrail_config = Some(GuardrailConfig {
        guardrail_identifier: "abc123guardrail".into(),
        guardrail_version: "DRAFT".into(),
        trace: GuardrailTrace::Enabled,
    });
    c
}

fn creds(config: AwsConfig) -> Credentials {
    Credentials::Aws { config }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => panic!("not an object"),
    }
}

fn chat(model: &str, body: Value) -> ChatRequest {
    let mut body = obj(body);
    body.insert("model".into(), json!(model));
    ChatRequest {
        model: model.to_owned(),
        body,
    }
}

fn tools_request(model: &str) -> ChatRequest {
    chat(
        model,
        json!({
            "messages": [
                {"role": "system", "content": "You are a radio assistant."},
                {"role": "user", "content": "What is the most popular song on WZPZ?"}
            ],
            "max_tokens": 256,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["END"],
            "tools": [{
                "type": "function",
                "function": {
                    "name": "top_song",
                    "description": "Get the most popular song played on a radio station.",
                    "parameters": {
                        "type": "object",
                        "properties": {"sign": {"type": "string"}},
                        "required": ["sign"]
                    }
                }
            }],
            "tool_choice": "auto"
        }),
    )
}

async fn collect_chat(
    items: vmx_domain::inference::ItemStream,
) -> Vec<Result<StreamItem, ProviderError>> {
    items.collect().await
}

fn chunks(items: &[Result<StreamItem, ProviderError>]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamItem::Chunk(c)) => Some(c.clone()),
            _ => None,
        })
        .collect()
}

fn delta_text(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c.pointer(&format!("/choices/0/delta/{field}"))?.as_str())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Converse
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn converse_with_tools_signed_with_the_assumed_role() {
    let Some(env) = env("converse_with_tools_signed_with_the_assumed_role").await else {
        return;
    };
    let config = with_guardrail(aws("us-west-2"));
    let out = env
        .converse()
        .chat(&creds(config), tools_request(MODEL))
        .await
        .expect("converse");
    let choice = &out.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["content"],
        "I'll look up the most popular song on that station."
    );
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
    assert_eq!(call["function"]["name"], "top_song");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"sign": "WZPZ"})
    );
    let usage = out.usage.expect("usage");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (375, 55));
    assert_eq!(out.body["usage"]["total_tokens"], 430);
    assert_eq!(out.body["model"], MODEL);
    assert_eq!(out.body["vmx"]["guardrail"]["action"], "NONE");

    // What reached Bedrock.
    let req = env.stub.last();
    assert_eq!(req.operation, "converse");
    assert_eq!(req.model_id, MODEL);
    let sent = req.json();
    assert_eq!(
        sent["system"],
        json!([{"text": "You are a radio assistant."}])
    );
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"text": "What is the most popular song on WZPZ?"}]}])
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 256);
    assert_eq!(sent["inferenceConfig"]["stopSequences"], json!(["END"]));
    assert!((sent["inferenceConfig"]["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "top_song"
    );
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"],
        json!(["sign"])
    );
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"auto": {}}));
    assert_eq!(sent["performanceConfig"], json!({"latency": "optimized"}));
    assert_eq!(
        sent["guardrailConfig"],
        json!({"guardrailIdentifier": "abc123guardrail", "guardrailVersion": "DRAFT", "trace": "enabled"})
    );

    // Signed with the assumed role's temporary credentials, for Bedrock in the connection's
    // region.
    let assumed = env
        .providers
        .roles
        .credentials(&RoleKey::new(ROLE, EXTERNAL_ID))
        .await
        .expect("cached credentials");
    assert_ne!(assumed.access_key_id(), "testing");
    assert_eq!(
        req.access_key_id().as_deref(),
        Some(assumed.access_key_id())
    );
    assert_eq!(
        req.signing_scope(),
        Some(("us-west-2".to_owned(), "bedrock".to_owned()))
    );
    assert!(req.header("x-amz-security-token").is_some());

    // One AssumeRole, with the external id and the vmx- session name.
    assert_eq!(env.assume_role_calls(), 1);
    assert_eq!(
        env.sts
            .count_with("Action=AssumeRole", "ExternalId=vmx-ext-0190c0de"),
        1
    );
    assert_eq!(
        env.sts
            .count_with("Action=AssumeRole", "RoleSessionName=vmx-"),
        1
    );
    assert_eq!(env.providers.roles.sts_calls(), 1);
}

#[tokio::test]
async fn converse_multi_turn_with_tool_results_and_images() {
    let Some(env) = env("converse_multi_turn_with_tool_results_and_images").await else {
        return;
    };
    let req = chat(
        MODEL,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}
                ]},
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{
                    "id": "tooluse_1", "type": "function",
                    "function": {"name": "top_song", "arguments": "{\"sign\":\"WZPZ\"}"}
                }]},
                {"role": "tool", "tool_call_id": "tooluse_1", "content": "Elemental Hotel"},
                {"role": "user", "content": "Thanks"}
            ],
            "max_completion_tokens": 64,
            "tools": [{"type": "function", "function": {"name": "top_song", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "top_song"}}
        }),
    );
    env.converse()
        .chat(&creds(aws("us-east-1")), req)
        .await
        .expect("converse");
    let sent = env.stub.last().json();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0]["content"][1]["image"]["format"], "png");
    assert_eq!(
        messages[0]["content"][1]["image"]["source"]["bytes"],
        "aGVsbG8="
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"][1]["toolUse"]["input"],
        json!({"sign": "WZPZ"})
    );
    assert_eq!(
        messages[2]["content"][0]["toolResult"]["toolUseId"],
        "tooluse_1"
    );
    assert_eq!(
        messages[2]["content"][0]["toolResult"]["content"],
        json!([{"text": "Elemental Hotel"}])
    );
    assert_eq!(messages[2]["content"][1]["text"], "Thanks");
    assert_eq!(
        sent["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "top_song"}})
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 64);
    assert!(sent.get("guardrailConfig").is_none());
    assert!(sent.get("performanceConfig").is_none());
}

#[tokio::test]
async fn converse_stream_chunks_with_usage_last() {
    let Some(env) = env("converse_stream_chunks_with_usage_last").await else {
        return;
    };
    let mut req = tools_request(MODEL);
    req.body.insert("stream".into(), json!(true));
    let stream = env
        .converse()
        .chat_stream(&creds(aws("us-east-1")), req)
        .await
        .expect("stream");
    let items = collect_chat(stream.items).await;
    assert!(items.iter().all(Result::is_ok), "{items:?}");
    let cs = chunks(&items);
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(delta_text(&cs, "content"), "Let me check.");
    let calls: Vec<&Value> = cs
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert_eq!(calls[0]["id"], "tooluse_stream1");
    assert_eq!(calls[0]["function"]["name"], "top_song");
    let args: String = calls
        .iter()
        .filter_map(|c| c.pointer("/function/arguments")?.as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"sign": "WZPZ"})
    );
    let finish: Vec<&Value> = cs
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .filter(|f| !f.is_null())
        })
        .collect();
    assert_eq!(finish, vec![&json!("tool_calls")]);
    // The usage chunk is the last chunk, with no choices; then the usage item ends it.
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 150);
    assert_eq!(last["usage"]["completion_tokens"], 20);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
    let Some(Ok(StreamItem::Usage(u))) = items.last() else {
        panic!("the stream ends with its usage: {items:?}");
    };
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.cache_creation_tokens
        ),
        (150, 20, 40, 10)
    );
    assert_eq!(env.stub.last().operation, "converse-stream");
}

#[tokio::test]
async fn guardrail_intervention_is_content_filter_with_trace() {
    let Some(env) = env("guardrail_intervention_is_content_filter_with_trace").await else {
        return;
    };
    env.stub.reply(MODEL, Reply::GuardrailIntervened);
    let config = with_guardrail(aws("us-east-1"));
    let out = env
        .converse()
        .chat(&creds(config.clone()), tools_request(MODEL))
        .await
        .expect("converse");
    assert_eq!(out.body["choices"][0]["finish_reason"], "content_filter");
    let g = &out.body["vmx"]["guardrail"];
    assert_eq!(g["action"], "INTERVENED");
    assert_eq!(g["actionReason"], "Guardrail blocked.");
    let topic = &g["inputAssessment"]["abc123guardrail"]["topicPolicy"]["topics"][0];
    assert_eq!(topic["name"], "Investments");
    assert_eq!(topic["action"], "BLOCKED");
    assert_eq!(
        g["inputAssessment"]["abc123guardrail"]["invocationMetrics"]["guardrailProcessingLatency"],
        221
    );

    // Streaming: the finish chunk says content_filter and carries the trace.
    let mut req = tools_request(MODEL);
    req.body.insert("stream".into(), json!(true));
    let stream = env
        .converse()
        .chat_stream(&creds(config), req)
        .await
        .expect("stream");
    let items = collect_chat(stream.items).await;
    let cs = chunks(&items);
    let fin = cs
        .iter()
        .find(|c| {
            c.pointer("/choices/0/finish_reason")
                .is_some_and(|f| !f.is_null())
        })
        .expect("finish chunk");
    assert_eq!(fin["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(fin["vmx"]["guardrail"]["action"], "INTERVENED");
    assert_eq!(
        fin["vmx"]["guardrail"]["inputAssessment"]["abc123guardrail"]["topicPolicy"]["topics"][0]["name"],
        "Investments"
    );
    let sent = env.stub.last().json();
    assert_eq!(sent["guardrailConfig"]["streamProcessingMode"], "sync");
    assert!(matches!(items.last(), Some(Ok(StreamItem::Usage(_)))));
}

#[tokio::test]
async fn throttling_is_rate_limited() {
    let Some(env) = env("throttling_is_rate_limited").await else {
        return;
    };
    env.stub.reply(MODEL, Reply::throttling());
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("throttled");
    let ProviderError::RateLimited { message, .. } = &e else {
        panic!("{e:?}");
    };
    assert!(message.contains("Too many requests"), "{message}");
    assert_eq!(env.stub.count(), 1, "no SDK retry by default");

    // Mid-stream, as an exception event.
    env.stub.reply(
        MODEL,
        Reply::StreamException {
            code: "throttlingException".into(),
            message: "Too many tokens, please wait before trying again.".into(),
        },
    );
    let stream = env
        .converse()
        .chat_stream(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect("the stream starts");
    let items = collect_chat(stream.items).await;
    assert!(
        matches!(items.last(), Some(Err(ProviderError::RateLimited { .. }))),
        "{items:?}"
    );
    assert_eq!(items.iter().filter(|i| i.is_err()).count(), 1);

    // Validation and service errors.
    env.stub.reply(
        MODEL,
        Reply::error(400, "ValidationException", "Malformed input request."),
    );
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("invalid");
    assert!(
        matches!(e, ProviderError::BadRequest { status: 400, .. }),
        "{e:?}"
    );
    env.stub.reply(
        MODEL,
        Reply::error(
            503,
            "ServiceUnavailableException",
            "Service is unavailable.",
        ),
    );
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("unavailable");
    assert!(
        matches!(e, ProviderError::Upstream { status: 503, .. }),
        "{e:?}"
    );
    env.stub
        .reply(MODEL, Reply::error(500, "InternalServerException", "oops"));
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("internal");
    assert!(
        matches!(e, ProviderError::Upstream { status: 502, .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn access_denied_names_the_role() {
    let Some(env) = env("access_denied_names_the_role").await else {
        return;
    };
    env.stub.reply(MODEL, Reply::access_denied());
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("denied");
    let ProviderError::Unauthorized { status, message } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*status, 403);
    assert!(message.contains(ROLE), "{message}");
    assert!(message.contains("bedrock:InvokeModel"), "{message}");
    assert!(!message.contains("testing"), "{message}");
    assert_eq!(failure_class(&e), Some("bedrock_permissions"));

    env.stub.reply(MODEL, Reply::model_not_enabled());
    let e = env
        .converse()
        .chat(&creds(aws("us-east-1")), tools_request(MODEL))
        .await
        .expect_err("not enabled");
    assert!(
        matches!(e, ProviderError::BadRequest { status: 403, .. }),
        "{e:?}"
    );
    assert_eq!(failure_class(&e), Some("model_not_enabled"));
}

#[tokio::test]
async fn probe_tells_the_failures_apart() {
    let Some(env) = env("probe_tells_the_failures_apart").await else {
        return;
    };
    let config = with_guardrail(aws("us-east-1"));
    let ok = env
        .converse()
        .probe(&creds(config.clone()), Some(MODEL))
        .await
        .expect("probe");
    assert!(ok.call.contains("Converse"), "{}", ok.call);
    let sent = env.stub.last().json();
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 1);
    assert_eq!(
        sent["guardrailConfig"]["guardrailIdentifier"],
        "abc123guardrail"
    );
    let ok = env
        .invoke_chat()
        .probe(&creds(config.clone()), Some(CLAUDE))
        .await
        .expect("probe");
    assert!(ok.call.contains("InvokeModel"), "{}", ok.call);
    assert_eq!(env.stub.last().json()["max_tokens"], 1);

    let cases = [
        (Reply::access_denied(), "bedrock_permissions"),
        (Reply::model_not_enabled(), "model_not_enabled"),
        (
            Reply::error(404, "ResourceNotFoundException", "Model not found."),
            "model_not_enabled",
        ),
        (
            Reply::error(
                400,
                "ValidationException",
                "The provided model identifier is invalid.",
            ),
            "model_not_enabled",
        ),
        (
            Reply::error(
                400,
                "ValidationException",
                "The guardrail identifier or version provided in the request does not exist.",
            ),
            "guardrail_not_found",
        ),
    ];
    for (reply, class) in cases {
        env.stub.reply(MODEL, reply.clone());
        env.stub.reply(CLAUDE, reply);
        let e = env
            .converse()
            .probe(&creds(config.clone()), Some(MODEL))
            .await
            .expect_err(class);
        assert_eq!(failure_class(&e), Some(class), "{e:?}");
        let e = env
            .invoke_chat()
            .probe(&creds(config.clone()), Some(CLAUDE))
            .await
            .expect_err(class);
        assert_eq!(failure_class(&e), Some(class), "{e:?}");
    }
    let e = env
        .converse()
        .probe(&creds(config), None)
        .await
        .expect_err("no model");
    assert_eq!(failure_class(&e), Some("model_required"));
}

/// STS refusing the role (moto does not check trust policies: a stub answers STS).
#[tokio::test]
async fn sts_access_denied_points_at_the_trust_policy() {
    let sts = Stub::start(
        403,
        "text/xml",
        bedrock_stub::sts_error_xml(
            "AccessDenied",
            "User: arn:aws:sts::999999999999:assumed-role/vmx-lambda/fn is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/vmx-bedrock",
        ),
    )
    .await;
    let sdk = config_for(&sts.url, &fast_options(1)).await;
    let stub = BedrockStub::start().await;
    let providers = BedrockProviders::new(&sdk, options(&stub.url), None);
    let config = aws("us-east-1");

    // Twenty concurrent requests on a role that cannot be assumed: one STS call, one error
    // each, all with the trust-policy hint.
    let calls = (0..20).map(|_| {
        let p = providers.converse.clone();
        let c = creds(config.clone());
        async move { p.chat(&c, tools_request(MODEL)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(
        sts.requests(),
        1,
        "a failed refresh is shared by its waiters"
    );
    for r in results {
        let e = r.expect_err("denied");
        let ProviderError::Unauthorized { status, message } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*status, 401);
        assert!(message.contains("trust policy"), "{message}");
        assert!(message.contains("externalId"), "{message}");
        assert!(message.contains(ROLE), "{message}");
        assert!(
            !message.contains("999999999999"),
            "vmx's own principal stays out: {message}"
        );
        assert_eq!(failure_class(&e), Some("trust_policy"));
    }
    assert_eq!(stub.count(), 0, "Bedrock is not called without credentials");

    let e = providers
        .invoke
        .probe(&creds(config.clone()), Some(CLAUDE))
        .await
        .expect_err("denied");
    assert_eq!(failure_class(&e), Some("trust_policy"));
    let e = providers
        .converse
        .probe(&creds(config), None)
        .await
        .expect_err("denied");
    assert_eq!(
        failure_class(&e),
        Some("trust_policy"),
        "trust is checked even without a model"
    );
}

// ---------------------------------------------------------------------------------------
// The role credentials cache
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn zero_sts_calls_per_request_in_steady_state() {
    let Some(env) = env("zero_sts_calls_per_request_in_steady_state").await else {
        return;
    };
    let east = creds(aws("us-east-1"));
    let west = creds(aws("eu-west-1"));
    for i in 0..30 {
        let c = if i % 2 == 0 { &east } else { &west };
        env.converse()
            .chat(c, tools_request(MODEL))
            .await
            .expect("converse");
        env.invoke_chat()
            .chat(
                c,
                chat(
                    CLAUDE,
                    json!({"messages": [{"role": "user", "content": "hi"}]}),
                ),
            )
            .await
            .expect("invoke");
    }
    assert_eq!(env.stub.count(), 60);
    assert_eq!(
        env.providers.roles.sts_calls(),
        1,
        "one AssumeRole for the role"
    );
    assert_eq!(env.assume_role_calls(), 1);
    assert_eq!(
        env.providers.clients.len(),
        2,
        "one Bedrock client per region"
    );

    // Another external id is another cache entry.
    let mut other = aws("us-east-1");
    other.external_id = "another-external-id".into();
    env.converse()
        .chat(&creds(other), tools_request(MODEL))
        .await
        .expect("converse");
    assert_eq!(env.providers.roles.sts_calls(), 2);
}

#[tokio::test]
async fn refresh_near_expiry_without_stampede() {
    let Some(env) = env("refresh_near_expiry_without_stampede").await else {
        return;
    };
    let config = aws("us-east-1");
    env.converse()
        .chat(&creds(config.clone()), tools_request(MODEL))
        .await
        .expect("converse");
    let key = RoleKey::new(ROLE, EXTERNAL_ID);
    let first = env.providers.roles.credentials(&key).await.unwrap();
    assert_eq!(env.providers.roles.sts_calls(), 1);

    // 54 minutes on: still fresh (refreshed 5 minutes before the 1 hour expiry).
    env.clock.advance(Duration::from_secs(54 * 60));
    env.converse()
        .chat(&creds(config.clone()), tools_request(MODEL))
        .await
        .expect("converse");
    assert_eq!(env.providers.roles.sts_calls(), 1);

    // 56 minutes on: inside the refresh window. Twenty concurrent requests, one AssumeRole.
    env.clock.advance(Duration::from_secs(2 * 60));
    let calls = (0..20).map(|_| {
        let p = env.providers.converse.clone();
        let c = creds(config.clone());
        async move { p.chat(&c, tools_request(MODEL)).await }
    });
    for r in futures_util::future::join_all(calls).await {
        r.expect("converse");
    }
    assert_eq!(env.providers.roles.sts_calls(), 2);
    assert_eq!(env.assume_role_calls(), 2);
    let second = env.providers.roles.credentials(&key).await.unwrap();
    assert_ne!(first.access_key_id(), second.access_key_id());
    assert_eq!(
        env.stub.last().access_key_id().as_deref(),
        Some(second.access_key_id()),
        "requests are signed with the refreshed credentials"
    );

    // The cache directly: twenty concurrent reads of a stale entry, one more call.
    env.clock.advance(Duration::from_secs(57 * 60));
    let reads = (0..20).map(|_| env.providers.roles.credentials(&key));
    let got = futures_util::future::join_all(reads).await;
    assert!(got.iter().all(Result::is_ok));
    assert_eq!(env.providers.roles.sts_calls(), 3);
    let ids: std::collections::HashSet<String> = got
        .into_iter()
        .map(|c| c.unwrap().access_key_id().to_owned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every waiter got the one refreshed credential"
    );
}

// ---------------------------------------------------------------------------------------
// InvokeModel (aws-bedrock-invoke)
// ---------------------------------------------------------------------------------------

fn messages_body() -> Map<String, Value> {
    obj(json!({
        "model": CLAUDE,
        "max_tokens": 2048,
        "system": [
            {"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{
            "name": "top_song",
            "description": "Most popular song on a station.",
            "input_schema": {"type": "object", "properties": {"sign": {"type": "string"}}},
            "cache_control": {"type": "ephemeral", "ttl": "1h"}
        }],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}
            ]}
        ]
    }))
}

#[tokio::test]
async fn invoke_messages_passthrough_keeps_anthropic_fields() {
    let Some(env) = env("invoke_messages_passthrough_keeps_anthropic_fields").await else {
        return;
    };
    let config = with_guardrail(aws("us-east-1"));
    let body = messages_body();
    let out = env
        .invoke_messages()
        .messages(&creds(config), CLAUDE, body.clone())
        .await
        .expect("invoke");
    assert_eq!(
        out.body,
        bedrock_stub::invoke_fixture(),
        "the response as Bedrock sent it"
    );
    let usage = out.usage.expect("usage");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cached_tokens,
            usage.completion_tokens
        ),
        (1049, 1024, 42)
    );

    let req = env.stub.last();
    assert_eq!(req.operation, "invoke");
    assert_eq!(req.model_id, CLAUDE);
    let mut expected = body;
    expected.remove("model");
    expected.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
    assert_eq!(
        req.json(),
        Value::Object(expected),
        "cache_control, thinking, tools unchanged"
    );
    assert_eq!(
        req.header("x-amzn-bedrock-guardrailidentifier"),
        Some("abc123guardrail")
    );
    assert_eq!(req.header("x-amzn-bedrock-guardrailversion"), Some("DRAFT"));
    assert_eq!(req.header("x-amzn-bedrock-trace"), Some("ENABLED"));
    assert_eq!(
        req.header("x-amzn-bedrock-performanceconfig-latency"),
        Some("optimized")
    );
}

#[tokio::test]
async fn invoke_chat_translates_and_keeps_cache_control_and_thinking() {
    let Some(env) = env("invoke_chat_translates_and_keeps_cache_control_and_thinking").await else {
        return;
    };
    let req = chat(
        CLAUDE,
        json!({
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "user", "content": [
                    {"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}
                ]}
            ],
            "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "user": "someone"
        }),
    );
    let out = env
        .invoke_chat()
        .chat(&creds(aws("us-east-1")), req)
        .await
        .expect("invoke");
    let msg = &out.body["choices"][0]["message"];
    assert_eq!(msg["content"], "Hello! How can I help?");
    assert_eq!(msg["reasoning_content"], "The user greets me.");
    assert_eq!(out.body["choices"][0]["finish_reason"], "stop");
    assert_eq!(out.usage.unwrap().prompt_tokens, 1049);

    let sent = env.stub.last().json();
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert!(sent.get("model").is_none());
    assert!(sent.get("stream").is_none());
    assert!(sent.get("metadata").is_none());
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(sent["max_tokens"], 2048);

    // A guardrail intervention on InvokeModel.
    env.stub.reply(CLAUDE, Reply::GuardrailIntervened);
    let out = env
        .invoke_chat()
        .chat(
            &creds(with_guardrail(aws("us-east-1"))),
            chat(
                CLAUDE,
                json!({"messages": [{"role": "user", "content": "stocks?"}]}),
            ),
        )
        .await
        .expect("invoke");
    assert_eq!(out.body["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(out.body["vmx"]["guardrail"]["action"], "INTERVENED");
}

#[tokio::test]
async fn invoke_stream_as_anthropic_events() {
    let Some(env) = env("invoke_stream_as_anthropic_events").await else {
        return;
    };
    let mut body = messages_body();
    body.insert("stream".into(), json!(true));
    let stream = env
        .invoke_messages()
        .messages_stream(&creds(aws("us-east-1")), CLAUDE, body.clone())
        .await
        .expect("stream");
    let items: Vec<_> = stream.events.collect().await;
    let events: Vec<(String, Value)> = items
        .iter()
        .filter_map(|i| match i {
            Ok(MessagesEvent::Event { name, data }) => Some((name.clone(), data.clone())),
            _ => None,
        })
        .collect();
    let fixture = bedrock_stub::invoke_stream_events();
    assert_eq!(events.len(), fixture.len());
    for ((name, data), want) in events.iter().zip(&fixture) {
        assert_eq!(name, want["type"].as_str().unwrap());
        assert_eq!(data, want, "events pass through unchanged");
    }
    let usage_at = items
        .iter()
        .position(|i| matches!(i, Ok(MessagesEvent::Usage(_))))
        .expect("usage");
    let delta_at = items
        .iter()
        .position(|i| matches!(i, Ok(MessagesEvent::Event { name, .. }) if name == "message_delta"))
        .unwrap();
    assert_eq!(usage_at, delta_at + 1, "usage right after message_delta");
    let Ok(MessagesEvent::Usage(u)) = &items[usage_at] else {
        unreachable!()
    };
    assert_eq!(
        (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
        (1049, 1024, 42)
    );

    let req = env.stub.last();
    assert_eq!(req.operation, "invoke-with-response-stream");
    let mut expected = body;
    expected.remove("model");
    expected.remove("stream");
    expected.insert("anthropic_version".into(), json!("bedrock-2023-05-31"));
    assert_eq!(req.json(), Value::Object(expected));
}

#[tokio::test]
async fn invoke_stream_as_openai_chunks() {
    let Some(env) = env("invoke_stream_as_openai_chunks").await else {
        return;
    };
    let req = chat(
        CLAUDE,
        json!({
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": true,
            "thinking": {"type": "enabled", "budget_tokens": 1024}
        }),
    );
    let stream = env
        .invoke_chat()
        .chat_stream(&creds(aws("us-east-1")), req)
        .await
        .expect("stream");
    let items = collect_chat(stream.items).await;
    assert!(items.iter().all(Result::is_ok), "{items:?}");
    let cs = chunks(&items);
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(cs[0]["id"], "msg_bdrk_stream1");
    assert_eq!(delta_text(&cs, "reasoning_content"), "The user greets me.");
    assert_eq!(delta_text(&cs, "content"), "Hello! How can I help?");
    let finish: Vec<&Value> = cs
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .filter(|f| !f.is_null())
        })
        .collect();
    assert_eq!(finish, vec![&json!("stop")]);
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 1049);
    assert_eq!(last["usage"]["completion_tokens"], 42);
    let Some(Ok(StreamItem::Usage(u))) = items.last() else {
        panic!("usage last");
    };
    assert_eq!(u.completion_tokens, 42);
    let sent = env.stub.last().json();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert!(sent.get("stream").is_none());

    // A throttle in the middle of the stream ends it with one error.
    env.stub.reply(
        CLAUDE,
        Reply::StreamException {
            code: "throttlingException".into(),
            message: "Too many tokens".into(),
        },
    );
    let stream = env
        .invoke_chat()
        .chat_stream(
            &creds(aws("us-east-1")),
            chat(
                CLAUDE,
                json!({"messages": [{"role": "user", "content": "Hello"}]}),
            ),
        )
        .await
        .expect("the stream starts");
    let items = collect_chat(stream.items).await;
    assert!(
        matches!(items.last(), Some(Err(ProviderError::RateLimited { .. }))),
        "{items:?}"
    );
}

#[tokio::test]
async fn api_key_credentials_are_refused() {
    let Some(env) = env("api_key_credentials_are_refused").await else {
        return;
    };
    let e = env
        .converse()
        .chat(
            &Credentials::ApiKey("sk-x".to_owned().into()),
            tools_request(MODEL),
        )
        .await
        .expect_err("refused");
    assert!(matches!(e, ProviderError::Unauthorized { .. }));
    assert_eq!(env.stub.count(), 0);
}

/// Bedrock takes images only as bytes: an image URL is fetched (under the image policy;
/// this test's policy allows the loopback image host) and sent as bytes.
#[tokio::test]
async fn image_urls_are_fetched_and_sent_as_bytes() {
    let host = ImageHost::start().await;
    let Some(env) = env_with("image_urls_are_fetched_and_sent_as_bytes", |o| {
        o.images.allow_loopback_http = true;
    })
    .await
    else {
        return;
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(PNG);
    let req = chat(
        MODEL,
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": host.url("/cat.png")}}
        ]}]}),
    );
    env.converse()
        .chat(&creds(aws("us-east-1")), req)
        .await
        .expect("converse");
    let sent = env.stub.last().json();
    assert_eq!(sent["messages"][0]["content"][1]["image"]["format"], "png");
    assert_eq!(
        sent["messages"][0]["content"][1]["image"]["source"]["bytes"],
        encoded
    );

    let mut body = messages_body();
    body.insert(
        "messages".into(),
        json!([{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": host.url("/to-cat")}},
            {"type": "text", "text": "Describe it."}
        ]}]),
    );
    env.invoke_messages()
        .messages(&creds(aws("us-east-1")), CLAUDE, body)
        .await
        .expect("invoke");
    let sent = env.stub.last().json();
    assert_eq!(
        sent["messages"][0]["content"][0]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": encoded})
    );
    assert_eq!(host.requests(), 3, "one fetch, one redirect plus one fetch");
}

/// With the default policy a loopback image URL is refused before Bedrock is called.
#[tokio::test]
async fn image_urls_to_private_addresses_are_refused_before_bedrock() {
    let host = ImageHost::start().await;
    let Some(env) = env("image_urls_to_private_addresses_are_refused_before_bedrock").await else {
        return;
    };
    let before = env.stub.requests().len();
    let url = host.url("/cat.png").replace("http://", "https://");
    let req = chat(
        MODEL,
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}
        ]}]}),
    );
    let err = env
        .converse()
        .chat(&creds(aws("us-east-1")), req)
        .await
        .expect_err("refused");
    match err {
        ProviderError::BadRequest {
            status,
            message,
            param,
            ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(param.as_deref(), Some("messages"));
            assert!(message.contains("non-public address"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.requests(), 0);
    assert_eq!(env.stub.requests().len(), before, "Bedrock was not called");
}

// ---------------------------------------------------------------------------------------
// Caller-supplied Bedrock control fields
// ---------------------------------------------------------------------------------------

/// The 400 a caller gets for a Bedrock control field: it names the field.
fn assert_refused(e: ProviderError, field: &str) {
    match e {
        ProviderError::BadRequest {
            status,
            message,
            param,
            ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(param.as_deref(), Some(field), "{message}");
            assert!(message.contains(field), "{message}");
        }
        other => panic!("{field}: {other:?}"),
    }
}

/// A caller may not change the connection's guardrail, performance settings or model: a
/// body field Bedrock reads as a control (`amazon-bedrock-*`, the Converse parameters) is
/// refused with a 400 naming it, on every Bedrock route, and nothing reaches Bedrock; what
/// does reach Bedrock carries the connection's guardrail only.
#[tokio::test]
async fn caller_bedrock_control_fields_are_refused_on_every_route() {
    let Some(env) = env("caller_bedrock_control_fields_are_refused_on_every_route").await else {
        return;
    };
    let config = creds(with_guardrail(aws("us-east-1")));
    let weaker = json!({"tagSuffix": "x", "streamProcessingMode": "ASYNCHRONOUS"});

    // aws-bedrock-invoke, /v1/messages (plain and streaming).
    for field in [
        "amazon-bedrock-guardrailConfig",
        "amazon-bedrock-trace",
        "Amazon-Bedrock-GuardrailConfig",
    ] {
        let mut body = messages_body();
        body.insert(field.into(), weaker.clone());
        let e = env
            .invoke_messages()
            .messages(&config, CLAUDE, body.clone())
            .await
            .expect_err("refused");
        assert_refused(e, field);
        let e = match env
            .invoke_messages()
            .messages_stream(&config, CLAUDE, body)
            .await
        {
            Ok(_) => panic!("{field}: the stream was started"),
            Err(e) => e,
        };
        assert_refused(e, field);
    }

    // aws-bedrock-invoke, /v1/chat/completions (plain and streaming).
    let chat_with = |field: &str| {
        let mut req = chat(
            CLAUDE,
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        );
        req.body.insert(field.into(), weaker.clone());
        req
    };
    for field in ["amazon-bedrock-guardrailConfig", "guardrailConfig"] {
        let e = env
            .invoke_chat()
            .chat(&config, chat_with(field))
            .await
            .expect_err("refused");
        assert_refused(e, field);
        let e = match env
            .invoke_chat()
            .chat_stream(&config, chat_with(field))
            .await
        {
            Ok(_) => panic!("{field}: the stream was started"),
            Err(e) => e,
        };
        assert_refused(e, field);
    }

    // aws-bedrock (Converse): the Converse parameters at the top level, and the model's
    // own body (additionalModelRequestFields) may not carry Bedrock's body controls.
    for field in [
        "guardrailConfig",
        "performanceConfig",
        "modelId",
        "amazon-bedrock-guardrailConfig",
    ] {
        let e = env
            .converse()
            .chat(&config, chat_with(field))
            .await
            .expect_err("refused");
        assert_refused(e, field);
        let e = match env.converse().chat_stream(&config, chat_with(field)).await {
            Ok(_) => panic!("{field}: the stream was started"),
            Err(e) => e,
        };
        assert_refused(e, field);
    }
    let mut req = chat(
        MODEL,
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    req.body.insert(
        "additionalModelRequestFields".into(),
        json!({"amazon-bedrock-guardrailConfig": weaker, "top_k": 5}),
    );
    let e = env
        .converse()
        .chat(&config, req)
        .await
        .expect_err("refused");
    assert_refused(
        e,
        "additionalModelRequestFields.amazon-bedrock-guardrailConfig",
    );
    assert_eq!(env.stub.count(), 0, "nothing reached Bedrock");

    // What does reach Bedrock carries the connection's controls, nothing of the caller's.
    let req = chat(
        MODEL,
        json!({"messages": [{"role": "user", "content": "hi"}],
               "additionalModelRequestFields": {"top_k": 5}}),
    );
    env.converse().chat(&config, req).await.expect("converse");
    let sent = env.stub.last();
    assert_eq!(sent.model_id, MODEL);
    let sent = sent.json();
    assert_eq!(
        sent["guardrailConfig"],
        json!({"guardrailIdentifier": "abc123guardrail", "guardrailVersion": "DRAFT", "trace": "enabled"})
    );
    assert_eq!(sent["performanceConfig"], json!({"latency": "optimized"}));
    assert_eq!(sent["additionalModelRequestFields"], json!({"top_k": 5}));
    let mut body = messages_body();
    body.insert("model".into(), json!("some-other-model"));
    env.invoke_messages()
        .messages(&config, CLAUDE, body)
        .await
        .expect("invoke");
    let sent = env.stub.last();
    assert_eq!(
        sent.model_id, CLAUDE,
        "the model is the gateway's, not the body's"
    );
    assert!(
        sent.json()
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.to_ascii_lowercase().starts_with("amazon-bedrock-")),
        "{:?}",
        sent.json()
    );
    assert_eq!(
        sent.header("x-amzn-bedrock-guardrailidentifier"),
        Some("abc123guardrail")
    );
}
