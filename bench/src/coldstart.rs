//! Section `coldstart`: each Lambda function's bootstrap, started as a fresh process against
//! a minimal Lambda Runtime API emulator in this process, timed from just before the exec to
//! its first `GET /runtime/invocation/next` (the end of its init), and to the complete
//! response of its first invocation, a real one: DynamoDB and KMS at moto, a stub OpenAI
//! upstream. Also each bootstrap's size as built, stripped, and zipped the way SAM uploads
//! it (one entry `bootstrap`, deflate).
//!
//! Options: `--bootstraps <dir>` (default `target/lambda`): `<dir>/<bin>/bootstrap` (the
//! `cargo lambda build --release` layout) or else `<dir>/<bin>` (`target/release`);
//! `--runs <n>` cold starts per function (default 10). Needs `AWS_ENDPOINT_URL` (moto).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use vmx_aws::client::{AwsOptions, config_loader};
use vmx_domain::api_key::NewApiKey;
use vmx_domain::provider::ProviderKind;
use vmx_domain::secret::ExposeSecret;
use vmx_providers::testing::StubServer;

use crate::BenchResult;
use crate::report::{ms, num, opt, table};

/// The functions, by binary name.
const FUNCTIONS: [&str; 3] = ["connections", "inference", "refresh"];
/// Every wait of a run (init, the invocation, the exit after the kill).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Targets: init to the first poll, and the zipped bootstrap (6 MB = 6,000,000 bytes).
const INIT_TARGET_US: u64 = 20_000;
const ZIP_TARGET_BYTES: u64 = 6_000_000;
/// The connection the setup creates, and the one the inference event names.
const CONNECTION: &str = "prod";

const LIST_EVENT: &str = include_str!("../../events/connections/list.http.json");
const CHAT_EVENT: &str = include_str!("../../events/inference/chat-completions.json");
const SCHEDULE_EVENT: &str = include_str!("../../events/refresh/schedule.json");

pub async fn run(args: &[String]) -> BenchResult<String> {
    let dir = PathBuf::from(opt(args, "--bootstraps").unwrap_or("target/lambda"));
    let runs: usize = num(args, "--runs", 10)?;
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let mut bootstraps = Vec::new();
    for function in FUNCTIONS {
        bootstraps.push((function, bootstrap_path(&dir, function)?));
    }

    let tmp = tempfile::tempdir()?;
    let mut sizes = HashMap::new();
    for (function, path) in &bootstraps {
        sizes.insert(*function, sizes_of(function, path, tmp.path()).await?);
    }

    let backend = Backend::setup().await?;
    let mut timings: HashMap<&str, Vec<Timing>> = HashMap::new();
    // Round robin over the functions, so that a noisy moment of the machine is spread.
    for i in 1..=runs {
        for (function, path) in &bootstraps {
            let t = cold_start(function, path, &backend)
                .await
                .map_err(|e| format!("{function}, run {i} of {runs}: {e}"))?;
            eprintln!(
                "coldstart: {function} run {i}/{runs}: first poll {} ms, response {} ms",
                ms(t.first_poll_us),
                ms(t.response_us)
            );
            timings.entry(*function).or_default().push(t);
        }
    }

    let mut rows = Vec::new();
    for (function, _) in &bootstraps {
        let t = timings.get(function).map(Vec::as_slice).unwrap_or_default();
        let poll = Summary::of(t.iter().map(|t| t.first_poll_us));
        let response = Summary::of(t.iter().map(|t| t.response_us));
        let size = sizes.get(function).copied().unwrap_or_default();
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        rows.push(vec![
            format!("`{function}`"),
            poll.to_string(),
            response.to_string(),
            size.bootstrap.to_string(),
            size.stripped.to_string(),
            size.zipped.to_string(),
            format!(
                "init {}, zip {}",
                met(poll.median_us < INIT_TARGET_US),
                met(size.zipped < ZIP_TARGET_BYTES)
            ),
        ]);
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Each function's bootstrap exec'd as a fresh process against a Lambda Runtime API \
         emulator in the harness, {runs} cold starts per function ({arch}, {cpus} CPUs, \
         shared with whatever else runs). *First poll*: from just before the exec to the \
         bootstrap's first `GET /runtime/invocation/next` (its whole init: process start and \
         dynamic linking included, configuration, AWS SDK setup). *First response*: to the \
         complete response of a first, real invocation (the admin list of connections; a \
         chat completion, streamed, against a stub OpenAI; the scheduled limit refresh), \
         DynamoDB and KMS at moto on loopback. No Firecracker microVM and no network \
         round trip to AWS: compare with the published Rust anchors (hello world ~13 ms, \
         axum ~19 ms) only roughly. Sizes in bytes: as built, stripped (`strip`), zipped \
         (a zip with the single file `bootstrap`, deflate, as SAM uploads it). Targets: \
         median init < 20 ms, zipped < 6 MB (6,000,000 bytes).\n\n",
        arch = std::env::consts::ARCH,
    );
    out.push_str(&table(
        &[
            "function",
            "exec → first poll ms (min / median / max)",
            "exec → first response ms (min / median / max)",
            "bootstrap bytes",
            "stripped bytes",
            "zipped bytes",
            "targets",
        ],
        &rows,
    ));
    Ok(out)
}

