//! Every provider adapter against its stub server: success and usage, tools round trip,
//! streams, rate limits, errors, timeouts, broken streams, malformed answers, probes and
//! secret hygiene.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{Value, json};
use vmx_domain::capacity::Period;
use vmx_domain::inference::{
    ChatProvider, ChatRequest, ChatStream, Credentials, ProviderError, StreamItem, Usage,
};
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::{Behaviour, StubServer, fixtures};
use vmx_providers::{ProviderEndpoints, ProviderOptions, ProviderSet, http_client};

const KEY: &str = "sk-test-Zq8xR2vB7nL4kP9wT3yH";

fn options() -> ProviderOptions {
    ProviderOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        stream_start_timeout: Duration::from_secs(2),
        stream_idle_timeout: Duration::from_secs(1),
        stream_max_duration: Duration::from_secs(10),
        max_response_bytes: 1024 * 1024,
    }
}

fn creds() -> Credentials {
    Credentials::ApiKey(SecretString::from(KEY))
}

async fn setup(kind: ProviderKind) -> (StubServer, Arc<dyn ChatProvider>) {
    let stub = StubServer::start(kind).await;
    let mut endpoints = ProviderEndpoints::default();
    endpoints.set(kind, stub.base_url.clone());
    endpoints.validate().unwrap();
    let opts = options();
    let set = ProviderSet::new(http_client(&opts).unwrap(), endpoints, opts);
    (stub, set.get(kind).unwrap())
}

fn request(model: &str, body: Value) -> ChatRequest {
    let mut body = body.as_object().unwrap().clone();
    body.insert("model".into(), json!(model));
    ChatRequest {
        model: model.into(),
        body,
    }
}

fn simple(model: Behaviour) -> ChatRequest {
    request(
        model.model(),
        json!({
            "messages": [
                { "role": "system", "content": "You are terse." },
                { "role": "user", "content": "What is the capital of France?" },
            ],
        }),
    )
}

#[derive(Debug, Default)]
struct Collected {
    chunks: Vec<Value>,
    usages: Vec<Usage>,
    /// Index in the item sequence of each Usage item.
    usage_positions: Vec<usize>,
    items: usize,
    error: Option<ProviderError>,
}

impl Collected {
    fn text(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect()
    }

    fn finish_reasons(&self) -> Vec<String> {
        self.chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/finish_reason")
                    .and_then(Value::as_str)
            })
            .map(str::to_owned)
            .collect()
    }

    /// Tool calls reassembled from their deltas, by index: (id, name, arguments).
    fn tool_calls(&self) -> Vec<(String, String, String)> {
        let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
        for c in &self.chunks {
            let Some(deltas) = c
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
            else {
                continue;
            };
            for d in deltas {
                let index = d["index"]
                    .as_u64()
                    .expect("every tool call delta has an index");
                let e = calls.entry(index).or_default();
                if let Some(id) = d["id"].as_str() {
                    e.0 = id.to_owned();
                }
                if let Some(n) = d.pointer("/function/name").and_then(Value::as_str) {
                    e.1.push_str(n);
                }
                if let Some(a) = d.pointer("/function/arguments").and_then(Value::as_str) {
                    e.2.push_str(a);
                }
            }
        }
        calls.into_values().collect()
    }

    fn usage_chunks(&self) -> Vec<&Value> {
        self.chunks
            .iter()
            .filter(|c| {
                c["choices"].as_array().is_some_and(Vec::is_empty) && c["usage"].is_object()
            })
            .collect()
    }
}

