//! A Bedrock runtime stub on 127.0.0.1 speaking Bedrock's REST JSON protocol and the
//! `application/vnd.amazon.eventstream` framing, for the Bedrock provider tests (moto does not
//! implement Converse or InvokeModel).
//!
//! Routes: `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke`,
//! `/invoke-with-response-stream` (the model id percent-decoded). What a model answers is set
//! per model id with [`BedrockStub::reply`] (default [`Reply::Success`]); every request is
//! recorded ([`Recorded`]: headers, body, the SigV4 access key id) so tests can check what
//! reached Bedrock.
//!
//! Fixtures follow the shapes of the Bedrock API reference (Converse, ConverseStream,
//! InvokeModel, InvokeModelWithResponseStream; Anthropic Messages events inside `chunk`
//! events whose `bytes` is the base64 of the event JSON).
//!
//! Event stream framing (the AWS event stream encoding): each message is a 12-byte prelude
//! (total length u32 BE, headers length u32 BE, CRC32 of those 8 bytes), the headers (name
//! length u8, name, value type u8 = 7 for a string, value length u16 BE, value), the payload,
//! and a CRC32 of everything before it.
//!
//! This is test-support code: a broken request panics the connection's task, as in a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the stub answers for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The operation's success fixture.
    Success,
    /// A guardrail intervention (Converse/ConverseStream: `stopReason: guardrail_intervened`
    /// with a trace; InvokeModel: `amazon-bedrock-guardrailAction: INTERVENED`).
    GuardrailIntervened,
    /// An HTTP error: `status`, the `x-amzn-errortype` code, `{"message": ...}`.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Streams only: the first events, then an exception event of this code (e.g.
    /// `throttlingException`).
    StreamException { code: String, message: String },
}

impl Reply {
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::Error {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    pub fn throttling() -> Self {
        Self::error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        )
    }

    /// Bedrock's answer to a role without `bedrock:InvokeModel`.
    pub fn access_denied() -> Self {
        Self::error(
            403,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/vmx-bedrock/vmx-0000 is not authorized to perform: bedrock:InvokeModel on resource: arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0 because no identity-based policy allows the bedrock:InvokeModel action",
        )
    }

    /// Bedrock's answer for a model the account has not enabled.
    pub fn model_not_enabled() -> Self {
        Self::error(
            403,
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        )
    }
}

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// `converse`, `converse-stream`, `invoke` or `invoke-with-response-stream`.
    pub operation: String,
    /// The model id, percent-decoded.
    pub model_id: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }

    /// The access key id of the SigV4 `Authorization` header
    /// (`AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/bedrock/aws4_request, ...`).
    pub fn access_key_id(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?;
        Some(cred.split('/').next()?.to_owned())
    }

    /// The region and service of the SigV4 credential scope.
    pub fn signing_scope(&self) -> Option<(String, String)> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?.split(',').next()?;
        let parts: Vec<&str> = cred.split('/').collect();
        Some((parts.get(2)?.to_string(), parts.get(3)?.to_string()))
    }
}

#[derive(Default)]
struct State {
    replies: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<Recorded>>,
}

/// The running stub; stops when dropped.
pub struct BedrockStub {
    /// `http://127.0.0.1:<port>`: the Bedrock runtime endpoint.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BedrockStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BedrockStub {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let _ = serve(stream, &st).await;
                });
            }
        });
        Self { url, state, task }
    }

    /// What `model_id` answers from now on.
    pub fn reply(&self, model_id: &str, reply: Reply) {
        self.state
            .replies
            .lock()
            .unwrap()
            .insert(model_id.to_owned(), reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// The last request received.
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the stub received a request")
    }
}

/// `GET` lists the recorded requests as JSON, `DELETE` forgets them (for out-of-process
/// tests: the `vmx-bedrock-stub` binary).
pub const CONTROL_PATH: &str = "/__vmx/requests";

impl Recorded {
    /// The request as JSON: method, path, operation, modelId, headers, body (JSON when it
    /// parses, else a string), accessKeyId.
    pub fn to_json(&self) -> Value {
        let body = serde_json::from_slice::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()));
        json!({
            "method": self.method,
            "path": self.path,
            "operation": self.operation,
            "modelId": self.model_id,
            "headers": self.headers.iter().cloned().collect::<HashMap<String, String>>(),
            "body": body,
            "accessKeyId": self.access_key_id(),
        })
    }
}

