//! Stub provider servers for tests and benchmarks (cargo feature `stub`).
//!
//! [`StubServer::start`] serves one provider's wire format on `127.0.0.1:0`, written from the
//! providers' API references: OpenAI, Groq and Perplexity chat completions (each with its own
//! quirks: Groq's `x_groq` and per-day request limit, Perplexity's citations, usage on every
//! chunk and no `[DONE]`), Anthropic Messages with its named SSE events, and Gemini
//! `generateContent`/`streamGenerateContent?alt=sse` (CRLF-framed events). Its `base_url` has
//! the form of the real default base URL (`http://127.0.0.1:PORT/v1` for OpenAI,
//! `.../openai/v1` for Groq, the bare host for the others), so it plugs straight into
//! [`ProviderEndpoints`](crate::ProviderEndpoints).
//!
//! The model name picks the behaviour ([`Behaviour::model`]; an `x-stub-behaviour` header
//! overrides it): a normal answer echoing the last user text, a tool call (and, once the
//! tool's result comes back, an answer quoting it), prompt-cache usage, 429 with Retry-After
//! (seconds or HTTP date) and rate-limit headers, 401, 400, 500, Anthropic's 529, a hang, a
//! stream that stalls, ends early or resets, malformed JSON, an error event mid-stream, an
//! oversized body, and an error body that echoes the API key back. An API key starting with
//! `invalid` is refused on every endpoint (to test probes).
//!
//! Every request is recorded ([`StubServer::requests`]) so tests can assert what reached the
//! provider. Stub servers are strict where the real APIs are: missing auth, a missing
//! `max_tokens` for Anthropic, turns that do not alternate, tool results without their call,
//! a Gemini key in the URL... are refused like the provider would.
//!
//! This is test support: it may panic on a poisoned lock, hence the lint allowances.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic;
mod gemini;
pub mod images;
mod openai;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use vmx_domain::provider::ProviderKind;

/// What a stub does, chosen by the request's model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers "Hello! You said: <last user text>".
    Ok,
    /// Calls the request's first tool; answers with the tool's result once it comes back.
    Tools,
    /// A normal answer whose usage includes prompt-cache reads (and Anthropic cache writes).
    Cache,
    /// 429 with `retry-after: 7` (Gemini: `RetryInfo` 17s) and the rate-limit headers.
    RateLimited,
    /// 429 with `retry-after` as an HTTP date 30 s ahead.
    RateLimitedDate,
    /// 401 (Gemini: 400 `API_KEY_INVALID`), the key masked in the message.
    Unauthorized,
    /// 400 naming the offending parameter.
    BadRequest,
    /// 500.
    ServerError,
    /// Anthropic 529 `overloaded_error` (others: 503).
    Overloaded,
    /// Answers nothing for 30 s.
    Timeout,
    /// Streams: sends the first events, then nothing for 30 s.
    Stall,
    /// Streams: sends the first events and closes cleanly, without the terminator.
    Cut,
    /// Streams: sends the first events, then breaks the connection.
    Reset,
    /// 200 with a body that is not JSON (streams: an event that is not JSON).
    Malformed,
    /// 401 whose body echoes the API key, raw, percent-encoded and masked.
    EchoKey,
    /// Streams: an error event after the first events.
    StreamError,
    /// A 2 MiB answer.
    Big,
    /// OpenAI-format streams: ends after the finish and usage chunks without `[DONE]`.
    NoDone,
    /// A normal answer whose usage reports exactly the most output tokens the request
    /// allowed: its output limit (or [`fixtures::PROVIDER_DEFAULT_OUTPUT`] when it sets
    /// none) times the choices asked for.
    MaxOutput,
}

impl Behaviour {
    pub const ALL: [Behaviour; 19] = [
        Self::Ok,
        Self::Tools,
        Self::Cache,
        Self::RateLimited,
        Self::RateLimitedDate,
        Self::Unauthorized,
        Self::BadRequest,
        Self::ServerError,
        Self::Overloaded,
        Self::Timeout,
        Self::Stall,
        Self::Cut,
        Self::Reset,
        Self::Malformed,
        Self::EchoKey,
        Self::StreamError,
        Self::Big,
        Self::NoDone,
        Self::MaxOutput,
    ];