/// `<dir>/<bin>/bootstrap`, or else `<dir>/<bin>`.
fn bootstrap_path(dir: &Path, function: &str) -> BenchResult<PathBuf> {
    let lambda = dir.join(function).join("bootstrap");
    if lambda.is_file() {
        return Ok(lambda);
    }
    let plain = dir.join(function);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(format!(
        "no bootstrap for {function}: neither {} nor {} is a file (build with `cargo lambda \
         build --release`, or `cargo build --release -p vmx-fn-{function}` and pass \
         --bootstraps target/release)",
        lambda.display(),
        plain.display()
    )
    .into())
}

#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    bootstrap: u64,
    stripped: u64,
    zipped: u64,
}

/// The bootstrap's size, stripped and zipped (the stripped file, as `bootstrap`).
async fn sizes_of(function: &str, path: &Path, tmp: &Path) -> BenchResult<Sizes> {
    let bootstrap = std::fs::metadata(path)?.len();
    let stripped_path = tmp.join(format!("{function}-stripped"));
    run_tool(
        tokio::process::Command::new("strip")
            .arg("-o")
            .arg(&stripped_path)
            .arg(path),
    )
    .await?;
    let stripped = std::fs::metadata(&stripped_path)?.len();
    let zip_path = tmp.join(format!("{function}.zip"));
    run_tool(
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1],'w',zipfile.ZIP_DEFLATED); \
                 z.write(sys.argv[2],'bootstrap'); z.close()",
            )
            .arg(&zip_path)
            .arg(&stripped_path),
    )
    .await?;
    let zipped = std::fs::metadata(&zip_path)?.len();
    Ok(Sizes {
        bootstrap,
        stripped,
        zipped,
    })
}

async fn run_tool(cmd: &mut tokio::process::Command) -> BenchResult<()> {
    let what = format!("{:?}", cmd.as_std());
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Min, median and max of a run's timings, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    min_us: u64,
    median_us: u64,
    max_us: u64,
}

impl Summary {
    fn of(values: impl Iterator<Item = u64>) -> Self {
        let mut v: Vec<u64> = values.collect();
        v.sort_unstable();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let n = v.len();
        let median_us = if n % 2 == 1 {
            at(n / 2)
        } else {
            (at((n / 2).saturating_sub(1)) + at(n / 2)) / 2
        };
        Self {
            min_us: at(0),
            median_us,
            max_us: at(n.saturating_sub(1)),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} / {} / {}",
            ms(self.min_us),
            ms(self.median_us),
            ms(self.max_us)
        )
    }
}

/// What the functions run against: a table, a KMS key, a connection and an API key at moto,
/// and a stub OpenAI upstream.
struct Backend {
    /// Environment of every function besides the Lambda variables.
    env: Vec<(String, String)>,
    /// The issued API key, for the inference event.
    api_key: String,
    _stub: StubServer,
}