async fn control(stream: &mut TcpStream, method: &str, state: &State) -> std::io::Result<()> {
    match method {
        "GET" => {
            let list: Vec<Value> = state
                .requests
                .lock()
                .unwrap()
                .iter()
                .map(Recorded::to_json)
                .collect();
            let body = Value::Array(list).to_string();
            respond(stream, 200, "application/json", &[], body.as_bytes()).await
        }
        "DELETE" => {
            state.requests.lock().unwrap().clear();
            respond(stream, 200, "application/json", &[], b"[]").await
        }
        _ => respond(stream, 405, "application/json", &[], b"{}").await,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the stub reads Content-Length bodies only"
    );
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, buf[head_end..].to_vec())))
}

async fn serve(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    if path == CONTROL_PATH {
        return control(&mut stream, &method, state).await;
    }
    let route = path
        .split('?')
        .next()
        .unwrap_or_default()
        .strip_prefix("/model/")
        .and_then(|rest| rest.rsplit_once('/'))
        .map(|(model, op)| (percent_decode(model), op.to_owned()));
    let Some((model_id, operation)) = route else {
        return respond(
            &mut stream,
            404,
            "application/json",
            &[("x-amzn-errortype", "UnknownOperationException")],
            br#"{"message":"no such route"}"#,
        )
        .await;
    };
    state.requests.lock().unwrap().push(Recorded {
        method,
        path,
        operation: operation.clone(),
        model_id: model_id.clone(),
        headers,
        body,
    });
    let reply = state
        .replies
        .lock()
        .unwrap()
        .get(&model_id)
        .cloned()
        .unwrap_or(Reply::Success);
    if let Reply::Error {
        status,
        code,
        message,
    } = &reply
    {
        let body = json!({ "message": message }).to_string();
        return respond(
            &mut stream,
            *status,
            "application/json",
            &[("x-amzn-errortype", code)],
            body.as_bytes(),
        )
        .await;
    }
    let guardrail = reply == Reply::GuardrailIntervened;
    let exception = match &reply {
        Reply::StreamException { code, message } => Some((code.as_str(), message.as_str())),
        _ => None,
    };
    match operation.as_str() {
        "converse" => {
            let body = if guardrail {
                converse_guardrail_fixture()
            } else {
                converse_tools_fixture()
            };
            respond(
                &mut stream,
                200,
                "application/json",
                &[],
                body.to_string().as_bytes(),
            )
            .await
        }
        "converse-stream" => {
            let events = if guardrail {
                converse_stream_guardrail_events()
            } else {
                converse_stream_events()
            };
            let mut frames = Vec::new();
            for (i, (name, payload)) in events.iter().enumerate() {
                if let Some((code, message)) = exception
                    && i == 2
                {
                    frames.extend(exception_frame(code, message));
                    break;
                }
                frames.extend(event_frame(name, payload));
            }
            respond(
                &mut stream,
                200,
                "application/vnd.amazon.eventstream",
                &[],
                &frames,
            )
            .await
        }
        "invoke" => {
            let body = if guardrail {
                invoke_guardrail_fixture()
            } else {
                invoke_fixture()
            };
            respond(
                &mut stream,
                200,
                "application/json",
                &[
                    ("x-amzn-bedrock-input-token-count", "25"),
                    ("x-amzn-bedrock-output-token-count", "42"),
                    ("x-amzn-bedrock-invocation-latency", "812"),
                ],
                body.to_string().as_bytes(),
            )
            .await
        }
        "invoke-with-response-stream" => {
            let mut frames = Vec::new();
            for (i, event) in invoke_stream_events().iter().enumerate() {
                if let Some((code, message)) = exception
                    && i == 2
                {
                    frames.extend(exception_frame(code, message));
                    break;
                }
                frames.extend(chunk_frame(event));
            }
            respond(
                &mut stream,
                200,
                "application/vnd.amazon.eventstream",
                &[],
                &frames,
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "application/json",
                &[("x-amzn-errortype", "UnknownOperationException")],
                br#"{"message":"unknown operation"}"#,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-amzn-requestid: 6f7c1e2a-stub\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------------------
// Event stream encoding
// ---------------------------------------------------------------------------------------

/// One event stream message with string headers.
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).expect("header name length"));
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(
            &u16::try_from(value.len())
                .expect("header value length")
                .to_be_bytes(),
        );
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&u32::try_from(total).expect("length").to_be_bytes());
    msg.extend_from_slice(&u32::try_from(h.len()).expect("length").to_be_bytes());
    let prelude_crc = crc32fast::hash(&msg);
    msg.extend_from_slice(&prelude_crc.to_be_bytes());
    msg.extend_from_slice(&h);
    msg.extend_from_slice(payload);
    let crc = crc32fast::hash(&msg);
    msg.extend_from_slice(&crc.to_be_bytes());
    msg
}