/// Drains a stream; a stream that does not end within 10 s fails the test (never a hang).
async fn collect(stream: ChatStream) -> Collected {
    let mut items = stream.items;
    let mut out = Collected::default();
    let drain = async {
        while let Some(item) = items.next().await {
            assert!(out.error.is_none(), "no item may follow an error");
            match item {
                Ok(StreamItem::Chunk(c)) => out.chunks.push(c),
                Ok(StreamItem::ChunkJson(t)) => out.chunks.push(serde_json::from_str(&t).unwrap()),
                Ok(StreamItem::Usage(u)) => {
                    out.usage_positions.push(out.items);
                    out.usages.push(u);
                }
                Err(e) => out.error = Some(e),
            }
            out.items += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the stream ended");
    out
}

fn expected_limits(kind: ProviderKind) -> Vec<(Period, &'static str, u64)> {
    match kind {
        ProviderKind::OpenAi => vec![
            (Period::Minute, "requests", 5000),
            (Period::Minute, "tokens", 2_000_000),
        ],
        // Groq's request limit is per DAY.
        ProviderKind::Groq => vec![
            (Period::Day, "requests", 14_400),
            (Period::Minute, "tokens", 6000),
        ],
        ProviderKind::Anthropic => vec![
            (Period::Minute, "requests", 50),
            (Period::Minute, "tokens", 90_000),
            (Period::Minute, "input-tokens", 40_000),
            (Period::Minute, "output-tokens", 8000),
        ],
        _ => vec![],
    }
}

fn limit_triples(limits: &[vmx_domain::connection::DiscoveredLimit]) -> Vec<(Period, &str, u64)> {
    limits
        .iter()
        .map(|l| (l.period, l.metric.as_str(), l.limit))
        .collect()
}

/// The key, any 8-character piece of it, its masked form and its percent-encoding appear
/// nowhere in `text`.
fn assert_no_key(text: &str) {
    let masked = format!("{}****{}", &KEY[..4], &KEY[KEY.len() - 4..]);
    assert!(!text.contains(KEY), "the key leaked: {text}");
    assert!(!text.contains(&masked), "the masked key leaked: {text}");
    for w in KEY.as_bytes().windows(8) {
        let w = std::str::from_utf8(w).unwrap();
        assert!(!text.contains(w), "a piece of the key ({w}) leaked: {text}");
    }
}

fn assert_error_has_no_key(e: &ProviderError) {
    assert_no_key(&e.to_string());
    assert_no_key(&format!("{e:?}"));
}

macro_rules! per_provider {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test]
            async fn openai() {
                super::$name(ProviderKind::OpenAi).await
            }
            #[tokio::test]
            async fn anthropic() {
                super::$name(ProviderKind::Anthropic).await
            }
            #[tokio::test]
            async fn gemini() {
                super::$name(ProviderKind::Gemini).await
            }
            #[tokio::test]
            async fn groq() {
                super::$name(ProviderKind::Groq).await
            }
            #[tokio::test]
            async fn perplexity() {
                super::$name(ProviderKind::Perplexity).await
            }
        }
    )*};
}

per_provider!(
    success_and_usage,
    connections_are_reused,
    streaming_with_usage,
    tools_round_trip,
    streamed_tool_call,
    rate_limited_with_retry_after,
    rate_limited_with_http_date,
    unauthorized_without_the_key,
    echoed_key_is_scrubbed,
    server_error_is_upstream,
    bad_request_keeps_the_providers_message,
    timeout,
    stream_start_timeout,
    stalled_stream_times_out,
    cut_stream_ends_with_an_error,
    reset_stream_ends_with_an_error,
    malformed_json,
    malformed_stream_event,
    error_event_mid_stream,
    oversized_response,
    probe,
    probe_with_a_rejected_key,
);

