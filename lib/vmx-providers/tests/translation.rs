//! Request and response translation of the Anthropic and Gemini adapters, unit by unit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Map, Value, json};
use vmx_domain::inference::{ProviderError, Usage};
use vmx_providers::{anthropic, gemini};

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn to_anthropic(v: Value) -> Value {
    anthropic::to_messages_request("claude-test", &body(v), false).unwrap()
}

fn anthropic_err(v: Value) -> ProviderError {
    anthropic::to_messages_request("claude-test", &body(v), false).unwrap_err()
}

// ---------------------------------------------------------------------------------------
// Anthropic requests
// ---------------------------------------------------------------------------------------

#[test]
fn anthropic_system_and_developer_messages_become_system_blocks() {
    let out = to_anthropic(json!({ "messages": [
        { "role": "system", "content": "Be brief." },
        { "role": "developer", "content": [
            { "type": "text", "text": "Cite sources.", "cache_control": { "type": "ephemeral" } },
        ]},
        { "role": "user", "content": "Hi" },
    ]}));
    assert_eq!(
        out["system"],
        json!([
            { "type": "text", "text": "Be brief." },
            { "type": "text", "text": "Cite sources.", "cache_control": { "type": "ephemeral" } },
        ])
    );
    assert_eq!(
        out["messages"],
        json!([{ "role": "user", "content": [{ "type": "text", "text": "Hi" }] }])
    );
    assert_eq!(out["model"], "claude-test");
    assert_eq!(out["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    assert!(out.get("stream").is_none());
}

#[test]
fn anthropic_multi_turn_alternates_and_merges_same_role_turns() {
    let out = to_anthropic(json!({ "messages": [
        { "role": "user", "content": "one" },
        { "role": "user", "content": "two" },
        { "role": "assistant", "content": "three" },
        { "role": "user", "content": "four" },
    ]}));
    let roles: Vec<&str> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        out["messages"][0]["content"],
        json!([{ "type": "text", "text": "one" }, { "type": "text", "text": "two" }])
    );
}

#[test]
fn anthropic_tool_calls_and_results_merge_into_one_user_turn() {
    let out = to_anthropic(json!({ "messages": [
        { "role": "user", "content": "Weather in Paris and Rome?" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
            { "id": "call_2", "type": "function", "function": { "name": "weather", "arguments": "" } },
        ]},
        { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
        { "role": "tool", "tool_call_id": "call_2", "content": [{ "type": "text", "text": "21C" }] },
        { "role": "user", "content": "Which is warmer?" },
    ]}));
    let turns = out["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(
        turns[1],
        json!({ "role": "assistant", "content": [
            { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
            { "type": "tool_use", "id": "call_2", "name": "weather", "input": {} },
        ]})
    );
    assert_eq!(
        turns[2],
        json!({ "role": "user", "content": [
            { "type": "tool_result", "tool_use_id": "call_1", "content": "18C" },
            { "type": "tool_result", "tool_use_id": "call_2", "content": [{ "type": "text", "text": "21C" }] },
            { "type": "text", "text": "Which is warmer?" },
        ]})
    );
}

#[test]
fn anthropic_tool_results_stay_first_in_a_merged_user_turn() {
    let out = to_anthropic(json!({ "messages": [
        { "role": "user", "content": "go" },
        { "role": "assistant", "tool_calls": [
            { "id": "t1", "type": "function", "function": { "name": "f", "arguments": "{}" } },
        ]},
        { "role": "user", "content": "also this" },
        { "role": "tool", "tool_call_id": "t1", "content": "done" },
    ]}));
    let content = out["messages"][2]["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "tool_result");
    assert_eq!(content[1]["type"], "text");
}

#[test]
fn anthropic_images_and_documents() {
    let out = to_anthropic(json!({ "messages": [{ "role": "user", "content": [
        { "type": "text", "text": "What is in these?" },
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
        { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg", "detail": "high" } },
        { "type": "file", "file": { "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0=" } },
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            { "type": "text", "text": "What is in these?" },
            { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
            { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
            { "type": "document", "source": { "type": "base64", "media_type": "application/pdf", "data": "JVBERi0=" } },
        ])
    );
    for bad in [
        json!({ "type": "image_url", "image_url": { "url": "ftp://example.com/x.png" } }),
        json!({ "type": "image_url", "image_url": { "url": "data:image/png,notbase64" } }),
        json!({ "type": "input_audio", "input_audio": { "data": "AAA=", "format": "wav" } }),
        json!({ "type": "file", "file": { "file_id": "file-123" } }),
    ] {
        let e = anthropic_err(json!({ "messages": [{ "role": "user", "content": [bad] }] }));
        assert!(
            matches!(e, ProviderError::BadRequest { status: 400, .. }),
            "{e:?}"
        );
    }
}

#[test]
fn anthropic_parameters() {
    let out = to_anthropic(json!({
        "messages": [{ "role": "user", "content": "Hi" }],
        "max_tokens": 100,
        "max_completion_tokens": 200,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["###", "END"],
        "user": "user-42",
        "frequency_penalty": 1,
        "logprobs": true,
        "response_format": { "type": "text" },
        "stream_options": { "include_usage": true },
    }));
    assert_eq!(out["max_tokens"], 200, "max_completion_tokens wins");
    assert_eq!(out["temperature"], 0.3);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["###", "END"]));
    assert_eq!(out["metadata"], json!({ "user_id": "user-42" }));
    for dropped in [
        "frequency_penalty",
        "logprobs",
        "response_format",
        "stream_options",
        "user",
        "stop",
    ] {
        assert!(out.get(dropped).is_none(), "{dropped}");
    }
    let streamed = anthropic::to_messages_request(
        "m",
        &body(json!({ "messages": [{ "role": "user", "content": "x" }] })),
        true,
    )
    .unwrap();
    assert_eq!(streamed["stream"], true);
    let single =
        to_anthropic(json!({ "messages": [{ "role": "user", "content": "x" }], "stop": "END" }));
    assert_eq!(single["stop_sequences"], json!(["END"]));
    assert!(matches!(
        anthropic_err(json!({ "messages": [{ "role": "user", "content": "x" }], "n": 2 })),
        ProviderError::BadRequest { .. }
    ));
    assert!(matches!(
        anthropic_err(
            json!({ "messages": [{ "role": "user", "content": "x" }], "max_tokens": "lots" })
        ),
        ProviderError::BadRequest { .. }
    ));
    assert!(matches!(
        anthropic_err(json!({ "messages": [] })),
        ProviderError::BadRequest { .. }
    ));
    assert!(matches!(
        anthropic_err(json!({ "messages": [{ "role": "function", "content": "x" }] })),
        ProviderError::BadRequest { .. }
    ));
}

#[test]
fn anthropic_tools_and_tool_choice() {
    let tools = json!([
        { "type": "function", "function": { "name": "f", "description": "d", "parameters": { "type": "object", "properties": { "a": { "type": "string" } } } } },
        { "type": "function", "function": { "name": "g" } },
        { "type": "web_search_20250305", "name": "web_search", "max_uses": 3 },
    ]);
    let out = to_anthropic(json!({
        "messages": [{ "role": "user", "content": "x" }],
        "tools": tools,
        "tool_choice": "required",
        "parallel_tool_calls": false,
    }));
    assert_eq!(
        out["tools"],
        json!([
            { "name": "f", "description": "d", "input_schema": { "type": "object", "properties": { "a": { "type": "string" } } } },
            { "name": "g", "input_schema": { "type": "object", "properties": {} } },
            { "type": "web_search_20250305", "name": "web_search", "max_uses": 3 },
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({ "type": "any", "disable_parallel_tool_use": true })
    );
    let choice = |c: Value| {
        to_anthropic(json!({ "messages": [{ "role": "user", "content": "x" }], "tools": tools, "tool_choice": c }))
            ["tool_choice"]
            .clone()
    };
    assert_eq!(choice(json!("auto")), json!({ "type": "auto" }));
    assert_eq!(choice(json!("none")), json!({ "type": "none" }));
    assert_eq!(
        choice(json!({ "type": "function", "function": { "name": "g" } })),
        json!({ "type": "tool", "name": "g" })
    );
    let e = anthropic_err(json!({
        "messages": [{ "role": "assistant", "tool_calls": [{ "id": "1", "type": "function", "function": { "name": "f", "arguments": "{not json" } }] },
                     { "role": "user", "content": "x" }],
    }));
    assert!(matches!(e, ProviderError::BadRequest { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// Anthropic responses
// ---------------------------------------------------------------------------------------

#[test]
fn anthropic_stop_reasons() {
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ] {
        assert_eq!(anthropic::finish_reason(stop), finish, "{stop}");
        let (body, _) = anthropic::from_message(&json!({
            "id": "msg_1", "type": "message", "model": "claude-test",
            "content": [{ "type": "text", "text": "x" }], "stop_reason": stop,
        }))
        .unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], finish);
    }
}

#[test]
fn anthropic_response_with_tools_thinking_and_cache_usage() {
    let (body, usage) = anthropic::from_message(&json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [
            { "type": "thinking", "thinking": "The user wants weather.", "signature": "sig" },
            { "type": "text", "text": "Checking." },
            { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
        ],
        "stop_reason": "tool_use",
        "usage": { "input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20, "output_tokens": 7 },
    }))
    .unwrap();
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 130,
            completion_tokens: 7,
            cached_tokens: 100,
            cache_creation_tokens: 20
        })
    );
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "msg_1");
    assert_eq!(body["model"], "claude-test");
    let m = &body["choices"][0]["message"];
    assert_eq!(m["content"], "Checking.");
    assert_eq!(m["reasoning_content"], "The user wants weather.");
    assert_eq!(m["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "weather");
    let args: Value = serde_json::from_str(
        m["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(args, json!({ "city": "Paris" }));
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"]["prompt_tokens"], 130);
    assert_eq!(body["usage"]["total_tokens"], 137);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 20);

    let (only_tool, _) = anthropic::from_message(&json!({
        "content": [{ "type": "tool_use", "id": "t", "name": "f", "input": {} }], "stop_reason": "tool_use",
    }))
    .unwrap();
    assert_eq!(only_tool["choices"][0]["message"]["content"], Value::Null);
    assert!(matches!(
        anthropic::from_message(&json!({ "id": "x" })),
        Err(ProviderError::Malformed(_))
    ));
}

#[test]
fn anthropic_usage_without_cache_fields() {
    assert_eq!(
        anthropic::usage_from_anthropic(
            &json!({ "input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": null })
        ),
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            cached_tokens: 0,
            cache_creation_tokens: 0
        }
    );
}

// ---------------------------------------------------------------------------------------
// Gemini
// ---------------------------------------------------------------------------------------

#[test]
fn gemini_request_translation() {
    let out = gemini::to_generate_content_request(&body(json!({
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": [
                { "type": "text", "text": "Describe" },
                { "type": "image_url", "image_url": { "url": "data:image/jpeg;base64,/9j/4AAQ" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/a.png" } },
            ]},
            { "role": "assistant", "tool_calls": [{
                "id": "call_9", "type": "function",
                "function": { "name": "lookup", "arguments": "{\"q\":\"x\"}" },
                "extra_content": { "google": { "thought_signature": "SIG" } },
            }]},
            { "role": "tool", "tool_call_id": "call_9", "content": "{\"answer\": 42}" },
            { "role": "tool", "tool_call_id": "call_9", "content": "plain text" },
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.8,
        "stop": "END",
        "seed": 7,
        "response_format": { "type": "json_schema", "json_schema": { "name": "r", "schema": { "type": "object" } } },
        "tools": [
            { "type": "function", "function": { "name": "lookup", "parameters": { "type": "object", "additionalProperties": false } } },
            { "googleSearch": {} },
        ],
        "tool_choice": { "type": "function", "function": { "name": "lookup" } },
        "safety_settings": [{ "category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE" }],
        "user": "dropped",
    })))
    .unwrap();
    assert_eq!(
        out["systemInstruction"],
        json!({ "parts": [{ "text": "Be brief." }] })
    );
    let contents = out["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    assert_eq!(
        contents[0],
        json!({ "role": "user", "parts": [
            { "text": "Describe" },
            { "inlineData": { "mimeType": "image/jpeg", "data": "/9j/4AAQ" } },
            { "fileData": { "fileUri": "https://example.com/a.png", "mimeType": "image/png" } },
        ]})
    );
    assert_eq!(
        contents[1],
        json!({ "role": "model", "parts": [
            { "functionCall": { "name": "lookup", "args": { "q": "x" } }, "thoughtSignature": "SIG" },
        ]})
    );
    assert_eq!(
        contents[2],
        json!({ "role": "user", "parts": [
            { "functionResponse": { "name": "lookup", "response": { "answer": 42 } } },
            { "functionResponse": { "name": "lookup", "response": { "result": "plain text" } } },
        ]})
    );
    assert_eq!(
        out["generationConfig"],
        json!({
            "maxOutputTokens": 50, "temperature": 0.2, "topP": 0.8, "stopSequences": ["END"], "seed": 7,
            "responseMimeType": "application/json", "responseJsonSchema": { "type": "object" },
        })
    );
    assert_eq!(
        out["tools"],
        json!([
            { "functionDeclarations": [{ "name": "lookup", "parametersJsonSchema": { "type": "object", "additionalProperties": false } }] },
            { "googleSearch": {} },
        ])
    );
    assert_eq!(
        out["toolConfig"],
        json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["lookup"] } })
    );
    assert_eq!(out["safetySettings"][0]["threshold"], "BLOCK_NONE");
    assert!(out.get("user").is_none());

    let e = gemini::to_generate_content_request(&body(json!({ "messages": [
        { "role": "user", "content": "x" },
        { "role": "tool", "tool_call_id": "unknown", "content": "y" },
    ]})))
    .unwrap_err();
    assert!(matches!(e, ProviderError::BadRequest { .. }), "{e:?}");
}

#[test]
fn gemini_model_ids_cannot_change_the_url() {
    assert_eq!(
        gemini::model_path("gemini-2.5-flash").unwrap(),
        "models/gemini-2.5-flash"
    );
    assert_eq!(
        gemini::model_path("models/gemini-2.5-pro").unwrap(),
        "models/gemini-2.5-pro"
    );
    assert_eq!(
        gemini::model_path("tunedModels/my-model").unwrap(),
        "tunedModels/my-model"
    );
    for bad in [
        "",
        "..",
        "../v1/files",
        "a/b",
        "x?key=1",
        "x:generateContent",
        "gemini 2",
    ] {
        assert!(gemini::model_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn gemini_response_usage_and_finish_reasons() {
    let (body, usage) = gemini::from_generate_content(
        &json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "Let me think", "thought": true },
                    { "text": "Answer." },
                    { "functionCall": { "name": "f", "args": { "a": 1 } }, "thoughtSignature": "S1" },
                ]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {
                "promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 60, "totalTokenCount": 155,
            },
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "resp-1",
        }),
        "gemini-2.5-flash",
    )
    .unwrap();
    let u = usage.unwrap();
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 105,
            completion_tokens: 50,
            cached_tokens: 60,
            cache_creation_tokens: 0
        }
    );
    assert_eq!(
        body["usage"]["total_tokens"], 155,
        "equals Google's totalTokenCount"
    );
    assert_eq!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"],
        30
    );
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 60);
    assert_eq!(body["id"], "resp-1");
    assert_eq!(body["model"], "gemini-2.5-flash-001");
    let m = &body["choices"][0]["message"];
    assert_eq!(m["content"], "Answer.");
    assert_eq!(m["reasoning_content"], "Let me think");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "f");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    assert_eq!(
        m["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
        "S1"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    for (reason, calls, finish) in [
        ("STOP", false, "stop"),
        ("MAX_TOKENS", false, "length"),
        ("MAX_TOKENS", true, "length"),
        ("SAFETY", false, "content_filter"),
        ("RECITATION", false, "content_filter"),
        ("PROHIBITED_CONTENT", false, "content_filter"),
        ("OTHER", false, "stop"),
    ] {
        assert_eq!(gemini::finish_reason(reason, calls), finish, "{reason}");
    }

    let (blocked, usage) = gemini::from_generate_content(
        &json!({ "promptFeedback": { "blockReason": "SAFETY" }, "usageMetadata": { "promptTokenCount": 9, "totalTokenCount": 9 } }),
        "gemini-x",
    )
    .unwrap();
    assert_eq!(blocked["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(blocked["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(usage.unwrap().prompt_tokens, 9);
}