impl Backend {
    async fn setup() -> BenchResult<Self> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .ok_or(
                "AWS_ENDPOINT_URL is unset: the first invocations need moto, e.g. `moto_server \
                 -H 127.0.0.1 -p 5601 &` and AWS_ENDPOINT_URL=http://127.0.0.1:5601",
            )?;
        let sdk: SdkConfig = config_loader(&AwsOptions::default())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
            .endpoint_url(&endpoint)
            .load()
            .await;
        let stub = StubServer::start(ProviderKind::OpenAi).await;
        let vars = [("VMX_OPENAI_BASE_URL", stub.base_url.clone())];
        let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-coldstart", &vars).await;
        let admin = vmx_lambda::AwsAdapters::new(&config, sdk.clone())?
            .app_state(&config, vmx_api::providers::from_config(&config)?);
        admin
            .connections
            .create(&json!({"name": CONNECTION, "provider": "openai",
                "config": {"apiKey": "sk-coldstart"},
                "capacity": [{"period": "minute", "requests": 100000, "tokens": 100000000}]}))
            .await?;
        let now = admin.gateway.clock.now();
        let (record, key) = NewApiKey::parse(&json!({"name": "coldstart"}), now)?
            .issue(uuid::Uuid::now_v7().to_string(), now)?;
        admin.gateway.api_keys.insert(&record).await?;
        let table = config.table_name.clone().unwrap_or_default();
        let kms_key = config.kms_key_id.clone().unwrap_or_default();
        let env = [
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("VMX_TABLE_NAME", table),
            ("VMX_KMS_KEY_ID", kms_key),
            ("VMX_LOG_FORMAT", "json".to_owned()),
            ("VMX_LOG", "info".to_owned()),
            ("VMX_OPENAI_BASE_URL", stub.base_url.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Self {
            env,
            api_key: key.expose_secret().to_owned(),
            _stub: stub,
        })
    }

    /// The first invocation's event of `function`.
    fn event(&self, function: &str) -> String {
        match function {
            "connections" => LIST_EVENT.to_owned(),
            "inference" => CHAT_EVENT
                .replace("API_KEY", &self.api_key)
                .replace("CONNECTION_NAME", CONNECTION),
            _ => SCHEDULE_EVENT.to_owned(),
        }
    }
}

/// One cold start's timings, from just before the exec.
#[derive(Debug, Clone, Copy)]
struct Timing {
    first_poll_us: u64,
    response_us: u64,
}

/// What the emulator saw of the first invocation.
enum Outcome {
    Response {
        /// When the response request arrived, and when its body was complete.
        arrived: Duration,
        done: Duration,
        streaming: bool,
        body: Bytes,
    },
    Failed(String),
}

