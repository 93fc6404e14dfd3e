//! Chat Completions bodies (`parse_chat_body`). No panic; rejections name a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vmx_api::error::ApiError;
use vmx_api::routes::chat::parse_chat_body;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_chat_body(body, 16) {
        Ok(b) => assert!(!b.connection.is_empty() && !b.model.is_empty()),
        Err(ApiError::BadRequest { field: Some(f), .. }) => assert!(!f.is_empty()),
        Err(e) => panic!("not a field error: {e:?}"),
    }
});