/// An `event` message of `event_type` with a JSON payload.
pub fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    encode_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// An InvokeModelWithResponseStream `chunk` event carrying one Anthropic event.
pub fn chunk_frame(anthropic_event: &Value) -> Vec<u8> {
    let bytes = B64.encode(anthropic_event.to_string());
    event_frame("chunk", &json!({ "bytes": bytes }))
}

/// An `exception` message (`exception_type` in lowerCamelCase, e.g. `throttlingException`).
pub fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    encode_message(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({ "message": message }).to_string().as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// Converse: text and a tool call (the API reference's tool use example).
pub fn converse_tools_fixture() -> Value {
    json!({
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    { "text": "I'll look up the most popular song on that station." },
                    {
                        "toolUse": {
                            "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                            "name": "top_song",
                            "input": { "sign": "WZPZ" }
                        }
                    }
                ]
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 375,
            "outputTokens": 55,
            "totalTokens": 430
        },
        "metrics": { "latencyMs": 1217 }
    })
}

/// The guardrail trace of the intervention fixtures (a denied topic on the input).
pub fn guardrail_trace_fixture() -> Value {
    json!({
        "inputAssessment": {
            "abc123guardrail": {
                "topicPolicy": {
                    "topics": [
                        { "name": "Investments", "type": "DENY", "action": "BLOCKED", "detected": true }
                    ]
                },
                "contentPolicy": {
                    "filters": [
                        { "type": "MISCONDUCT", "confidence": "LOW", "filterStrength": "HIGH", "action": "NONE", "detected": false }
                    ]
                },
                "invocationMetrics": {
                    "guardrailProcessingLatency": 221,
                    "usage": {
                        "topicPolicyUnits": 1,
                        "contentPolicyUnits": 1,
                        "wordPolicyUnits": 0,
                        "sensitiveInformationPolicyUnits": 0,
                        "sensitiveInformationPolicyFreeUnits": 0,
                        "contextualGroundingPolicyUnits": 0
                    },
                    "guardrailCoverage": { "textCharacters": { "guarded": 38, "total": 38 } }
                }
            }
        },
        "actionReason": "Guardrail blocked."
    })
}

/// Converse: a guardrail intervention with its trace.
pub fn converse_guardrail_fixture() -> Value {
    json!({
        "output": {
            "message": {
                "role": "assistant",
                "content": [ { "text": "Sorry, I can't help with investment advice." } ]
            }
        },
        "stopReason": "guardrail_intervened",
        "usage": { "inputTokens": 38, "outputTokens": 0, "totalTokens": 38 },
        "metrics": { "latencyMs": 312 },
        "trace": { "guardrail": guardrail_trace_fixture() }
    })
}

/// ConverseStream: text, a tool call, the stop and the metadata with usage (cache reads
/// included).
pub fn converse_stream_events() -> Vec<(&'static str, Value)> {
    vec![
        ("messageStart", json!({ "role": "assistant" })),
        (
            "contentBlockDelta",
            json!({ "contentBlockIndex": 0, "delta": { "text": "Let me " } }),
        ),
        (
            "contentBlockDelta",
            json!({ "contentBlockIndex": 0, "delta": { "text": "check." } }),
        ),
        ("contentBlockStop", json!({ "contentBlockIndex": 0 })),
        (
            "contentBlockStart",
            json!({
                "contentBlockIndex": 1,
                "start": { "toolUse": { "toolUseId": "tooluse_stream1", "name": "top_song" } }
            }),
        ),
        (
            "contentBlockDelta",
            json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": "{\"sign\": " } } }),
        ),
        (
            "contentBlockDelta",
            json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": "\"WZPZ\"}" } } }),
        ),
        ("contentBlockStop", json!({ "contentBlockIndex": 1 })),
        ("messageStop", json!({ "stopReason": "tool_use" })),
        (
            "metadata",
            json!({
                "usage": {
                    "inputTokens": 100,
                    "outputTokens": 20,
                    "totalTokens": 170,
                    "cacheReadInputTokens": 40,
                    "cacheWriteInputTokens": 10
                },
                "metrics": { "latencyMs": 654 }
            }),
        ),
    ]
}

