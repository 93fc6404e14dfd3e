//! The Anthropic Messages API wire format.

use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Behaviour, Ctx, End, big_text, echo_key_message, fixtures, hang, masked, pieces, raw, respond,
    retry_after_header, sse, words,
};

fn error(status: u16, headers: &[(String, String)], ty: &str, message: &str) -> Response {
    respond(
        status,
        headers,
        json!({ "type": "error", "error": { "type": ty, "message": message }, "request_id": "req_stub" }),
    )
}

fn limit_headers(exhausted: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (metric, limit) in [
        ("requests", 50u64),
        ("tokens", 90_000),
        ("input-tokens", 40_000),
        ("output-tokens", 8000),
    ] {
        let remaining = if exhausted { 0 } else { limit - 1 };
        out.push((
            format!("anthropic-ratelimit-{metric}-limit"),
            limit.to_string(),
        ));
        out.push((
            format!("anthropic-ratelimit-{metric}-remaining"),
            remaining.to_string(),
        ));
        out.push((
            format!("anthropic-ratelimit-{metric}-reset"),
            "2030-01-01T00:00:30Z".to_owned(),
        ));
    }
    out
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let key = ctx.header("x-api-key").unwrap_or("").to_owned();
    if key.is_empty() || key.starts_with("invalid") {
        return error(401, &[], "authentication_error", "invalid x-api-key");
    }
    if ctx.header("anthropic-version").is_none() {
        return error(
            400,
            &[],
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    match (ctx.method.as_str(), ctx.path.as_str()) {
        ("GET", "/v1/models") => respond(
            200,
            &limit_headers(false),
            json!({
                "data": [{ "type": "model", "id": "stub-ok", "display_name": "Stub", "created_at": "2025-01-01T00:00:00Z" }],
                "has_more": false, "first_id": "stub-ok", "last_id": "stub-ok",
            }),
        ),
        ("POST", "/v1/messages") => messages(&ctx, &key).await,
        _ => error(404, &[], "not_found_error", "Not found"),
    }
}

/// Refuses what the Messages API refuses (a subset).
fn validate(body: &Value) -> Result<(), String> {
    if !body.get("model").is_some_and(Value::is_string) {
        return Err("model: Field required".into());
    }
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err("max_tokens: Field required".into());
    }
    match body.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            if blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) != Some("text"))
            {
                return Err("system: only text blocks are allowed".into());
            }
        }
        Some(_) => return Err("system: Input should be a valid string or list".into()),
    }
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("messages: Field required".into());
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut previous_role = "";
    let mut open_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        // The stub is stricter than the API (which merges consecutive turns) so that tests
        // see the adapter alternate them itself.
        if role == previous_role {
            return Err(format!(
                "messages.{i}: roles must alternate between user and assistant"
            ));
        }
        previous_role = role;
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) if !s.is_empty() => vec![json!({ "type": "text", "text": s })],
            Some(Value::Array(b)) if !b.is_empty() => b.clone(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: must be a non-empty string or list"
                ));
            }
        };
        let mut seen_other = false;
        for (j, b) in blocks.iter().enumerate() {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if b.get("text")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(format!(
                            "messages.{i}.content.{j}.text: text content blocks must be non-empty"
                        ));
                    }
                    seen_other = true;
                }
                Some("image" | "document") => {
                    if role != "user" {
                        return Err(format!(
                            "messages.{i}.content.{j}: media only in user turns"
                        ));
                    }
                    let source_type = b.pointer("/source/type").and_then(Value::as_str);
                    if !matches!(source_type, Some("base64" | "url")) {
                        return Err(format!("messages.{i}.content.{j}.source: invalid source"));
                    }
                    seen_other = true;
                }
                Some("tool_use") => {
                    if role != "assistant" {
                        return Err(format!(
                            "messages.{i}.content.{j}: tool_use only in assistant turns"
                        ));
                    }
                    if !b.get("input").is_some_and(Value::is_object) {
                        return Err(format!("messages.{i}.content.{j}.input: must be an object"));
                    }
                }
                Some("tool_result") => {
                    if role != "user" || seen_other {
                        return Err(format!(
                            "messages.{i}.content.{j}: tool_result blocks must come first in a user turn"
                        ));
                    }
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    if !open_tool_uses.iter().any(|t| t == id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                }
                Some("thinking" | "redacted_thinking" | "search_result") => seen_other = true,
                other => {
                    return Err(format!(
                        "messages.{i}.content.{j}.type: unknown block type {other:?}"
                    ));
                }
            }
        }
        open_tool_uses = if role == "assistant" {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                .filter_map(|b| b.get("id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        } else {
            Vec::new()
        };
    }
    Ok(())
}

fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b.get("text").and_then(Value::as_str).map(str::to_owned),
                Some("tool_result") => Some(text_of(b.get("content"))),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn messages(ctx: &Ctx, key: &str) -> Response {
    let body = &ctx.body;
    if let Err(message) = validate(body) {
        return error(400, &[], "invalid_request_error", &message);
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let behaviour = ctx.behaviour(model);
    let limits = limit_headers(false);
    match behaviour {
        Behaviour::RateLimited | Behaviour::RateLimitedDate => {
            let mut headers = limit_headers(true);
            headers.push(retry_after_header(behaviour));
            return error(
                429,
                &headers,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute.",
            );
        }
        Behaviour::Unauthorized => {
            return error(
                401,
                &[],
                "authentication_error",
                &format!("invalid x-api-key {}", masked(key)),
            );
        }
        Behaviour::EchoKey => {
            return error(401, &[], "authentication_error", &echo_key_message(key));
        }
        Behaviour::BadRequest => {
            return error(
                400,
                &[],
                "invalid_request_error",
                "temperature: Input should be less than or equal to 1",
            );
        }
        Behaviour::ServerError => {
            return error(500, &[], "api_error", "Internal server error");
        }
        Behaviour::Overloaded => {
            return error(529, &[], "overloaded_error", "Overloaded");
        }
        Behaviour::Timeout => hang().await,
        _ => {}
    }

    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_is_tool_result = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|b| {
            b.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    let mut input = 3
        + words(&text_of(body.get("system")))
        + messages
            .iter()
            .map(|m| words(&text_of(m.get("content"))))
            .sum::<u64>();
    let (cache_read, cache_creation) = if behaviour == Behaviour::Cache {
        (fixtures::CACHE_READ_TOKENS, fixtures::CACHE_CREATION_TOKENS)
    } else {
        (0, 0)
    };
    input = input.max(1);
    let tool = body
        .pointer("/tools/0")
        .filter(|_| behaviour == Behaviour::Tools && !last_is_tool_result);
    let (content, stop_reason) = if last_is_tool_result {
        (
            vec![
                json!({ "type": "text", "text": format!("The tool said: {}", text_of(last.get("content"))) }),
            ],
            "end_turn",
        )
    } else if let Some(tool) = tool {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("tool");
        let arg = tool
            .pointer("/input_schema/properties")
            .and_then(Value::as_object)
            .and_then(|p| p.keys().next().cloned())
            .unwrap_or_else(|| "location".into());
        (
            vec![
                json!({ "type": "text", "text": "Let me check." }),
                json!({ "type": "tool_use", "id": "toolu_stub_1", "name": name, "input": { arg: fixtures::TOOL_ARGUMENT } }),
            ],
            "tool_use",
        )
    } else if behaviour == Behaviour::Big {
        (
            vec![json!({ "type": "text", "text": big_text() })],
            "end_turn",
        )
    } else {
        let user = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| text_of(m.get("content")))
            .unwrap_or_default();
        let stop = body
            .pointer("/stop_sequences/0")
            .map_or("end_turn", |_| "stop_sequence");
        (
            vec![json!({ "type": "text", "text": format!("Hello! You said: {user}") })],
            stop,
        )
    };
    let mut output = content
        .iter()
        .map(|b| b.get("text").and_then(Value::as_str).map_or(5, words))
        .sum::<u64>();
    if behaviour == Behaviour::MaxOutput {
        output = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    }
    let usage = json!({
        "input_tokens": input,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
    });

    if body.get("stream") == Some(&Value::Bool(true)) {
        return stream(model, behaviour, &content, stop_reason, &usage, &limits);
    }
    if behaviour == Behaviour::Malformed {
        return raw(
            200,
            &limits,
            "application/json",
            br#"{"id":"msg_stub","type":"message","content":[{"type":"te"#.to_vec(),
        );
    }
    respond(
        200,
        &limits,
        json!({
            "id": "msg_stub01",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        }),
    )
}

fn stream(
    model: &str,
    behaviour: Behaviour,
    content: &[Value],
    stop_reason: &str,
    usage: &Value,
    limits: &[(String, String)],
) -> Response {
    let frame = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let mut frames = vec![
        frame(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": "msg_stub01", "type": "message", "role": "assistant", "content": [],
                "model": model, "stop_reason": null, "stop_sequence": null, "usage": start_usage,
            }}),
        ),
        frame("ping", json!({ "type": "ping" })),
    ];
    for (index, block) in content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                frames.push(frame("content_block_start", json!({
                    "type": "content_block_start", "index": index,
                    "content_block": { "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} },
                })));
                let args = block["input"].to_string();
                let (head, tail) = args.split_at(args.len() / 2);
                for part in ["", head, tail] {
                    frames.push(frame(
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": { "type": "input_json_delta", "partial_json": part },
                        }),
                    ));
                }
            }
            _ => {
                frames.push(frame(
                    "content_block_start",
                    json!({
                        "type": "content_block_start", "index": index,
                        "content_block": { "type": "text", "text": "" },
                    }),
                ));
                for p in pieces(block.get("text").and_then(Value::as_str).unwrap_or("")) {
                    frames.push(frame(
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": { "type": "text_delta", "text": p },
                        }),
                    ));
                }
            }
        }
        frames.push(frame(
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    match behaviour {
        Behaviour::Cut => return sse(limits, frames, End::Clean),
        Behaviour::Reset => return sse(limits, frames, End::Reset),
        Behaviour::Stall => return sse(limits, frames, End::Stall),
        Behaviour::Malformed => {
            frames.push(
                "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"ind\n\n"
                    .into(),
            );
            return sse(limits, frames, End::Clean);
        }
        Behaviour::StreamError => {
            frames.push(frame("error", json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } })));
            return sse(limits, frames, End::Clean);
        }
        _ => {}
    }
    frames.push(frame(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": { "stop_reason": stop_reason, "stop_sequence": null },
            "usage": { "output_tokens": usage["output_tokens"] },
        }),
    ));
    frames.push(frame("message_stop", json!({ "type": "message_stop" })));
    sse(limits, frames, End::Clean)
}
