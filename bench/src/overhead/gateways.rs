//! The gateways: the local server (`vmx`) and the LiteLLM proxy as child processes, started
//! against the stub upstreams, with their readiness and memory.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::MODEL;
use crate::BenchResult;
use crate::upstream::Upstream;

/// The capacity windows of the benchmark connections: all enabled, none ever reached.
pub(super) const CAPACITY: [(&str, Option<&str>); 4] = [
    ("minute", None),
    ("hour", None),
    ("day", None),
    ("day", Some("source-ip")),
];

pub(crate) fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) async fn wait_ready(
    url: &str,
    child: &mut Child,
    what: &str,
    wait: Duration,
) -> BenchResult<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(format!("{what} exited during start: {status}").into());
        }
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer {url} within {wait:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How [`Vmx::launch`] starts the local server. Provider base URLs are deployment
/// configuration (never per connection), so a second upstream sits behind the groq adapter,
/// which speaks the same OpenAI wire format.
pub(crate) struct VmxSetup<'a> {
    pub(crate) bin: &'a Path,
    /// Its data directory (the embedded store).
    pub(crate) data: &'a Path,
    /// `VMX_OPENAI_BASE_URL`.
    pub(crate) openai_base: &'a str,
    /// `VMX_GROQ_BASE_URL`.
    pub(crate) groq_base: &'a str,
    /// The names of the two connections created: provider openai, then groq.
    pub(crate) connections: [&'a str; 2],
    /// The `capacity` of both connections, as the admin API takes it.
    pub(crate) capacity: Vec<Value>,
    /// `VMX_SYNC_INTERVAL_MS`; the server's default when `None`.
    pub(crate) sync_interval_ms: Option<u64>,
    /// Extra environment variables.
    pub(crate) env: &'a [(&'a str, String)],
    /// Where its log (stderr) goes; inherited when `None`.
    pub(crate) log: Option<&'a Path>,
}

/// The local server, a child process.
pub(crate) struct Vmx {
    child: Child,
    pub(crate) base: String,
    pub(crate) api_key: String,
}

impl Vmx {
    pub(super) async fn start(
        bin: &Path,
        data: &Path,
        instant: &Upstream,
        delayed: &Upstream,
        sync_interval_ms: Option<u64>,
    ) -> BenchResult<Self> {
        Self::start_with(bin, data, instant, delayed, sync_interval_ms, &[], None).await
    }

    /// [`Vmx::start`] with extra variables, and its log (stderr) in `log` if given.
    pub(crate) async fn start_with(
        bin: &Path,
        data: &Path,
        instant: &Upstream,
        delayed: &Upstream,
        sync_interval_ms: Option<u64>,
        env: &[(&str, String)],
        log: Option<&Path>,
    ) -> BenchResult<Self> {
        let capacity: Vec<Value> = CAPACITY
            .iter()
            .map(|(period, dimension)| {
                let mut e = json!({"period": period, "requests": 1_000_000_000_u64,
                                   "tokens": 1_000_000_000_000_u64});
                if let Some(d) = dimension {
                    e["dimension"] = json!(d);
                }
                e
            })
            .collect();
        Self::launch(&VmxSetup {
            bin,
            data,
            openai_base: &instant.base,
            groq_base: &delayed.base,
            connections: ["bench-instant", "bench-delayed"],
            capacity,
            sync_interval_ms,
            env,
            log,
        })
        .await
    }