    /// The model name that selects this behaviour.
    pub fn model(self) -> &'static str {
        match self {
            Self::Ok => "stub-ok",
            Self::Tools => "stub-tools",
            Self::Cache => "stub-cache",
            Self::RateLimited => "stub-429",
            Self::RateLimitedDate => "stub-429-date",
            Self::Unauthorized => "stub-401",
            Self::BadRequest => "stub-400",
            Self::ServerError => "stub-500",
            Self::Overloaded => "stub-overloaded",
            Self::Timeout => "stub-timeout",
            Self::Stall => "stub-stall",
            Self::Cut => "stub-cut",
            Self::Reset => "stub-reset",
            Self::Malformed => "stub-malformed",
            Self::EchoKey => "stub-echo-key",
            Self::StreamError => "stub-stream-error",
            Self::Big => "stub-big",
            Self::NoDone => "stub-no-done",
            Self::MaxOutput => "stub-max-output",
        }
    }

    /// The behaviour of a model name (anything unknown: [`Behaviour::Ok`]).
    pub fn from_model(model: &str) -> Self {
        let model = model.strip_prefix("models/").unwrap_or(model);
        Self::ALL
            .into_iter()
            .find(|b| b.model() == model)
            .unwrap_or(Self::Ok)
    }
}

/// Fixed numbers of the stubs' answers, for assertions.
pub mod fixtures {
    /// Prompt tokens read from the cache under [`Behaviour::Cache`](super::Behaviour::Cache).
    pub const CACHE_READ_TOKENS: u64 = 100;
    /// Anthropic prompt tokens written to the cache under `Cache`.
    pub const CACHE_CREATION_TOKENS: u64 = 20;
    /// Gemini thinking tokens of every answer.
    pub const GEMINI_THOUGHTS_TOKENS: u64 = 4;
    /// `retry-after` of [`Behaviour::RateLimited`] (seconds).
    pub const RETRY_AFTER_SECS: u64 = 7;
    /// Gemini's `RetryInfo.retryDelay` under `RateLimited` (seconds).
    pub const GEMINI_RETRY_DELAY_SECS: u64 = 17;
    /// The argument value the stub puts in its tool calls.
    pub const TOOL_ARGUMENT: &str = "Paris";
    /// The output limit a stub assumes under [`MaxOutput`](super::Behaviour::MaxOutput)
    /// when the request sets none (a provider's own default, far above vmx's).
    pub const PROVIDER_DEFAULT_OUTPUT: u64 = 65_536;
    /// The thought signature the Gemini stub attaches to function calls and wants back.
    pub const THOUGHT_SIGNATURE: &str = "c3R1Yi1zaWduYXR1cmU=";
}

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
    /// The client's address: one per connection, so tests can see connection reuse.
    pub peer: Option<SocketAddr>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    kind: ProviderKind,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running stub provider. Stops when dropped.
