//! Section `aws-calls`: the AWS calls of one inference request, counted (not timed) at a
//! proxy in front of moto, on the first request of a cold instance and on warm requests,
//! non-streaming and streaming.
//!
//! The setup is the one of `functions/vmx-fn-inference/tests/hot_path.rs`: the admin side creates
//! a connection (several capacity windows) and an API key in a fresh table; a separate,
//! cold inference instance (the inference function's router, in its Lambda wrapping)
//! serves the requests. The provider is the harness's stub upstream ([`Upstream`]), which
//! notes how many AWS calls the proxy had relayed when the provider request arrived, so the
//! calls made before the provider call are counted exactly.
//!
//! Then, on the same table and key, a flood of unknown API keys at another inference
//! instance ([`crate::flood`]).
//!
//! Options: `--requests <n>` warm requests of each kind (default 20); the flood's options
//! are in [`crate::flood`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use vmx_api::config::Config;
use vmx_api::{Access, router_with};
use vmx_aws::client::{AwsOptions, config_loader};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::api_key::NewApiKey;
use vmx_domain::secret::ExposeSecret;

use crate::BenchResult;
use crate::report::{num, table};
use crate::upstream::Upstream;

/// What the provider stub saw: per request, how many AWS calls the proxy had relayed.
struct Provider {
    proxy: Arc<SerialProxy>,
    marks: Mutex<Vec<usize>>,
}

impl Provider {
    fn mark(&self) {
        let n = self.proxy.calls().len();
        if let Ok(mut m) = self.marks.lock() {
            m.push(n);
        }
    }

    fn take_marks(&self) -> Vec<usize> {
        self.marks
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

pub(crate) async fn sdk(endpoint: &str) -> SdkConfig {
    config_loader(&AwsOptions::default())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .endpoint_url(endpoint)
        .load()
        .await
}

pub(crate) struct Setup {
    pub(crate) proxy: Arc<SerialProxy>,
    provider: Arc<Provider>,
    /// Serves while the setup lives.
    _upstream: Upstream,
    /// The functions' configuration (table, KMS key, provider base URL) and AWS SDK
    /// configuration, through the proxy: another inference instance can be built from them
    /// (with other settings: `app` was built already).
    pub(crate) config: Config,
    pub(crate) sdk: SdkConfig,
    app: Router,
    /// A valid API key, allowed on the connection `prod`.
    pub(crate) key: String,
}

/// A fresh (cold) inference instance: the inference function's router in its Lambda
/// wrapping, with its own caches. Its metrics are off: in Lambda they are EMF lines on
/// stdout (no AWS call), and the harness's stdout is its report.
pub(crate) fn inference(config: &Config, sdk: SdkConfig) -> BenchResult<Router> {
    let mut state = vmx_lambda::AwsAdapters::new(config, sdk)?
        .app_state(config, vmx_api::providers::from_config(config)?);
    Arc::get_mut(&mut state.gateway)
        .ok_or("the new gateway is already shared")?
        .options
        .metrics = Arc::new(vmx_api::metrics::Metrics::off());
    Ok(vmx_lambda::with_lambda_context(router_with(state, |r| {
        r.access != Access::Admin
    })))
}

/// `POST /v1/chat/completions` for `prod/gpt-4o-mini` with a one-line message, as `key`.
pub(crate) fn chat_request(key: &str, stream: bool) -> BenchResult<Request<Body>> {
    let body = json!({"model": "prod/gpt-4o-mini", "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}]});
    Ok(Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))?)
}

async fn setup(moto: &str) -> BenchResult<Setup> {
    let proxy = Arc::new(SerialProxy::start(moto).await);
    let sdk = sdk(&proxy.url).await;
    let provider = Arc::new(Provider {
        proxy: proxy.clone(),
        marks: Mutex::new(Vec::new()),
    });
    let marker = provider.clone();
    let upstream =
        Upstream::start_with(Duration::ZERO, Some(Arc::new(move || marker.mark()))).await?;
    let vars = [("VMX_OPENAI_BASE_URL", upstream.base.clone())];
    let config = vmx_lambda::testing::config_at_moto(&sdk, "vmx-bench", &vars).await;
    // The admin side creates the connection and a key...
    let admin = vmx_lambda::AwsAdapters::new(&config, sdk.clone())?
        .app_state(&config, vmx_api::providers::from_config(&config)?);
    admin
        .connections
        .create(&json!({
            "name": "prod", "provider": "openai", "config": {"apiKey": "sk-bench"},
            "capacity": [
                {"period": "minute", "requests": 100000, "tokens": 100000000},
                {"period": "hour", "requests": 1000000, "tokens": 1000000000},
                {"period": "day", "requests": 10000000, "tokens": 10000000000u64}
            ]
        }))
        .await?;
    let now = admin.gateway.clock.now();
    let (record, key) = NewApiKey::parse(&json!({"name": "bench"}), now)
        .map_err(|e| format!("API key: {e:?}"))?
        .issue(uuid::Uuid::now_v7().to_string(), now)
        .map_err(|e| format!("API key: {e:?}"))?;
    admin.gateway.api_keys.insert(&record).await?;
    // ...and a separate, cold inference instance serves the requests.
    let app = inference(&config, sdk.clone())?;
    Ok(Setup {
        proxy,
        provider,
        _upstream: upstream,
        config,
        sdk,
        app,
        key: key.expose_secret().to_owned(),
    })
}

/// The calls of one request, split at the provider call.
struct Sample {
    before: Vec<String>,
    after: Vec<String>,
    /// `UpdateItem`s on a capacity item (`CAP#...`): the admission and the reconciliation.
    capacity_writes: usize,
    /// `UpdateItem`s storing the provider's rate limits (`disc`).
    limit_writes: usize,
}

/// One chat completion through the inference router; its AWS calls.
async fn chat(s: &Setup, stream: bool) -> BenchResult<Sample> {
    s.proxy.clear();
    s.provider.take_marks();
    let resp = s.app.clone().oneshot(chat_request(&s.key, stream)?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "chat (stream={stream}) answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )
        .into());
    }
    // Accounting is inline on Lambda (done when the body ends); wait until the proxy has
    // seen nothing new for a moment anyway, so a late write cannot escape the count.
    let mut calls = s.proxy.calls();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let again = s.proxy.calls();
        if again.len() == calls.len() {
            break;
        }
        calls = again;
    }
    let marks = s.provider.take_marks();
    let [mark] = marks[..] else {
        return Err(format!("the provider saw {} requests, not 1", marks.len()).into());
    };
    let after = calls.split_off(mark.min(calls.len()));
    Ok(Sample {
        before: calls,
        after,
        capacity_writes: s.proxy.count_with(".UpdateItem", "CAP#"),
        limit_writes: s.proxy.count_with(".UpdateItem", "disc"),
    })
}