    /// Starts vmx as `setup` says, waits until it answers, then creates its two connections
    /// and an API key through the admin API.
    pub(crate) async fn launch(setup: &VmxSetup<'_>) -> BenchResult<Self> {
        let VmxSetup { bin, data, log, .. } = *setup;
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p vmx-server`",
                bin.display()
            )
            .into());
        }
        let port = free_port()?;
        let token = format!("bench-admin-{}", uuid::Uuid::new_v4().simple());
        let base = format!("http://127.0.0.1:{port}");
        // VMX_BENCH_VMX_CPUS (a `taskset` CPU list): vmx runs on those CPUs only.
        let cpus = std::env::var("VMX_BENCH_VMX_CPUS").ok();
        let mut command = match &cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VMX_LISTEN", format!("127.0.0.1:{port}"))
            .env("VMX_DATA_DIR", data)
            .env("VMX_ADMIN_TOKEN", &token)
            .env("VMX_OPENAI_BASE_URL", setup.openai_base)
            .env("VMX_GROQ_BASE_URL", setup.groq_base)
            .env("VMX_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::inherit(),
            })
            .envs(setup.env.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        if let Some(ms) = setup.sync_interval_ms {
            command.env("VMX_SYNC_INTERVAL_MS", ms.to_string());
        }
        // Extra variables for experiments: VMX_BENCH_VMX_ENV="K=V,K2=V2".
        if let Ok(extra) = std::env::var("VMX_BENCH_VMX_ENV") {
            for (k, v) in extra.split(',').filter_map(|kv| kv.split_once('=')) {
                command.env(k, v);
            }
        }
        let mut child = command.spawn()?;
        wait_ready(
            &format!("{base}/healthz"),
            &mut child,
            "vmx",
            Duration::from_secs(20),
        )
        .await?;
        let admin = reqwest::Client::builder().no_proxy().build()?;
        let [openai, groq] = setup.connections;
        for (name, provider) in [(openai, "openai"), (groq, "groq")] {
            let r = admin
                .post(format!("{base}/v1/connections"))
                .bearer_auth(&token)
                .json(&json!({"name": name, "provider": provider,
                              "config": {"apiKey": "sk-bench-upstream"},
                              "capacity": setup.capacity}))
                .send()
                .await?;
            if r.status() != StatusCode::CREATED {
                return Err(format!("creating {name}: {} {}", r.status(), r.text().await?).into());
            }
        }
        let r = admin
            .post(format!("{base}/v1/api-keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "bench"}))
            .send()
            .await?;
        let key: Value = r.json().await?;
        let api_key = key["key"]
            .as_str()
            .ok_or("the API key response has no key")?
            .to_owned();
        Ok(Self {
            child,
            base,
            api_key,
        })
    }

    /// The server's process id (while it runs).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.child.id()?, "VmHWM:")
    }

    pub(crate) async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The resident memory of `pid` and its descendants, in KiB.
pub(super) fn rss_tree_kib(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let mut total = status_kib(pid, "VmRSS:")?;
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        total += rss_tree_kib(Some(c)).unwrap_or(0);
    }
    Some(total)
}

/// LiteLLM proxy, a child process with a config naming the two stubs.
pub(super) struct LiteLlm {
    pub(super) child: Child,
    pub(super) base: String,
}

impl LiteLlm {
    pub(super) async fn start(
        bin: &Path,
        data: &Path,
        instant: &Upstream,
        delayed: &Upstream,
    ) -> BenchResult<Self> {
        let port = free_port()?;
        let config = data.join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n\
                 \x20 - model_name: instant\n\
                 \x20   litellm_params:\n\
                 \x20     model: openai/{MODEL}\n\
                 \x20     api_base: {}\n\
                 \x20     api_key: sk-bench-upstream\n\
                 \x20 - model_name: delayed\n\
                 \x20   litellm_params:\n\
                 \x20     model: openai/{MODEL}\n\
                 \x20     api_base: {}\n\
                 \x20     api_key: sk-bench-upstream\n\
                 general_settings:\n\
                 \x20 master_key: sk-bench-master\n\
                 litellm_settings:\n\
                 \x20 telemetry: false\n\
                 \x20 set_verbose: false\n",
                instant.base, delayed.base
            ),
        )?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--num_workers")
            .arg("1")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_MODE", "PRODUCTION")
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("NO_PROXY", "*")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(
            &format!("{base}/health/liveliness"),
            &mut child,
            "litellm",
            Duration::from_secs(180),
        )
        .await?;
        Ok(Self { child, base })
    }

    pub(super) async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