/// The Runtime API emulator's state for one cold start.
struct Emulator {
    function: String,
    request_id: String,
    start: Mutex<Instant>,
    /// The one event, taken by the first `next`; a later `next` hangs until shutdown.
    event: Mutex<Option<String>>,
    first_poll: Mutex<Option<Duration>>,
    outcome: mpsc::UnboundedSender<Outcome>,
    shutdown: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Emulator {
    fn elapsed(&self) -> Duration {
        lock(&self.start).elapsed()
    }

    fn fail(&self, why: String) {
        let _ = self.outcome.send(Outcome::Failed(why));
    }
}

fn emulator_router(emulator: Arc<Emulator>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(unexpected)
        .with_state(emulator)
}

/// `GET /runtime/invocation/next`: the event, once; then nothing until the process dies.
async fn next(State(e): State<Arc<Emulator>>) -> Response {
    let now = e.elapsed();
    lock(&e.first_poll).get_or_insert(now);
    let event = lock(&e.event).take();
    let Some(event) = event else {
        let mut shutdown = e.shutdown.clone();
        let _ = shutdown.wait_for(|down| *down).await;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline_ms = (SystemTime::now() + Duration::from_secs(30))
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let headers: [(&'static str, String); 5] = [
        ("content-type", "application/json".to_owned()),
        ("lambda-runtime-aws-request-id", e.request_id.clone()),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            format!(
                "arn:aws:lambda:us-east-1:123456789012:function:{}",
                e.function
            ),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".to_owned(),
        ),
    ];
    (StatusCode::OK, headers, event).into_response()
}

/// `POST /runtime/invocation/{id}/response`, buffered or streamed (chunked, with error
/// trailers).
async fn invocation_response(
    State(e): State<Arc<Emulator>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = e.elapsed();
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"streaming"));
    let collected = match body.collect().await {
        Ok(c) => c,
        Err(err) => {
            e.fail(format!("reading the response body: {err}"));
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let done = e.elapsed();
    if id != e.request_id {
        e.fail(format!(
            "response for request id {id}, expected {}",
            e.request_id
        ));
        return StatusCode::BAD_REQUEST.into_response();
    }
    let trailer_error = collected.trailers().and_then(|t| {
        t.get("lambda-runtime-function-error-type").map(|kind| {
            let body = t
                .get("lambda-runtime-function-error-body")
                .map(|b| String::from_utf8_lossy(b.as_bytes()).into_owned())
                .unwrap_or_default();
            format!(
                "streamed response ended with an error: {}: {body}",
                String::from_utf8_lossy(kind.as_bytes())
            )
        })
    });
    match trailer_error {
        Some(why) => e.fail(why),
        None => {
            let _ = e.outcome.send(Outcome::Response {
                arrived,
                done,
                streaming,
                body: collected.to_bytes(),
            });
        }
    }
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn invocation_error(
    State(e): State<Arc<Emulator>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    reported(
        &e,
        &format!("invocation {id} reported an error"),
        &headers,
        &body,
    )
}

async fn init_error(State(e): State<Arc<Emulator>>, headers: HeaderMap, body: Bytes) -> Response {
    reported(&e, "init error", &headers, &body)
}

/// Fails the run with an error the bootstrap reported, and acknowledges it as Lambda does.
fn reported(e: &Emulator, what: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    e.fail(format!(
        "{what} ({}): {}",
        error_type(headers),
        String::from_utf8_lossy(body)
    ));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn unexpected(State(e): State<Arc<Emulator>>, method: Method, uri: Uri) -> Response {
    e.fail(format!("unexpected Runtime API request {method} {uri}"));
    StatusCode::NOT_FOUND.into_response()
}

fn error_type(headers: &HeaderMap) -> String {
    headers
        .get("lambda-runtime-function-error-type")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "no error type".to_owned())
}

/// One cold start of `function`: its bootstrap exec'd against a fresh emulator with one
/// event, killed after its first response.
async fn cold_start(function: &str, path: &Path, backend: &Backend) -> BenchResult<Timing> {
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let emulator = Arc::new(Emulator {
        function: format!("vmx-{function}"),
        request_id: uuid::Uuid::new_v4().to_string(),
        start: Mutex::new(Instant::now()),
        event: Mutex::new(Some(backend.event(function))),
        first_poll: Mutex::new(None),
        outcome: outcome_tx,
        shutdown: shutdown_rx,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server =
        tokio::spawn(axum::serve(listener, emulator_router(emulator.clone())).into_future());

    let mut cmd = tokio::process::Command::new(path);
    cmd.env_clear();
    for inherited in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(inherited) {
            cmd.env(inherited, v);
        }
    }
    cmd.envs(backend.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", &emulator.function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", emulator.function),
        )
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("2026/01/01/[$LATEST]{}", uuid::Uuid::new_v4().simple()),
        )
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    *lock(&emulator.start) = Instant::now();
    let spawned = cmd.spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            server.abort();
            return Err(format!("exec {}: {e}", path.display()).into());
        }
    };
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());

    let outcome = tokio::time::timeout(TIMEOUT, async {
        tokio::select! {
            biased;
            o = outcome_rx.recv() => o.unwrap_or_else(|| Outcome::Failed("the emulator stopped".into())),
            status = child.wait() => Outcome::Failed(match status {
                Ok(s) => format!("the bootstrap exited ({s}) before responding"),
                Err(e) => format!("waiting for the bootstrap: {e}"),
            }),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Outcome::Failed(format!(
            "no response within {} s (first poll: {})",
            TIMEOUT.as_secs(),
            if lock(&emulator.first_poll).is_some() {
                "seen"
            } else {
                "never"
            }
        ))
    });

    let _ = child.start_kill();
    let exited = tokio::time::timeout(TIMEOUT, child.wait()).await;
    let _ = shutdown_tx.send(true);
    server.abort();
    let output = async {
        let out = stdout.await.unwrap_or_default();
        let err = stderr.await.unwrap_or_default();
        (out, err)
    };
    let (out, err) = tokio::time::timeout(TIMEOUT, output)
        .await
        .unwrap_or_default();
    let with_output = |why: String| -> String {
        format!(
            "{why}\n--- bootstrap stderr ---\n{}\n--- bootstrap stdout (logs) ---\n{}",
            tail(&err),
            tail(&out)
        )
    };
    if exited.is_err() {
        return Err(with_output("the killed bootstrap did not exit".into()).into());
    }

    let first_poll = *lock(&emulator.first_poll);
    match outcome {
        Outcome::Failed(why) => Err(with_output(why).into()),
        Outcome::Response {
            arrived,
            done,
            streaming,
            body,
        } => {
            check_response(function, streaming, &body).map_err(with_output)?;
            let first_poll =
                first_poll.ok_or_else(|| with_output("a response without a poll".into()))?;
            if arrived < first_poll {
                return Err(with_output("a response before the first poll".into()).into());
            }
            Ok(Timing {
                first_poll_us: micros(first_poll),
                response_us: micros(done),
            })
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Reads a child's pipe to its end.
fn capture<R>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf).await;
        }
        buf
    })
}