pub(crate) const READS: [&str; 4] = [".GetItem", ".Query", ".BatchGetItem", ".Scan"];
const WRITES: [&str; 5] = [
    ".PutItem",
    ".UpdateItem",
    ".DeleteItem",
    ".TransactWriteItems",
    ".BatchWriteItem",
];

fn is_dynamo(c: &str) -> bool {
    c.starts_with("DynamoDB_20120810.")
}
pub(crate) fn is_read(c: &str) -> bool {
    is_dynamo(c) && READS.iter().any(|s| c.ends_with(s))
}
fn is_write(c: &str) -> bool {
    is_dynamo(c) && WRITES.iter().any(|s| c.ends_with(s))
}
fn is_kms(c: &str) -> bool {
    c.starts_with("TrentService.")
}
/// STS is the one query-protocol API vmx calls (`Action=AssumeRole`).
fn is_sts(c: &str) -> bool {
    c.starts_with("Action=") || c.contains("AWSSecurityTokenService")
}

/// Per-sample counts of one kind of call.
#[derive(Default)]
struct Counts {
    reads: Vec<usize>,
    writes_before: Vec<usize>,
    writes_after: Vec<usize>,
    kms: Vec<usize>,
    sts: Vec<usize>,
    other: Vec<usize>,
    total: Vec<usize>,
    capacity_writes: Vec<usize>,
    limit_writes: Vec<usize>,
}

impl Counts {
    fn add(&mut self, s: &Sample) {
        let all = || s.before.iter().chain(&s.after).map(String::as_str);
        let n = |f: fn(&str) -> bool| all().filter(|c| f(c)).count();
        self.reads.push(n(is_read));
        self.writes_before
            .push(s.before.iter().filter(|c| is_write(c)).count());
        self.writes_after
            .push(s.after.iter().filter(|c| is_write(c)).count());
        self.kms.push(n(is_kms));
        self.sts.push(n(is_sts));
        self.other.push(n(|c| {
            !(is_read(c) || is_write(c) || is_kms(c) || is_sts(c))
        }));
        self.total.push(all().count());
        self.capacity_writes.push(s.capacity_writes);
        self.limit_writes.push(s.limit_writes);
    }
}

/// `n` when every sample has `n`, else `mean (min–max)`.
fn stat(v: &[usize]) -> String {
    let (min, max) = (
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    );
    if min == max {
        return min.to_string();
    }
    let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    format!("{mean:.2} ({min}–{max})")
}

