//! The OpenAI chat completions wire format, with Groq's and Perplexity's differences.

use axum::response::Response;
use serde_json::{Value, json};
use vmx_domain::provider::ProviderKind;

use super::{
    Behaviour, Ctx, End, big_text, content_text, echo_key_message, fixtures, hang, masked, now,
    pieces, raw, respond, retry_after_header, sse, words,
};

fn prefix(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "/v1",
        ProviderKind::Groq => "/openai/v1",
        _ => "",
    }
}

fn error(
    status: u16,
    headers: &[(String, String)],
    message: &str,
    ty: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    respond(
        status,
        headers,
        json!({ "error": { "message": message, "type": ty, "param": param, "code": code } }),
    )
}

fn limit_headers(kind: ProviderKind, exhausted: bool) -> Vec<(String, String)> {
    let (limits, reset): ([u64; 2], [&str; 2]) = match kind {
        ProviderKind::OpenAi => ([5000, 2_000_000], ["12ms", "1ms"]),
        // Groq: requests per DAY, tokens per minute.
        ProviderKind::Groq => ([14_400, 6000], ["2m59.56s", "7.66s"]),
        _ => return Vec::new(), // Perplexity documents none
    };
    let remaining = if exhausted {
        [0, 0]
    } else {
        [limits[0] - 1, limits[1] - 60]
    };
    let mut out = Vec::new();
    for (i, metric) in ["requests", "tokens"].into_iter().enumerate() {
        out.push((format!("x-ratelimit-limit-{metric}"), limits[i].to_string()));
        out.push((
            format!("x-ratelimit-remaining-{metric}"),
            remaining[i].to_string(),
        ));
        out.push((format!("x-ratelimit-reset-{metric}"), reset[i].to_owned()));
    }
    out
}

pub(crate) async fn handle(kind: ProviderKind, ctx: Ctx) -> Response {
    let Some(path) = ctx.path.strip_prefix(prefix(kind)) else {
        return error(404, &[], "Not found", "invalid_request_error", None, None);
    };
    let key = ctx
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    if key.is_empty() {
        return error(
            401,
            &[],
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.",
            "invalid_request_error",
            None,
            None,
        );
    }
    if key.starts_with("invalid") {
        return error(
            401,
            &[],
            &format!("Incorrect API key provided: {key}."),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        );
    }
    match (ctx.method.as_str(), path) {
        ("GET", "/models") if kind != ProviderKind::Perplexity => respond(
            200,
            &limit_headers(kind, false),
            json!({
                "object": "list",
                "data": [{ "id": "stub-ok", "object": "model", "created": 1_700_000_000, "owned_by": "stub" }],
            }),
        ),
        ("POST", "/chat/completions") => chat(kind, &ctx, &key).await,
        _ => error(
            404,
            &[],
            &format!("Unknown request URL: {} {}", ctx.method, ctx.path),
            "invalid_request_error",
            None,
            Some("unknown_url"),
        ),
    }
}

/// Refuses what the real API refuses (a subset).
fn validate(kind: ProviderKind, body: &Value) -> Result<(), String> {
    if !body.get("model").is_some_and(Value::is_string) {
        return Err("you must provide a model parameter".into());
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("'messages' is a required property".into());
    };
    if messages.is_empty() {
        return Err("'messages' must contain at least one message".into());
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer" | "user") => open_calls.clear(),
            Some("assistant") => {
                open_calls = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Some("tool") => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                if !open_calls.iter().any(|c| c == id) {
                    return Err(format!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
                    ));
                }
            }
            _ => return Err(format!("messages[{i}].role is invalid")),
        }
    }
    if kind == ProviderKind::Perplexity && body.get("stream_options").is_some() {
        return Err("Unrecognized request argument supplied: stream_options".into());
    }
    Ok(())
}

struct Answer {
    text: Option<String>,
    tool: Option<(String, String)>,
    prompt: u64,
    completion: u64,
    cached: u64,
}