async fn success_and_usage(kind: ProviderKind) {
    let (stub, p) = setup(kind).await;
    let done = p.chat(&creds(), simple(Behaviour::Ok)).await.unwrap();
    let b = &done.body;
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        b["choices"][0]["message"]["content"], "Hello! You said: What is the capital of France?",
        "the user's text reached the provider and its answer came back"
    );
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let usage = done.usage.expect("usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(b["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(b["usage"]["completion_tokens"], usage.completion_tokens);
    assert_eq!(b["usage"]["total_tokens"], usage.total());
    assert_eq!(limit_triples(&done.limits), expected_limits(kind));
    if !done.limits.is_empty() {
        assert!(
            done.limits
                .iter()
                .all(|l| l.remaining.is_some() && l.reset.is_some())
        );
    }

    let r = stub.last_request().unwrap();
    assert_eq!(r.method, "POST");
    assert!(
        r.query.is_none(),
        "nothing in the query string: {:?}",
        r.query
    );
    match kind {
        ProviderKind::Anthropic => {
            assert_eq!(r.path, "/v1/messages");
            assert_eq!(r.header("x-api-key"), Some(KEY));
            assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
            assert_eq!(r.body["system"][0]["text"], "You are terse.");
            assert_eq!(r.body["max_tokens"], 4096);
            assert!(r.header("authorization").is_none());
        }
        ProviderKind::Gemini => {
            assert_eq!(r.path, "/v1beta/models/stub-ok:generateContent");
            assert_eq!(r.header("x-goog-api-key"), Some(KEY));
            assert_eq!(
                r.body["systemInstruction"]["parts"][0]["text"],
                "You are terse."
            );
            assert!(r.header("authorization").is_none());
            // Thinking tokens are output: completion = candidates + thoughts.
            assert_eq!(
                b["usage"]["completion_tokens_details"]["reasoning_tokens"],
                fixtures::GEMINI_THOUGHTS_TOKENS
            );
        }
        _ => {
            let prefix = match kind {
                ProviderKind::OpenAi => "/v1",
                ProviderKind::Groq => "/openai/v1",
                _ => "",
            };
            assert_eq!(r.path, format!("{prefix}/chat/completions"));
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert_eq!(r.body["messages"], simple(Behaviour::Ok).body["messages"]);
            assert!(r.body.get("stream").is_none());
        }
    }
}

async fn connections_are_reused(kind: ProviderKind) {
    let (stub, p) = setup(kind).await;
    for _ in 0..2 {
        p.chat(&creds(), simple(Behaviour::Ok)).await.unwrap();
        let c = collect(
            p.chat_stream(&creds(), streamed(Behaviour::Ok))
                .await
                .unwrap(),
        )
        .await;
        assert!(c.error.is_none());
    }
    let peers: std::collections::HashSet<_> =
        stub.requests().iter().map(|r| r.peer.unwrap()).collect();
    assert_eq!(
        peers.len(),
        1,
        "one pooled connection served all four calls: {peers:?}"
    );
}

async fn streaming_with_usage(kind: ProviderKind) {
    let (stub, p) = setup(kind).await;
    let mut req = simple(Behaviour::Ok);
    // The caller did not ask for usage: the adapter asks anyway (where the provider knows
    // the option), so the gateway learns it.
    req.body.insert("stream".into(), json!(true));
    req.body
        .insert("stream_options".into(), json!({ "include_usage": false }));
    let unstreamed = p.chat(&creds(), simple(Behaviour::Ok)).await.unwrap();
    let s = p.chat_stream(&creds(), req).await.unwrap();
    assert_eq!(limit_triples(&s.limits), expected_limits(kind));
    let c = collect(s).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    assert_eq!(c.text(), "Hello! You said: What is the capital of France?");
    assert_eq!(c.finish_reasons(), vec!["stop"]);
    assert_eq!(
        c.chunks[0].pointer("/choices/0/delta/role"),
        Some(&json!("assistant"))
    );
    // Exactly one usage, the last item, right after one usage-only chunk.
    assert_eq!(c.usages.len(), 1);
    assert_eq!(c.usage_positions, vec![c.items - 1]);
    let usage_chunks = c.usage_chunks();
    assert_eq!(usage_chunks.len(), 1, "one usage-only chunk");
    assert_eq!(usage_chunks[0], c.chunks.last().unwrap());
    let u = c.usages[0];
    assert_eq!(usage_chunks[0]["usage"]["prompt_tokens"], u.prompt_tokens);
    assert_eq!(
        usage_chunks[0]["usage"]["completion_tokens"],
        u.completion_tokens
    );
    assert_eq!(
        Some(u),
        unstreamed.usage,
        "a stream counts what a whole answer counts"
    );
    for chunk in &c.chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }

    let r = stub.last_request().unwrap();
    match kind {
        ProviderKind::OpenAi | ProviderKind::Groq => {
            assert_eq!(r.body["stream"], true);
            assert_eq!(r.body["stream_options"]["include_usage"], true);
        }
        ProviderKind::Perplexity => {
            assert_eq!(r.body["stream"], true);
            assert!(r.body.get("stream_options").is_none());
            // Perplexity's citations reach the caller on the chunks.
            assert!(c.chunks.iter().any(|ch| ch["citations"].is_array()));
        }
        ProviderKind::Anthropic => {
            assert_eq!(r.body["stream"], true);
            assert!(r.body.get("stream_options").is_none());
        }
        ProviderKind::Gemini => {
            assert_eq!(r.path, "/v1beta/models/stub-ok:streamGenerateContent");
            assert_eq!(r.query.as_deref(), Some("alt=sse"));
        }
        _ => unreachable!(),
    }
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": { "location": { "type": "string" } },
                "required": ["location"],
            },
        },
    }])
}

