//! The Gemini native API wire format (`generateContent`, `streamGenerateContent?alt=sse`).

use axum::response::Response;
use serde_json::{Value, json};

use super::{
    Behaviour, Ctx, End, big_text, echo_key_message, fixtures, hang, pieces, raw, respond,
    retry_after_header, sse, words,
};

fn error(
    status: u16,
    headers: &[(String, String)],
    code_status: &str,
    message: &str,
    details: Value,
) -> Response {
    respond(
        status,
        headers,
        json!({ "error": { "code": status, "message": message, "status": code_status, "details": details } }),
    )
}

fn key_invalid(message: &str) -> Response {
    error(
        400,
        &[],
        "INVALID_ARGUMENT",
        message,
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": { "service": "generativelanguage.googleapis.com" },
        }]),
    )
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    if ctx
        .query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
    {
        return error(
            400,
            &[],
            "INVALID_ARGUMENT",
            "stub: the API key must travel in the x-goog-api-key header, never in the URL",
            json!([]),
        );
    }
    let key = ctx.header("x-goog-api-key").unwrap_or("").to_owned();
    if key.is_empty() {
        return error(
            403,
            &[],
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            json!([]),
        );
    }
    if key.starts_with("invalid") {
        return key_invalid("API key not valid. Please pass a valid API key.");
    }
    if ctx.method == "GET" && ctx.path == "/v1beta/models" {
        return respond(
            200,
            &[],
            json!({ "models": [{ "name": "models/stub-ok", "displayName": "Stub", "supportedGenerationMethods": ["generateContent"] }] }),
        );
    }
    let Some(rest) = ctx.path.strip_prefix("/v1beta/models/") else {
        return error(404, &[], "NOT_FOUND", "Not found", json!([]));
    };
    let (model, stream) = match rest.rsplit_once(':') {
        Some((m, "generateContent")) if ctx.method == "POST" => (m.to_owned(), false),
        Some((m, "streamGenerateContent")) if ctx.method == "POST" => {
            if ctx.query.as_deref() != Some("alt=sse") {
                return error(
                    400,
                    &[],
                    "INVALID_ARGUMENT",
                    "stub: only alt=sse streams are served",
                    json!([]),
                );
            }
            (m.to_owned(), true)
        }
        _ => return error(404, &[], "NOT_FOUND", "Not found", json!([])),
    };
    generate(&ctx, &key, &model, stream).await
}

const TOP_LEVEL: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
    "labels",
];

const GENERATION_CONFIG: &[&str] = &[
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
];

/// Refuses what the API refuses (a subset): unknown fields, bad roles, function responses
/// without their call, function calls without their thought signature.
fn validate(body: &Value) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err("Invalid JSON payload received.".into());
    };
    for k in obj.keys() {
        if !TOP_LEVEL.contains(&k.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
            ));
        }
    }
    if let Some(gc) = obj.get("generationConfig") {
        let Some(gc) = gc.as_object() else {
            return Err("generation_config must be an object".into());
        };
        for k in gc.keys() {
            if !GENERATION_CONFIG.contains(&k.as_str()) {
                return Err(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\" at 'generation_config': Cannot find field."
                ));
            }
        }
    }
    if let Some(si) = obj.get("systemInstruction") {
        let ok = si.get("parts").and_then(Value::as_array).is_some_and(|p| {
            !p.is_empty()
                && p.iter()
                    .all(|p| p.get("text").is_some_and(Value::is_string))
        });
        if !ok {
            return Err("system_instruction: parts must be text".into());
        }
    }
    let Some(contents) = obj.get("contents").and_then(Value::as_array) else {
        return Err("* GenerateContentRequest.contents: contents is not specified".into());
    };
    if contents.is_empty() {
        return Err("* GenerateContentRequest.contents: contents is not specified".into());
    }
    let mut previous = "";
    let mut open_calls: Vec<String> = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "model" {
            return Err(format!(
                "contents[{i}].role: Please use a valid role: user, model."
            ));
        }
        if role == previous {
            return Err(format!(
                "contents[{i}]: roles must alternate (stub strictness)"
            ));
        }
        previous = role;
        let Some(parts) = c
            .get("parts")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
        else {
            return Err(format!("contents[{i}].parts: must not be empty"));
        };
        let mut calls = Vec::new();
        for (j, p) in parts.iter().enumerate() {
            if p.get("text").is_some_and(Value::is_string) {
                continue;
            }
            if let Some(d) = p.get("inlineData") {
                if !(d.get("mimeType").is_some_and(Value::is_string)
                    && d.get("data").is_some_and(Value::is_string))
                {
                    return Err(format!(
                        "contents[{i}].parts[{j}].inline_data: mime_type and data required"
                    ));
                }
                continue;
            }
            if let Some(d) = p.get("fileData") {
                if !d.get("fileUri").is_some_and(Value::is_string) {
                    return Err(format!(
                        "contents[{i}].parts[{j}].file_data: file_uri required"
                    ));
                }
                continue;
            }
            if let Some(fc) = p.get("functionCall") {
                if role != "model" || !fc.get("args").is_none_or(Value::is_object) {
                    return Err(format!("contents[{i}].parts[{j}].function_call: invalid"));
                }
                if p.get("thoughtSignature").and_then(Value::as_str)
                    != Some(fixtures::THOUGHT_SIGNATURE)
                {
                    return Err(format!(
                        "Function call is missing a thought_signature in functionCall parts. contents[{i}].parts[{j}]"
                    ));
                }
                calls.push(
                    fc.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                );
                continue;
            }
            if let Some(fr) = p.get("functionResponse") {
                let name = fr.get("name").and_then(Value::as_str).unwrap_or("");
                if role != "user"
                    || !open_calls.iter().any(|c| c == name)
                    || !fr.get("response").is_some_and(Value::is_object)
                {
                    return Err(format!(
                        "contents[{i}].parts[{j}]: a function response turn must come immediately after a function call turn, with an object response"
                    ));
                }
                continue;
            }
            return Err(format!("contents[{i}].parts[{j}]: unknown part"));
        }
        open_calls = calls;
    }
    Ok(())
}