/// The operations of one sample, e.g. `UpdateItem → [provider] → UpdateItem, PutItem`.
fn sequence(s: &Sample) -> String {
    let short = |c: &String| match c.split_once('.') {
        Some(("TrentService", op)) => format!("KMS {op}"),
        Some((_, op)) => op.to_owned(),
        None => c.clone(),
    };
    let part = |v: &[String]| {
        if v.is_empty() {
            "—".to_owned()
        } else {
            v.iter().map(short).collect::<Vec<_>>().join(", ")
        }
    };
    format!("{} → [provider] → {}", part(&s.before), part(&s.after))
}

pub async fn run(args: &[String]) -> BenchResult<String> {
    let requests: usize = num(args, "--requests", 20)?;
    let moto = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .ok_or("AWS_ENDPOINT_URL is unset: start moto (moto_server -H 127.0.0.1 -p 5000) and export AWS_ENDPOINT_URL=http://127.0.0.1:5000")?;
    eprintln!("aws-calls: setting up a table, a KMS key, a connection and a key at {moto}");
    let mut s = setup(&moto).await?;

    let mut rows = Vec::new();
    let mut sequences = Vec::new();
    eprintln!("aws-calls: cold instance, first request");
    let cold = chat(&s, false).await?;
    let mut counts = Counts::default();
    counts.add(&cold);
    sequences.push(("cold, first request".to_owned(), sequence(&cold)));
    rows.push(("cold instance, first request (non-streaming)", 1, counts));

    let mut warm_ok = true;
    for (label, stream) in [("warm, non-streaming", false), ("warm, streaming", true)] {
        eprintln!("aws-calls: {requests} {label} requests");
        let mut counts = Counts::default();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..requests {
            let sample = chat(&s, stream).await?;
            counts.add(&sample);
            let seq = sequence(&sample);
            if seen.insert(seq.clone()) {
                sequences.push((label.to_owned(), seq));
            }
        }
        warm_ok &= counts.writes_before.iter().all(|&n| n == 1)
            && counts.kms.iter().all(|&n| n == 0)
            && counts.sts.iter().all(|&n| n == 0);
        rows.push((label, requests, counts));
    }

    let header = [
        "request",
        "samples",
        "DynamoDB reads",
        "DynamoDB writes before provider",
        "DynamoDB writes after",
        "KMS",
        "STS",
        "other",
        "total AWS calls",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, n, c)| {
            vec![
                (*label).to_owned(),
                n.to_string(),
                stat(&c.reads),
                stat(&c.writes_before),
                stat(&c.writes_after),
                stat(&c.kms),
                stat(&c.sts),
                stat(&c.other),
                stat(&c.total),
            ]
        })
        .collect();

    let mut out = String::from("## AWS calls per inference request\n\n");
    out.push_str(
        "Counted at a serializing proxy in front of moto (every `X-Amz-Target`), with the \
         inference function's router in its Lambda wrapping, a connection with minute, hour \
         and day windows (requests and tokens), and an OpenAI-compatible provider on \
         loopback that notes the proxy's count when its request arrives (so \"before \
         provider\" is exact). DynamoDB reads: GetItem, Query, BatchGetItem, Scan; writes: \
         PutItem, UpdateItem, DeleteItem, TransactWriteItems, BatchWriteItem. A cell is the \
         count when every sample agrees, else mean (min–max).\n\n",
    );
    out.push_str(&table(&header, &body));
    out.push_str("\nOperation sequences seen:\n\n");
    for (label, seq) in &sequences {
        out.push_str(&format!("- {label}: {seq}\n"));
    }
    out.push_str(
        "\nOf the writes, on the capacity item (`CAP#`: the admission before the call, the \
         reconciliation after it) / storing the provider's rate limits (once per change):\n\n",
    );
    for (label, _, c) in &rows {
        out.push_str(&format!(
            "- {label}: {} / {}\n",
            stat(&c.capacity_writes),
            stat(&c.limit_writes)
        ));
    }
    let warm_total = rows
        .iter()
        .skip(1)
        .flat_map(|(_, _, c)| c.total.iter().copied())
        .collect::<Vec<_>>();
    let warm_kms: usize = rows
        .iter()
        .skip(1)
        .flat_map(|(_, _, c)| c.kms.iter().copied())
        .sum();
    out.push_str(&format!(
        "\nFor comparison, VM-X AI publishes \"one KMS decrypt and four Redis calls per \
         request\"; a warm vmx instance makes {} AWS calls per request, all DynamoDB, one of \
         them before the provider call, and {} KMS calls over {} warm requests.\n",
        stat(&warm_total),
        warm_kms,
        warm_total.len(),
    ));
    out.push_str(&format!(
        "\nTarget (warm request: exactly 1 DynamoDB write before the provider call, 0 KMS, \
         0 STS): **{}**.\n",
        if warm_ok { "met" } else { "MISSED" }
    ));
    out.push_str(&crate::flood::run(&mut s, args).await?);
    Ok(out)
}