async fn tools_round_trip(kind: ProviderKind) {
    let (stub, p) = setup(kind).await;
    let user = json!({ "role": "user", "content": "What's the weather in Paris?" });
    let first = p
        .chat(
            &creds(),
            request(
                Behaviour::Tools.model(),
                json!({ "messages": [user], "tools": weather_tools(), "tool_choice": "auto" }),
            ),
        )
        .await
        .unwrap();
    let choice = &first.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "location": fixtures::TOOL_ARGUMENT }));
    let call_id = call["id"].as_str().unwrap().to_owned();
    assert!(!call_id.is_empty());

    // Turn 2: the assistant message as received, then the tool's result.
    let assistant = choice["message"].clone();
    let second = p
        .chat(
            &creds(),
            request(
                Behaviour::Tools.model(),
                json!({
                    "messages": [
                        user,
                        assistant,
                        { "role": "tool", "tool_call_id": call_id, "content": "18 degrees and sunny" },
                    ],
                    "tools": weather_tools(),
                }),
            ),
        )
        .await
        .unwrap();
    let text = second.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with("The tool said:") && text.contains("18 degrees and sunny"),
        "the tool result reached the provider as a tool result: {text}"
    );
    assert_eq!(second.body["choices"][0]["finish_reason"], "stop");

    let r = stub.last_request().unwrap();
    match kind {
        ProviderKind::Anthropic => {
            assert_eq!(r.body["tools"][0]["name"], "get_weather");
            assert_eq!(
                r.body["tools"][0]["input_schema"]["required"][0],
                "location"
            );
            let turns = r.body["messages"].as_array().unwrap();
            assert_eq!(turns.len(), 3);
            assert_eq!(
                turns[1]["content"].as_array().unwrap().last().unwrap()["type"],
                "tool_use"
            );
            assert_eq!(turns[2]["content"][0]["type"], "tool_result");
            assert_eq!(turns[2]["content"][0]["tool_use_id"], call_id);
        }
        ProviderKind::Gemini => {
            let contents = r.body["contents"].as_array().unwrap();
            assert_eq!(contents[1]["role"], "model");
            assert_eq!(
                contents[1]["parts"][0]["thoughtSignature"],
                fixtures::THOUGHT_SIGNATURE,
                "the thought signature went back with the call"
            );
            assert_eq!(
                contents[2]["parts"][0]["functionResponse"]["name"],
                "get_weather"
            );
        }
        _ => {
            // Passed through: the tool message is exactly what the caller sent.
            assert_eq!(r.body["messages"][2]["tool_call_id"], call_id);
            assert_eq!(r.body["tools"], weather_tools());
        }
    }
}

