//! The provider adapters' translations, both ways: an OpenAI Chat Completions body into
//! Anthropic Messages and Gemini generateContent requests, and provider responses (hostile
//! too: a provider or a man in the middle can send anything) back. No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vmx_providers::{anthropic, gemini};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Value::Object(body) = &value {
        let _ = anthropic::to_messages_request("claude-fuzz", body, false);
        let _ = anthropic::to_messages_request("claude-fuzz", body, true);
        let _ = gemini::to_generate_content_request(body);
    }
    let _ = anthropic::from_message(&value);
    let _ = gemini::from_generate_content(&value, "gemini-fuzz");
    if let Some(m) = value.get("model").and_then(Value::as_str) {
        let _ = gemini::model_path(m);
    }
});
