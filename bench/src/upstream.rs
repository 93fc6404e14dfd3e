//! The stub upstream of the `overhead` and `aws-calls` sections: OpenAI Chat Completions
//! (JSON with usage, or SSE with the usage chunk and `[DONE]`, OpenAI's rate-limit headers),
//! as lean as a server can answer, so that what is measured is the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::BenchResult;

/// Chunks of content in a streamed answer (plus the finish and usage chunks).
const STREAM_CHUNKS: usize = 8;

/// Called as each request arrives, before it is answered.
pub type OnRequest = Arc<dyn Fn() + Send + Sync>;

pub struct Upstream {
    /// `http://127.0.0.1:<port>/v1`, as an OpenAI base URL.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(delay: Duration) -> BenchResult<Self> {
        Self::start_with(delay, None).await
    }

    /// As [`Upstream::start`], calling `on_request` as each request arrives.
    pub async fn start_with(delay: Duration, on_request: Option<OnRequest>) -> BenchResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let completion = Bytes::from(completion_json().to_string());
        let stream = Bytes::from(stream_body());
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |headers: HeaderMap, body: Bytes| {
                let (completion, stream) = (completion.clone(), stream.clone());
                if let Some(hook) = &on_request {
                    hook();
                }
                async move { answer(delay, &headers, &body, completion, stream).await }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base: format!("http://{addr}/v1"),
            task,
        })
    }
}

async fn answer(
    delay: Duration,
    headers: &HeaderMap,
    body: &[u8],
    completion: Bytes,
    stream: Bytes,
) -> Response {
    if !headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer "))
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"message":"Missing bearer authentication.","type":"invalid_request_error","param":null,"code":null}}"#,
        )
            .into_response();
    }
    // A byte search, not a JSON parse: the stub must cost as little as possible.
    const NEEDLE: &[u8] = b"\"stream\":true";
    let streaming = body.windows(NEEDLE.len()).any(|w| w == NEEDLE);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let limits = [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-limit-tokens", "30000000"),
        ("x-ratelimit-remaining-tokens", "29999950"),
        ("x-ratelimit-reset-tokens", "0s"),
        ("x-request-id", "req_bench"),
        ("openai-processing-ms", "1"),
    ];
    let mut resp = if streaming {
        (
            [
                (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            stream,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], completion).into_response()
    };
    for (k, v) in limits {
        resp.headers_mut()
            .insert(k, axum::http::HeaderValue::from_static(v));
    }
    resp
}

/// An OpenAI `chat.completion` with `usage` (also the hot-path section's nginx upstream).
pub(crate) fn completion_json() -> Value {
    json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_765_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                        "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default"
    })
}

/// The events of a streamed answer as OpenAI sends them with `stream_options.include_usage`
/// (without the `data: ` framing): `content_chunks` content chunks (the first with the role),
/// the finish chunk, the usage chunk (empty choices), then `[DONE]`. Also the hot-path
/// section's nginx upstream.
pub(crate) fn stream_events(content_chunks: usize) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_765_000_000,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null
        })
    };
    let mut events = Vec::with_capacity(content_chunks + 3);
    for i in 0..content_chunks {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": "word0 "})
        } else {
            json!({"content": format!("word{i} ")})
        };
        events.push(chunk(delta, Value::Null).to_string());
    }
    events.push(chunk(json!({}), json!("stop")).to_string());
    events.push(
        json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_765_000_000,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench", "choices": [],
            "usage": {"prompt_tokens": 14, "completion_tokens": content_chunks,
                      "total_tokens": 14 + content_chunks}
        })
        .to_string(),
    );
    events.push("[DONE]".into());
    events
}

/// [`stream_events`] of [`STREAM_CHUNKS`] content chunks as one event-stream body.
fn stream_body() -> String {
    stream_events(STREAM_CHUNKS)
        .iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect()
}