async fn streamed_tool_call(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let mut req = request(
        Behaviour::Tools.model(),
        json!({
            "messages": [{ "role": "user", "content": "What's the weather in Paris?" }],
            "tools": weather_tools(),
        }),
    );
    req.body.insert("stream".into(), json!(true));
    let c = collect(p.chat_stream(&creds(), req).await.unwrap()).await;
    assert!(c.error.is_none(), "{:?}", c.error);
    let calls = c.tool_calls();
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].0.is_empty(), "the call has an id");
    assert_eq!(calls[0].1, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].2).unwrap();
    assert_eq!(args, json!({ "location": fixtures::TOOL_ARGUMENT }));
    assert_eq!(c.finish_reasons(), vec!["tool_calls"]);
    assert_eq!(c.usages.len(), 1);
}

async fn rate_limited_with_retry_after(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::RateLimited))
        .await
        .unwrap_err();
    let ProviderError::RateLimited {
        retry_after_secs,
        limits,
        message,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert!(!message.is_empty());
    if kind == ProviderKind::Gemini {
        // From RetryInfo and QuotaFailure in the body.
        assert_eq!(*retry_after_secs, Some(fixtures::GEMINI_RETRY_DELAY_SECS));
        assert_eq!(
            limit_triples(limits),
            vec![
                (Period::Minute, "requests", 10),
                (Period::Minute, "input-tokens", 250_000),
                (Period::Day, "requests", 250),
            ]
        );
    } else {
        assert_eq!(*retry_after_secs, Some(fixtures::RETRY_AFTER_SECS));
        assert_eq!(limit_triples(limits), expected_limits(kind));
        assert!(limits.iter().all(|l| l.remaining == Some(0)));
    }
    // Streams fail the same way, before any item.
    let mut req = simple(Behaviour::RateLimited);
    req.body.insert("stream".into(), json!(true));
    let e = p.chat_stream(&creds(), req).await.err().unwrap();
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e:?}");
}

async fn rate_limited_with_http_date(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::RateLimitedDate))
        .await
        .unwrap_err();
    let ProviderError::RateLimited {
        retry_after_secs, ..
    } = e
    else {
        panic!("{e:?}");
    };
    let secs = retry_after_secs.expect("a Retry-After date becomes seconds");
    assert!((25..=30).contains(&secs), "{secs}");
}

async fn unauthorized_without_the_key(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::Unauthorized))
        .await
        .unwrap_err();
    let ProviderError::Unauthorized { status, message } = &e else {
        panic!("{e:?}");
    };
    // Gemini rejects a bad key with 400 API_KEY_INVALID.
    let expected = if kind == ProviderKind::Gemini {
        400
    } else {
        401
    };
    assert_eq!(*status, expected);
    assert!(!message.is_empty());
    assert_error_has_no_key(&e);
}

async fn echoed_key_is_scrubbed(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::EchoKey))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().len() > 10);
    let ProviderError::Unauthorized { message, .. } = &e else {
        unreachable!()
    };
    assert!(message.contains("[REDACTED]"), "{message}");
    assert_error_has_no_key(&e);
    // The same through a stream start.
    let mut req = simple(Behaviour::EchoKey);
    req.body.insert("stream".into(), json!(true));
    let e = p.chat_stream(&creds(), req).await.err().unwrap();
    assert_error_has_no_key(&e);
}

async fn server_error_is_upstream(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::ServerError))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ProviderError::Upstream { status: 500, .. }),
        "{e:?}"
    );
    let e = p
        .chat(&creds(), simple(Behaviour::Overloaded))
        .await
        .unwrap_err();
    let expected = if kind == ProviderKind::Anthropic {
        529
    } else {
        503
    };
    assert!(
        matches!(e, ProviderError::Upstream { status, .. } if status == expected),
        "{e:?}"
    );
}

async fn bad_request_keeps_the_providers_message(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::BadRequest))
        .await
        .unwrap_err();
    let ProviderError::BadRequest {
        status,
        message,
        param,
        ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(*status, 400);
    assert!(message.contains("temperature"), "{message}");
    if matches!(
        kind,
        ProviderKind::OpenAi | ProviderKind::Groq | ProviderKind::Perplexity
    ) {
        assert_eq!(param.as_deref(), Some("temperature"));
    }
}