fn answer(body: &Value, behaviour: Behaviour) -> Answer {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut prompt = 3 + messages
        .iter()
        .map(|m| words(&content_text(m.get("content"))))
        .sum::<u64>();
    let cached = if behaviour == Behaviour::Cache {
        prompt += fixtures::CACHE_READ_TOKENS;
        fixtures::CACHE_READ_TOKENS
    } else {
        0
    };
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let first_tool = body.pointer("/tools/0/function").cloned();
    let (text, tool) = if last.get("role").and_then(Value::as_str) == Some("tool") {
        (
            Some(format!(
                "The tool said: {}",
                content_text(last.get("content"))
            )),
            None,
        )
    } else if behaviour == Behaviour::Tools
        && let Some(f) = first_tool
    {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        let arg = f
            .pointer("/parameters/properties")
            .and_then(Value::as_object)
            .and_then(|p| p.keys().next().cloned())
            .unwrap_or_else(|| "location".into());
        let args = json!({ arg: fixtures::TOOL_ARGUMENT }).to_string();
        (None, Some((name, args)))
    } else if behaviour == Behaviour::Big {
        (Some(big_text()), None)
    } else {
        let user = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| content_text(m.get("content")))
            .unwrap_or_default();
        (Some(format!("Hello! You said: {user}")), None)
    };
    let mut completion = text.as_deref().map_or(5, words);
    if behaviour == Behaviour::MaxOutput {
        let max = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .unwrap_or(fixtures::PROVIDER_DEFAULT_OUTPUT);
        completion = max * body.get("n").and_then(Value::as_u64).unwrap_or(1);
    }
    Answer {
        text,
        tool,
        prompt,
        completion,
        cached,
    }
}

fn usage(a: &Answer, kind: ProviderKind) -> Value {
    let mut u = json!({
        "prompt_tokens": a.prompt,
        "completion_tokens": a.completion,
        "total_tokens": a.prompt + a.completion,
        "prompt_tokens_details": { "cached_tokens": a.cached },
        "completion_tokens_details": { "reasoning_tokens": 0 },
    });
    match kind {
        ProviderKind::Groq => {
            u["queue_time"] = json!(0.01);
            u["prompt_time"] = json!(0.002);
            u["completion_time"] = json!(0.02);
            u["total_time"] = json!(0.022);
        }
        ProviderKind::Perplexity => {
            u = json!({
                "prompt_tokens": a.prompt,
                "completion_tokens": a.completion,
                "total_tokens": a.prompt + a.completion,
                "search_context_size": "low",
                "cost": { "total_cost": 0.005 },
            });
        }
        _ => {}
    }
    u
}

fn citations() -> (Value, Value) {
    (
        json!(["https://example.com/stub-source"]),
        json!([{ "title": "Stub source", "url": "https://example.com/stub-source", "date": "2025-01-01" }]),
    )
}

async fn chat(kind: ProviderKind, ctx: &Ctx, key: &str) -> Response {
    let body = &ctx.body;
    if let Err(message) = validate(kind, body) {
        return error(
            400,
            &[],
            &message,
            "invalid_request_error",
            Some("messages"),
            None,
        );
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let behaviour = ctx.behaviour(model);
    let limits = limit_headers(kind, false);
    match behaviour {
        Behaviour::RateLimited | Behaviour::RateLimitedDate => {
            let mut headers = limit_headers(kind, true);
            headers.push(retry_after_header(behaviour));
            return error(
                429,
                &headers,
                "Rate limit reached for requests per min (RPM): Limit 5000, Used 5000, Requested 1. Please try again in 7s.",
                "requests",
                None,
                Some("rate_limit_exceeded"),
            );
        }
        Behaviour::Unauthorized => {
            return error(
                401,
                &[],
                &format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    masked(key)
                ),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            );
        }
        Behaviour::EchoKey => {
            return error(
                401,
                &[],
                &echo_key_message(key),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            );
        }
        Behaviour::BadRequest => {
            return error(
                400,
                &[],
                "Invalid value for 'temperature': expected a number between 0 and 2.",
                "invalid_request_error",
                Some("temperature"),
                Some("invalid_value"),
            );
        }
        Behaviour::ServerError => {
            return error(
                500,
                &[],
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            );
        }
        Behaviour::Overloaded => {
            return error(
                503,
                &[],
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
                None,
            );
        }
        Behaviour::Timeout => hang().await,
        _ => {}
    }
    let a = answer(body, behaviour);
    if body.get("stream") == Some(&Value::Bool(true)) {
        return stream(kind, body, behaviour, &a, &limits);
    }
    if behaviour == Behaviour::Malformed {
        return raw(
            200,
            &limits,
            "application/json",
            br#"{"id": "chatcmpl-stub", "object": "chat.completion", "choices": [{"index": 0, "mess"#
                .to_vec(),
        );
    }
    let mut message = json!({ "role": "assistant", "content": a.text, "refusal": null });
    let finish = if let Some((name, args)) = &a.tool {
        message["tool_calls"] = json!([{
            "id": "call_stub_1",
            "type": "function",
            "function": { "name": name, "arguments": args },
        }]);
        "tool_calls"
    } else {
        "stop"
    };
    let mut resp = json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage(&a, kind),
    });
    match kind {
        ProviderKind::Groq => resp["x_groq"] = json!({ "id": "req_stub" }),
        ProviderKind::Perplexity => {
            let (c, s) = citations();
            resp["citations"] = c;
            resp["search_results"] = s;
        }
        _ => {}
    }
    respond(200, &limits, resp)
}