fn text_of(parts: Option<&Value>) -> String {
    parts
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| {
                    p.get("text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| {
                            p.pointer("/functionResponse/response")
                                .map(Value::to_string)
                        })
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

async fn generate(ctx: &Ctx, key: &str, model: &str, stream: bool) -> Response {
    let body = &ctx.body;
    if let Err(message) = validate(body) {
        return error(400, &[], "INVALID_ARGUMENT", &message, json!([]));
    }
    let behaviour = ctx.behaviour(model);
    match behaviour {
        Behaviour::RateLimited | Behaviour::RateLimitedDate => {
            let headers = if behaviour == Behaviour::RateLimitedDate {
                vec![retry_after_header(behaviour)]
            } else {
                Vec::new()
            };
            return error(
                429,
                &headers,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                json!([
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                                "quotaDimensions": { "location": "global", "model": model },
                                "quotaValue": "10",
                            },
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count",
                                "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                                "quotaDimensions": { "location": "global", "model": model },
                                "quotaValue": "250000",
                            },
                            {
                                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                                "quotaDimensions": { "location": "global", "model": model },
                                "quotaValue": "250",
                            },
                        ],
                    },
                    { "@type": "type.googleapis.com/google.rpc.Help", "links": [{ "description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits" }] },
                    { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{}s", fixtures::GEMINI_RETRY_DELAY_SECS) },
                ]),
            );
        }
        Behaviour::Unauthorized => {
            return key_invalid("API key not valid. Please pass a valid API key.");
        }
        Behaviour::EchoKey => return key_invalid(&echo_key_message(key)),
        Behaviour::BadRequest => {
            return error(
                400,
                &[],
                "INVALID_ARGUMENT",
                "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
                json!([]),
            );
        }
        Behaviour::ServerError => {
            return error(
                500,
                &[],
                "INTERNAL",
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                json!([]),
            );
        }
        Behaviour::Overloaded => {
            return error(
                503,
                &[],
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            );
        }
        Behaviour::Timeout => hang().await,
        _ => {}
    }

    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = contents.last().cloned().unwrap_or(Value::Null);
    let last_is_function_response = last
        .get("parts")
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let mut prompt = 3
        + words(&text_of(body.pointer("/systemInstruction/parts")))
        + contents
            .iter()
            .map(|c| words(&text_of(c.get("parts"))))
            .sum::<u64>();
    let cached = if behaviour == Behaviour::Cache {
        prompt += fixtures::CACHE_READ_TOKENS;
        fixtures::CACHE_READ_TOKENS
    } else {
        0
    };
    let declaration = body
        .pointer("/tools/0/functionDeclarations/0")
        .filter(|_| behaviour == Behaviour::Tools && !last_is_function_response);
    let parts: Vec<Value> = if last_is_function_response {
        vec![json!({ "text": format!("The tool said: {}", text_of(last.get("parts"))) })]
    } else if let Some(d) = declaration {
        let name = d.get("name").and_then(Value::as_str).unwrap_or("tool");
        let arg = d
            .pointer("/parametersJsonSchema/properties")
            .and_then(Value::as_object)
            .and_then(|p| p.keys().next().cloned())
            .unwrap_or_else(|| "location".into());
        vec![json!({
            "functionCall": { "name": name, "args": { arg: fixtures::TOOL_ARGUMENT } },
            "thoughtSignature": fixtures::THOUGHT_SIGNATURE,
        })]
    } else if behaviour == Behaviour::Big {
        vec![json!({ "text": big_text() })]
    } else {
        let user = contents
            .iter()
            .rev()
            .find(|c| c.get("role").and_then(Value::as_str) == Some("user"))
            .map(|c| text_of(c.get("parts")))
            .unwrap_or_default();
        vec![json!({ "text": format!("Hello! You said: {user}") })]
    };
    let mut candidates_tokens = parts
        .iter()
        .map(|p| p.get("text").and_then(Value::as_str).map_or(5, words))
        .sum::<u64>();
    let thoughts = fixtures::GEMINI_THOUGHTS_TOKENS;
    if behaviour == Behaviour::MaxOutput {
        // Thinking counts against maxOutputTokens, per candidate.
        let config = body.get("generationConfig");
        let field = |k: &str| config.and_then(|c| c.get(k)).and_then(Value::as_u64);
        let max = field("maxOutputTokens").unwrap_or(fixtures::PROVIDER_DEFAULT_OUTPUT);
        candidates_tokens = (max * field("candidateCount").unwrap_or(1)).saturating_sub(thoughts);
    }
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt + candidates_tokens + thoughts,
        "thoughtsTokenCount": thoughts,
        "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt }],
    });
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    if stream {
        return stream_response(model, behaviour, &parts, &usage);
    }
    if behaviour == Behaviour::Malformed {
        return raw(
            200,
            &[],
            "application/json",
            br#"{"candidates": [{"content": {"parts": [{"te"#.to_vec(),
        );
    }
    respond(
        200,
        &[],
        json!({
            "candidates": [{
                "content": { "parts": parts, "role": "model" },
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "stub-response-1",
        }),
    )
}

fn stream_response(model: &str, behaviour: Behaviour, parts: &[Value], usage: &Value) -> Response {
    // Google frames its events with CRLF.
    let frame = |v: Value| format!("data: {v}\r\n\r\n");
    let partial_usage = json!({
        "promptTokenCount": usage["promptTokenCount"],
        "totalTokenCount": usage["promptTokenCount"],
    });
    let event = |parts: Value, finish: Option<&str>, usage: &Value| {
        let mut cand = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        frame(json!({
            "candidates": [cand],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "stub-response-1",
        }))
    };
    let mut frames = Vec::new();
    let is_call = parts.iter().any(|p| p.get("functionCall").is_some());
    if is_call {
        if matches!(
            behaviour,
            Behaviour::Cut | Behaviour::Reset | Behaviour::Stall
        ) {
            frames.push(event(
                json!([{ "text": "Let me check." }]),
                None,
                &partial_usage,
            ));
        } else {
            frames.push(event(Value::Array(parts.to_vec()), Some("STOP"), usage));
        }
    } else {
        let text = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("");
        let ps = pieces(&text);
        let n = ps.len();
        for (i, p) in ps.into_iter().enumerate() {
            let done = i + 1 == n
                && !matches!(
                    behaviour,
                    Behaviour::Cut
                        | Behaviour::Reset
                        | Behaviour::Stall
                        | Behaviour::StreamError
                        | Behaviour::Malformed
                );
            if done {
                frames.push(event(json!([{ "text": p }]), Some("STOP"), usage));
            } else {
                frames.push(event(json!([{ "text": p }]), None, &partial_usage));
            }
        }
    }
    match behaviour {
        Behaviour::Cut | Behaviour::NoDone => sse(&[], frames, End::Clean),
        Behaviour::Reset => sse(&[], frames, End::Reset),
        Behaviour::Stall => sse(&[], frames, End::Stall),
        Behaviour::Malformed => {
            frames.push("data: {\"candidates\": [{\"content\r\n\r\n".into());
            sse(&[], frames, End::Clean)
        }
        Behaviour::StreamError => {
            frames.push(frame(json!({ "error": { "code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE" } })));
            sse(&[], frames, End::Clean)
        }
        _ => sse(&[], frames, End::Clean),
    }
}