async fn timeout(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let started = std::time::Instant::now();
    let e = p
        .chat(&creds(), simple(Behaviour::Timeout))
        .await
        .unwrap_err();
    assert_eq!(e, ProviderError::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn stream_start_timeout(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let mut req = simple(Behaviour::Timeout);
    req.body.insert("stream".into(), json!(true));
    let e = p.chat_stream(&creds(), req).await.err().unwrap();
    assert_eq!(e, ProviderError::Timeout);
}

fn streamed(b: Behaviour) -> ChatRequest {
    let mut req = simple(b);
    req.body.insert("stream".into(), json!(true));
    req
}

async fn stalled_stream_times_out(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let c = collect(
        p.chat_stream(&creds(), streamed(Behaviour::Stall))
            .await
            .unwrap(),
    )
    .await;
    assert!(!c.chunks.is_empty(), "the first events arrived");
    assert_eq!(c.error, Some(ProviderError::Timeout));
    assert!(c.usages.is_empty());
}

async fn cut_stream_ends_with_an_error(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let c = collect(
        p.chat_stream(&creds(), streamed(Behaviour::Cut))
            .await
            .unwrap(),
    )
    .await;
    assert!(!c.chunks.is_empty(), "the first events arrived");
    assert!(
        matches!(c.error, Some(ProviderError::Malformed(_))),
        "{:?}",
        c.error
    );
    assert!(c.usages.is_empty(), "a cut stream has no final usage");
    if matches!(kind, ProviderKind::OpenAi | ProviderKind::Groq) {
        // Everything but [DONE]: still a cut stream.
        let c = collect(
            p.chat_stream(&creds(), streamed(Behaviour::NoDone))
                .await
                .unwrap(),
        )
        .await;
        assert!(
            matches!(c.error, Some(ProviderError::Malformed(_))),
            "{:?}",
            c.error
        );
    }
}

async fn reset_stream_ends_with_an_error(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let c = collect(
        p.chat_stream(&creds(), streamed(Behaviour::Reset))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(
            c.error,
            Some(ProviderError::Network(_) | ProviderError::Malformed(_))
        ),
        "{:?}",
        c.error
    );
    assert!(c.usages.is_empty());
}

async fn malformed_json(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p
        .chat(&creds(), simple(Behaviour::Malformed))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Malformed(_)), "{e:?}");
}

async fn malformed_stream_event(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let c = collect(
        p.chat_stream(&creds(), streamed(Behaviour::Malformed))
            .await
            .unwrap(),
    )
    .await;
    assert!(!c.chunks.is_empty());
    assert!(
        matches!(c.error, Some(ProviderError::Malformed(_))),
        "{:?}",
        c.error
    );
}

async fn error_event_mid_stream(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let c = collect(
        p.chat_stream(&creds(), streamed(Behaviour::StreamError))
            .await
            .unwrap(),
    )
    .await;
    assert!(!c.chunks.is_empty());
    let expected = match kind {
        ProviderKind::Anthropic => 529,
        ProviderKind::Gemini => 503,
        _ => 500,
    };
    assert!(
        matches!(c.error, Some(ProviderError::Upstream { status, .. }) if status == expected),
        "{:?}",
        c.error
    );
}

async fn oversized_response(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let e = p.chat(&creds(), simple(Behaviour::Big)).await.unwrap_err();
    let ProviderError::Malformed(m) = &e else {
        panic!("{e:?}");
    };
    assert!(m.contains("larger than"), "{m}");
}