/// The last few KB of a process's output, as text.
fn tail(bytes: &[u8]) -> String {
    const KEEP: usize = 4000;
    let text = String::from_utf8_lossy(bytes);
    let skip = text.len().saturating_sub(KEEP);
    let start = (skip..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    let shown = text.get(start..).unwrap_or_default();
    if start > 0 {
        format!("[...]{shown}")
    } else {
        shown.to_owned()
    }
}

/// Whether the first invocation's response is the function's success.
fn check_response(function: &str, streaming: bool, body: &[u8]) -> Result<(), String> {
    let text = || String::from_utf8_lossy(body).into_owned();
    match function {
        // lambda_http, buffered: an API Gateway v2 response whose body is the list.
        "connections" => {
            if streaming {
                return Err("the connections function streamed its response".into());
            }
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| format!("response is not JSON ({e}): {}", text()))?;
            if v.get("statusCode").and_then(Value::as_u64) != Some(200) {
                return Err(format!("list of connections not 200: {}", text()));
            }
            let list: Value = v
                .get("body")
                .and_then(Value::as_str)
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let names: Vec<&str> = list
                .get("data")
                .and_then(Value::as_array)
                .map(|d| {
                    d.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            if !names.contains(&CONNECTION) {
                return Err(format!(
                    "the list does not hold connection {CONNECTION}: {}",
                    text()
                ));
            }
            Ok(())
        }
        // lambda_http, streaming: the metadata prelude (JSON), eight NULs, then the body.
        "inference" => {
            if !streaming {
                return Err("the inference function did not stream its response".into());
            }
            let split = body
                .windows(8)
                .position(|w| w == [0u8; 8])
                .ok_or_else(|| format!("no metadata prelude: {}", text()))?;
            let prelude: Value = serde_json::from_slice(body.get(..split).unwrap_or_default())
                .map_err(|e| format!("metadata prelude is not JSON ({e}): {}", text()))?;
            if prelude.get("statusCode").and_then(Value::as_u64) != Some(200) {
                return Err(format!("chat completion not 200: {}", text()));
            }
            let answer: Value =
                serde_json::from_slice(body.get(split + 8..).unwrap_or_default())
                    .map_err(|e| format!("chat completion is not JSON ({e}): {}", text()))?;
            if answer
                .get("choices")
                .and_then(Value::as_array)
                .is_none_or(|c| c.is_empty())
            {
                return Err(format!("chat completion without choices: {}", text()));
            }
            Ok(())
        }
        // lambda_runtime, buffered: the refresh report.
        _ => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| format!("response is not JSON ({e}): {}", text()))?;
            let connections = v.get("connections").and_then(Value::as_u64);
            let failed = v.get("failed").and_then(Value::as_u64);
            if connections.is_none_or(|n| n < 1) || failed != Some(0) {
                return Err(format!(
                    "refresh report without the connection, or with failures: {}",
                    text()
                ));
            }
            Ok(())
        }
    }
}