pub struct StubServer {
    pub kind: ProviderKind,
    /// In the form of the provider's real default base URL.
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StubServer {
    /// Starts a stub of `kind` (one of the five API-key providers) on `127.0.0.1:0`.
    pub async fn start(kind: ProviderKind) -> StubServer {
        let prefix = match kind {
            ProviderKind::OpenAi => "/v1",
            ProviderKind::Groq => "/openai/v1",
            ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Perplexity => "",
            ProviderKind::AwsBedrock | ProviderKind::AwsBedrockInvoke => {
                panic!("no stub for {kind}: it is not an API-key provider")
            }
        };
        let shared = Arc::new(Shared {
            kind,
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        StubServer {
            kind,
            base_url: format!("http://{addr}{prefix}"),
            addr,
            shared,
            task,
        }
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most recent request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.requests.lock().unwrap().last().cloned()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
    }
}

/// What a stub handler gets.
pub(crate) struct Ctx {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Ctx {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The behaviour: the `x-stub-behaviour` header, else from `model`.
    pub fn behaviour(&self, model: &str) -> Behaviour {
        Behaviour::from_model(self.header("x-stub-behaviour").unwrap_or(model))
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let ctx = Ctx {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    shared.requests.lock().unwrap().push(RecordedRequest {
        method: ctx.method.clone(),
        path: ctx.path.clone(),
        query: ctx.query.clone(),
        headers,
        body: ctx.body.clone(),
        peer,
    });
    match shared.kind {
        ProviderKind::Anthropic => anthropic::handle(ctx).await,
        ProviderKind::Gemini => gemini::handle(ctx).await,
        kind => openai::handle(kind, ctx).await,
    }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the three wire formats
// ---------------------------------------------------------------------------------------

pub(crate) fn respond(status: u16, headers: &[(String, String)], body: Value) -> Response {
    raw(
        status,
        headers,
        "application/json",
        body.to_string().into_bytes(),
    )
}

pub(crate) fn raw(
    status: u16,
    headers: &[(String, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    add_headers(resp.headers_mut(), headers);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_str(content_type).unwrap());
    stub_request_id(resp.headers_mut());
    resp
}

/// Every stub response names itself the way providers do (`x-request-id`), unless the
/// behaviour set one.
fn stub_request_id(map: &mut HeaderMap) {
    if !map.contains_key("x-request-id") {
        map.insert("x-request-id", HeaderValue::from_static("stub-req-1"));
    }
}

fn add_headers(map: &mut HeaderMap, headers: &[(String, String)]) {
    for (n, v) in headers {
        map.insert(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
}

/// How a stub stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Clean,
    /// Break the connection (the body stream fails).
    Reset,
    /// Go silent for 30 s.
    Stall,
}

/// An event stream of `frames` (each a complete SSE event), every frame cut in two at an
/// arbitrary byte (inside a line, a `\r\n` or a UTF-8 character) as a network would.
pub(crate) fn sse(headers: &[(String, String)], frames: Vec<String>, end: End) -> Response {
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    for (i, f) in frames.into_iter().enumerate() {
        let b = Bytes::from(f.into_bytes());
        let cut = if b.len() > 2 {
            1 + (i * 7 + 5) % (b.len() - 1)
        } else {
            0
        };
        pieces.push(Ok(b.slice(..cut)));
        pieces.push(Ok(b.slice(cut..)));
    }
    let head = futures_util::stream::iter(pieces);
    let body = match end {
        End::Clean => Body::from_stream(head),
        End::Reset => Body::from_stream(head.chain(futures_util::stream::once(async {
            Err(std::io::Error::other("stub: connection reset"))
        }))),
        End::Stall => Body::from_stream(head.chain(futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Bytes::new())
        }))),
    };
    let mut resp = Response::new(body);
    add_headers(resp.headers_mut(), headers);
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    stub_request_id(resp.headers_mut());
    resp
}

/// Sleeps long enough for any client timeout in a test.
pub(crate) async fn hang() {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

/// The text of an OpenAI-style message content (string or parts).
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A rough token count: words.
pub(crate) fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The reply pieces of a text, streamed word by word.
pub(crate) fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, w) in text.split(' ').enumerate() {
        if i > 0 {
            current.push(' ');
        }
        current.push_str(w);
        out.push(std::mem::take(&mut current));
    }
    out
}

/// `retry-after` for the two 429 behaviours.
pub(crate) fn retry_after_header(b: Behaviour) -> (String, String) {
    let value = if b == Behaviour::RateLimitedDate {
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30))
    } else {
        fixtures::RETRY_AFTER_SECS.to_string()
    };
    ("retry-after".to_owned(), value)
}

/// A masked echo of a key, as providers print it (`sk-p****wxyz`).
pub(crate) fn masked(key: &str) -> String {
    let n = key.chars().count();
    if n < 8 {
        return "****".into();
    }
    let head: String = key.chars().take(4).collect();
    let tail: String = key.chars().skip(n - 4).collect();
    format!("{head}****{tail}")
}

/// An error message that echoes the key in its common shapes.
pub(crate) fn echo_key_message(key: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "Incorrect API key provided: {key}. Request: /v1/chat?key={encoded}. Masked: {}.",
        masked(key)
    )
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A 2 MiB text.
pub(crate) fn big_text() -> String {
    "lorem ipsum ".repeat(2 * 1024 * 1024 / 12 + 1)
}