async fn probe(kind: ProviderKind) {
    let (stub, p) = setup(kind).await;
    let probe = p.probe(&creds(), None).await.unwrap();
    let expected_call = match kind {
        ProviderKind::OpenAi => "GET /v1/models",
        ProviderKind::Groq => "GET /openai/v1/models",
        ProviderKind::Anthropic => "GET /v1/models",
        ProviderKind::Gemini => "GET /v1beta/models",
        ProviderKind::Perplexity => "POST /chat/completions",
        _ => unreachable!(),
    };
    assert_eq!(probe.call, expected_call);
    assert_eq!(limit_triples(&probe.limits), expected_limits(kind));
    let r = stub.last_request().unwrap();
    if kind == ProviderKind::Perplexity {
        assert_eq!(r.body["model"], "sonar");
        assert_eq!(r.body["max_tokens"], 1);
    }
}

async fn probe_with_a_rejected_key(kind: ProviderKind) {
    let (_stub, p) = setup(kind).await;
    let bad = "invalid-Kx93hfP2mQ7rT5vW";
    let e = p
        .probe(&Credentials::ApiKey(SecretString::from(bad)), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }), "{e:?}");
    assert!(!e.to_string().contains(bad) && !format!("{e:?}").contains(bad));
}

// ---------------------------------------------------------------------------------------
// Provider-specific behaviour
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn openai_compatible_fields_pass_through_unchanged() {
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Groq,
        ProviderKind::Perplexity,
    ] {
        let (stub, p) = setup(kind).await;
        let extra = json!({
            "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": { "type": "object" } } },
            "logprobs": true,
            "top_logprobs": 2,
            "seed": 42,
            "search_domain_filter": ["example.com"],
            "some_future_field": { "nested": [1, 2, 3] },
        });
        let mut req = simple(Behaviour::Ok);
        for (k, v) in extra.as_object().unwrap() {
            req.body.insert(k.clone(), v.clone());
        }
        let done = p.chat(&creds(), req).await.unwrap();
        let r = stub.last_request().unwrap();
        for (k, v) in extra.as_object().unwrap() {
            assert_eq!(&r.body[k], v, "{kind}: {k} passed through");
        }
        match kind {
            ProviderKind::Perplexity => {
                assert!(done.body["citations"].is_array());
                assert!(done.body["search_results"].is_array());
            }
            ProviderKind::Groq => assert_eq!(done.body["x_groq"]["id"], "req_stub"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn anthropic_cache_usage_and_cache_control() {
    let (stub, p) = setup(ProviderKind::Anthropic).await;
    let cache = json!({ "type": "ephemeral" });
    let req = request(
        Behaviour::Cache.model(),
        json!({
            "messages": [
                { "role": "system", "content": [{ "type": "text", "text": "A long, cached preamble.", "cache_control": cache }] },
                { "role": "user", "content": [{ "type": "text", "text": "Hi there", "cache_control": cache }] },
            ],
            "thinking": { "type": "enabled", "budget_tokens": 1024 },
            "top_k": 5,
        }),
    );
    let done = p.chat(&creds(), req.clone()).await.unwrap();
    let u = done.usage.unwrap();
    assert_eq!(u.cached_tokens, fixtures::CACHE_READ_TOKENS);
    assert_eq!(u.cache_creation_tokens, fixtures::CACHE_CREATION_TOKENS);
    let plain_input =
        u.prompt_tokens - fixtures::CACHE_READ_TOKENS - fixtures::CACHE_CREATION_TOKENS;
    assert!(
        plain_input > 0,
        "prompt = input + cache reads + cache writes"
    );
    assert_eq!(
        done.body["usage"]["prompt_tokens_details"]["cached_tokens"],
        fixtures::CACHE_READ_TOKENS
    );
    let r = stub.last_request().unwrap();
    assert_eq!(
        r.body["system"][0]["cache_control"], cache,
        "cache_control reached Anthropic"
    );
    assert_eq!(r.body["messages"][0]["content"][0]["cache_control"], cache);
    assert_eq!(r.body["thinking"]["budget_tokens"], 1024);
    assert_eq!(r.body["top_k"], 5);

    let mut streamed = req;
    streamed.body.insert("stream".into(), json!(true));
    let c = collect(p.chat_stream(&creds(), streamed).await.unwrap()).await;
    assert!(c.error.is_none());
    assert_eq!(
        c.usages,
        vec![u],
        "the stream counts the cache the same way"
    );
}

#[tokio::test]
async fn gemini_cache_and_thinking_usage() {
    let (_stub, p) = setup(ProviderKind::Gemini).await;
    let done = p.chat(&creds(), simple(Behaviour::Cache)).await.unwrap();
    let u = done.usage.unwrap();
    assert_eq!(u.cached_tokens, fixtures::CACHE_READ_TOKENS);
    assert!(
        u.prompt_tokens > fixtures::CACHE_READ_TOKENS,
        "cached tokens are part of the prompt"
    );
    let text = done.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    let answer_words = text.split_whitespace().count() as u64;
    assert_eq!(
        u.completion_tokens,
        answer_words + fixtures::GEMINI_THOUGHTS_TOKENS
    );
}

#[tokio::test]
async fn stop_sequence_reaches_anthropic_and_maps_back() {
    let (stub, p) = setup(ProviderKind::Anthropic).await;
    let mut req = simple(Behaviour::Ok);
    req.body.insert("stop".into(), json!("END"));
    req.body.insert("max_completion_tokens".into(), json!(77));
    let done = p.chat(&creds(), req).await.unwrap();
    assert_eq!(done.body["choices"][0]["finish_reason"], "stop");
    let r = stub.last_request().unwrap();
    assert_eq!(r.body["stop_sequences"], json!(["END"]));
    assert_eq!(r.body["max_tokens"], 77);
}

#[tokio::test]
async fn bedrock_kinds_have_no_api_key_adapter() {
    let opts = options();
    let set = ProviderSet::new(
        http_client(&opts).unwrap(),
        ProviderEndpoints::default(),
        opts,
    );
    assert!(set.get(ProviderKind::AwsBedrock).is_none());
    assert!(set.get(ProviderKind::AwsBedrockInvoke).is_none());
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Groq,
        ProviderKind::Perplexity,
    ] {
        assert!(set.get(kind).is_some());
    }
}

#[test]
fn default_endpoints_are_the_sdk_base_urls() {
    let e = ProviderEndpoints::default();
    assert_eq!(e.openai, "https://api.openai.com/v1");
    assert_eq!(e.anthropic, "https://api.anthropic.com");
    assert_eq!(e.gemini, "https://generativelanguage.googleapis.com");
    assert_eq!(e.groq, "https://api.groq.com/openai/v1");
    assert_eq!(e.perplexity, "https://api.perplexity.ai");
    assert!(e.validate().is_ok());
    let mut bad = e.clone();
    bad.set(ProviderKind::Groq, "ftp://example.com");
    assert!(bad.validate().is_err());
    let mut bad = e;
    bad.set(ProviderKind::OpenAi, "https://user:pw@example.com/v1");
    assert!(bad.validate().is_err());
}

#[tokio::test]
async fn unreachable_provider_is_a_network_error() {
    // A port that was just free: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut endpoints = ProviderEndpoints::default();
    endpoints.set(ProviderKind::OpenAi, format!("http://{addr}/v1"));
    let opts = options();
    let set = ProviderSet::new(http_client(&opts).unwrap(), endpoints, opts);
    let p = set.get(ProviderKind::OpenAi).unwrap();
    let e = p.chat(&creds(), simple(Behaviour::Ok)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Network(_)), "{e:?}");
    assert_error_has_no_key(&e);
}

#[tokio::test]
async fn aws_credentials_are_refused_without_a_call() {
    let (stub, p) = setup(ProviderKind::OpenAi).await;
    let aws = Credentials::Aws {
        config: vmx_domain::connection::AwsConfig {
            region: "us-east-1".into(),
            iam_role_arn: "arn:aws:iam::123456789012:role/x".into(),
            external_id: "x".into(),
            performance_config: None,
            guardrail_config: None,
        },
    };
    let e = p.chat(&aws, simple(Behaviour::Ok)).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unauthorized { .. }));
    assert!(stub.requests().is_empty());
}