/// ConverseStream: a guardrail intervention, the trace in the metadata.
pub fn converse_stream_guardrail_events() -> Vec<(&'static str, Value)> {
    vec![
        ("messageStart", json!({ "role": "assistant" })),
        (
            "contentBlockDelta",
            json!({ "contentBlockIndex": 0, "delta": { "text": "Sorry, I can't help with investment advice." } }),
        ),
        ("contentBlockStop", json!({ "contentBlockIndex": 0 })),
        (
            "messageStop",
            json!({ "stopReason": "guardrail_intervened" }),
        ),
        (
            "metadata",
            json!({
                "usage": { "inputTokens": 38, "outputTokens": 0, "totalTokens": 38 },
                "metrics": { "latencyMs": 300 },
                "trace": { "guardrail": guardrail_trace_fixture() }
            }),
        ),
    ]
}

/// InvokeModel (Anthropic Messages on Bedrock): thinking, text, cache usage.
pub fn invoke_fixture() -> Value {
    json!({
        "id": "msg_bdrk_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-7-sonnet-20250219",
        "content": [
            { "type": "thinking", "thinking": "The user greets me.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h" },
            { "type": "text", "text": "Hello! How can I help?" }
        ],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1024,
            "output_tokens": 42
        }
    })
}

/// InvokeModel with a guardrail intervention.
pub fn invoke_guardrail_fixture() -> Value {
    json!({
        "id": "msg_bdrk_guard",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-7-sonnet-20250219",
        "content": [ { "type": "text", "text": "Sorry, I can't help with investment advice." } ],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": { "input_tokens": 38, "output_tokens": 0 },
        "amazon-bedrock-guardrailAction": "INTERVENED",
        "amazon-bedrock-trace": { "guardrail": { "input": guardrail_trace_fixture()["inputAssessment"].clone() } }
    })
}

/// InvokeModelWithResponseStream: the Anthropic events of a thinking + text answer.
pub fn invoke_stream_events() -> Vec<Value> {
    vec![
        json!({
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_stream1", "type": "message", "role": "assistant",
                "model": "claude-3-7-sonnet-20250219", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1024, "output_tokens": 1 }
            }
        }),
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "thinking", "thinking": "" } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "thinking_delta", "thinking": "The user greets me." } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h" } }),
        json!({ "type": "content_block_stop", "index": 0 }),
        json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "text", "text": "" } }),
        json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "text_delta", "text": "Hello!" } }),
        json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "text_delta", "text": " How can I help?" } }),
        json!({ "type": "content_block_stop", "index": 1 }),
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null }, "usage": { "output_tokens": 42 } }),
        json!({
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": { "inputTokenCount": 25, "outputTokenCount": 42, "invocationLatency": 812, "firstByteLatency": 301 }
        }),
    ]
}

/// An STS (query protocol) error document, for a stub standing in for STS
/// (`aws_stub::Stub::start(403, "text/xml", sts_error_xml("AccessDenied", ...))`).
pub fn sts_error_xml(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  </Error>\n  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>\n</ErrorResponse>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout_and_crcs() {
        let m = encode_message(&[(":message-type", "event")], b"{}");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let headers = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(headers, 1 + 13 + 1 + 2 + 5);
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[..8])
        );
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().unwrap()),
            crc32fast::hash(&m[..total - 4])
        );
        assert_eq!(&m[12 + headers..total - 4], b"{}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("anthropic.claude-3-haiku-20240307-v1%3A0"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(percent_decode("a%2Fb"), "a/b");
    }
}