fn stream(
    kind: ProviderKind,
    body: &Value,
    behaviour: Behaviour,
    a: &Answer,
    limits: &[(String, String)],
) -> Response {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let include_usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let created = now();
    let usage = usage(a, kind);
    let base = |choices: Value| {
        let mut c = json!({
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_stub",
            "choices": choices,
        });
        match kind {
            ProviderKind::Perplexity => {
                // Perplexity puts usage, citations and search results on its chunks.
                let (cit, sr) = citations();
                c["usage"] = usage.clone();
                c["citations"] = cit;
                c["search_results"] = sr;
            }
            _ if include_usage => c["usage"] = Value::Null,
            _ => {}
        }
        c
    };
    let choice = |delta: Value, finish: Option<&str>| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let frame = |v: Value| format!("data: {v}\n\n");

    let mut frames = vec![frame(base(choice(
        json!({ "role": "assistant", "content": "" }),
        None,
    )))];
    let finish = if let Some((name, args)) = &a.tool {
        frames.push(frame(base(choice(
            json!({ "tool_calls": [{ "index": 0, "id": "call_stub_1", "type": "function", "function": { "name": name, "arguments": "" } }] }),
            None,
        ))));
        let (head, tail) = args.split_at(args.len() / 2);
        for part in [head, tail] {
            frames.push(frame(base(choice(
                json!({ "tool_calls": [{ "index": 0, "function": { "arguments": part } }] }),
                None,
            ))));
        }
        "tool_calls"
    } else {
        for p in pieces(a.text.as_deref().unwrap_or("")) {
            frames.push(frame(base(choice(json!({ "content": p }), None))));
        }
        "stop"
    };
    match behaviour {
        Behaviour::Cut => return sse(limits, frames, End::Clean),
        Behaviour::Reset => return sse(limits, frames, End::Reset),
        Behaviour::Stall => return sse(limits, frames, End::Stall),
        Behaviour::Malformed => {
            frames.push("data: {\"id\": \"chatcmpl-stub\", \"choices\": [\n\n".into());
            return sse(limits, frames, End::Clean);
        }
        Behaviour::StreamError => {
            frames.push(frame(json!({ "error": { "message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null } })));
            return sse(limits, frames, End::Clean);
        }
        _ => {}
    }
    let mut last = base(choice(json!({}), Some(finish)));
    if kind == ProviderKind::Groq {
        last["x_groq"] = json!({ "id": "req_stub", "usage": usage });
    }
    frames.push(frame(last));
    if include_usage && kind != ProviderKind::Perplexity {
        let mut u = base(json!([]));
        u["usage"] = usage.clone();
        frames.push(frame(u));
    }
    // Perplexity's streams have been seen to end without [DONE]; the stub does the same.
    if kind != ProviderKind::Perplexity && behaviour != Behaviour::NoDone {
        frames.push("data: [DONE]\n\n".into());
    }
    sse(limits, frames, End::Clean)
}
