//! Section `hotpath`: vmx's hot path beside a plain reverse proxy (nginx), in one run.
//!
//! Starts two nginx processes: the upstream (one worker; a JSON port that answers every
//! request with a fixed OpenAI `chat.completion`, an SSE port that answers with a fixed
//! streamed completion) and a plain reverse proxy to both ports (`worker_processes auto`,
//! upstream keep-alive, `proxy_buffering off` for the SSE port). Then vmx (`--vmx`), with
//! one connection per upstream port, and, after it has stopped, the same for `--vmx-before`
//! if given. Against each path (the upstream directly, the proxy, vmx, vmx before), one after
//! the other:
//!
//! - closed loop with `wrk -t1 -c16 --latency` for `--seconds`, non-streaming, then
//!   streaming: p50, p99, requests/s, non-2xx and socket errors, CPU per request;
//! - open loop ([`open_loop`]) at `--rate` (default 2,000/s), non-streaming: p50, p99,
//!   CPU per request;
//! - open loop at `--stream-rate` (default 500/s), streaming: time to the first body byte
//!   and to the last, from which the time vmx adds before the first byte and per SSE event.
//!
//! CPU per request is the utime + stime of the measured process tree (vmx; the proxy's
//! master and workers; for the direct rows the upstream's), read from `/proc/<pid>/stat`
//! before and after a run, divided by the requests of the run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};

use crate::BenchResult;
use crate::overhead::gateways::{Vmx, VmxSetup, free_port, wait_ready};
use crate::overhead::load::{RunStats, Target, open_loop};
use crate::report::{ms, num, opt, table};
use crate::upstream::{completion_json, stream_events};

/// The model of every request (the static upstream ignores it).
const MODEL: &str = "gpt-4o-mini";
/// Content chunks of the streamed answer; the SSE events are these, the finish chunk, the
/// usage chunk and `[DONE]`.
const CONTENT_CHUNKS: usize = 20;
const SSE_EVENTS: usize = CONTENT_CHUNKS + 3;
/// wrk's threads and connections (closed loop).
const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 16;
/// The targets, closed loop: vmx's requests/s at least this share of the proxy's,
/// and its p99 at most this multiple of the proxy's.
const RPS_SHARE_TARGET: f64 = 0.5;
const P99_FACTOR_TARGET: f64 = 3.0;

struct Options {
    vmx: PathBuf,
    before: Option<PathBuf>,
    before_label: String,
    seconds: u64,
    rate: u64,
    stream_rate: u64,
    nginx: PathBuf,
    wrk: PathBuf,
    /// The bare forwarder (`vmx-forward`), by default beside this binary.
    forward: PathBuf,
}

impl Options {
    fn parse(args: &[String]) -> BenchResult<Self> {
        let default_nginx = if Path::new("/usr/sbin/nginx").exists() {
            "/usr/sbin/nginx"
        } else {
            "nginx"
        };
        let o = Self {
            vmx: PathBuf::from(opt(args, "--vmx").unwrap_or("target/release/vmx")),
            before: opt(args, "--vmx-before").map(PathBuf::from),
            before_label: opt(args, "--before-label")
                .unwrap_or("vmx before")
                .to_owned(),
            seconds: num(args, "--seconds", 10)?,
            rate: num(args, "--rate", 2000)?,
            stream_rate: num(args, "--stream-rate", 500)?,
            nginx: PathBuf::from(opt(args, "--nginx").unwrap_or(default_nginx)),
            wrk: PathBuf::from(opt(args, "--wrk").unwrap_or("wrk")),
            forward: match opt(args, "--forward") {
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe()?.with_file_name("vmx-forward"),
            },
        };
        if o.seconds == 0 || o.rate == 0 || o.stream_rate == 0 {
            return Err("--seconds, --rate and --stream-rate must be positive".into());
        }
        Ok(o)
    }
}

/// What every run of the section shares.
struct Ctx<'a> {
    o: &'a Options,
    client: crate::overhead::load::Client,
    /// The section's temporary directory.
    dir: &'a Path,
    /// µs per /proc clock tick.
    tick_us: f64,
}

/// One path to the upstream: where its requests go and whose CPU is measured.
struct PathSpec {
    label: String,
    json_url: String,
    sse_url: String,
    auth: String,
    json_model: String,
    sse_model: String,
    /// The root of the measured process tree.
    pid: Option<u32>,
}

/// What wrk measured in one closed-loop run.
struct Wrk {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    /// wrk's "Socket errors" line, if it printed one.
    socket_line: Option<String>,
    cpu_us_per_request: Option<f64>,
}

impl Wrk {
    fn errors(&self) -> String {
        if self.non_2xx == 0 && self.socket_errors == 0 {
            return "none".into();
        }
        let mut parts = Vec::new();
        if self.non_2xx > 0 {
            parts.push(format!("**{} non-2xx**", self.non_2xx));
        }
        if let Some(line) = &self.socket_line {
            parts.push(format!("**{line}**"));
        }
        parts.join(", ")
    }

    fn failed(&self) -> bool {
        self.non_2xx > 0 || self.socket_errors > 0
    }
}

/// An open-loop run with the CPU it cost.
struct Open {
    stats: RunStats,
    cpu_us_per_request: Option<f64>,
}

/// Everything measured on one path.
struct Measured {
    label: String,
    closed_json: Wrk,
    closed_stream: Wrk,
    fixed: Open,
    stream: Open,
}

/// The clock ticks per second of /proc's CPU times, and whether that was assumed.
fn clock_ticks() -> (f64, bool) {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .map_or((100.0, true), |t| (t, false))
}

/// utime + stime (clock ticks) of `pid` and its descendants; threads are in their process's.
fn tree_ticks(pid: u32) -> Option<u64> {
    let own = own_ticks(pid)?;
    Some(
        own + tree_pids(pid)
            .iter()
            .skip(1)
            .filter_map(|c| own_ticks(*c))
            .sum::<u64>(),
    )
}

/// utime + stime (clock ticks) of `pid` alone.
fn own_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `pid` and its descendants (children of its main thread, recursively).
fn tree_pids(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    out
}

/// Measures the CPU of the tree under `pid` over `run`: µs per request, with the number of
/// requests the run returns.
struct CpuMeter {
    pid: Option<u32>,
    start: Option<u64>,
    tick_us: f64,
}

impl CpuMeter {
    fn start(pid: Option<u32>, tick_us: f64) -> Self {
        Self {
            pid,
            start: pid.and_then(tree_ticks),
            tick_us,
        }
    }

    fn per_request(&self, requests: u64) -> Option<f64> {
        let end = tree_ticks(self.pid?)?;
        let ticks = end.checked_sub(self.start?)?;
        (requests > 0).then(|| ticks as f64 * self.tick_us / requests as f64)
    }
}

/// A child nginx (master and workers), stopped by its PID.
struct Nginx {
    child: Child,
    stopped: bool,
}

impl Nginx {
    /// Writes `dir/nginx.conf` with `workers` and the `http` block's `servers`, starts
    /// nginx on it and waits until each of `ready` answers.
    async fn start(
        bin: &Path,
        dir: &Path,
        workers: &str,
        servers: &str,
        ready: &[String],
    ) -> BenchResult<Self> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\n\
             master_process on;\n\
             worker_processes {workers};\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20 access_log off;\n\
             \x20 client_body_temp_path {d}/client_body;\n\
             \x20 proxy_temp_path {d}/proxy;\n\
             \x20 keepalive_requests 1000000;\n\
             \x20 keepalive_timeout 75s;\n\
             {servers}\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {}: {e} (install it: apt-get install -y nginx-light)",
                    bin.display()
                )
            })?;
        for url in ready {
            if let Err(e) = wait_ready(url, &mut child, "nginx", Duration::from_secs(10)).await {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                let _ = child.kill().await;
                return Err(format!("{e}; its error log:\n{log}").into());
            }
        }
        Ok(Self {
            child,
            stopped: false,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM to the master (which stops its workers), then SIGKILL to whatever of the
    /// tree is left after 5 s.
    async fn stop(&mut self) {
        self.stopped = true;
        let Some(pid) = self.child.id() else { return };
        let tree = tree_pids(pid);
        signal("TERM", &[pid]);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let left: Vec<u32> = tree
            .into_iter()
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .collect();
        signal("KILL", &left);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if !self.stopped
            && let Some(pid) = self.child.id()
        {
            signal("TERM", &[pid]);
        }
    }
}

/// Sends `sig` to `pids` (the shell's `kill`, a builtin everywhere).
fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} {} 2>/dev/null", list.join(" ")))
        .status();
}

/// A string as an nginx single-quoted parameter (the bodies hold no `'`, `\` or `$`).
fn nginx_quoted(s: &str) -> BenchResult<String> {
    if s.contains(['\'', '\\', '$']) {
        return Err("an nginx body may not contain ', \\ or $".into());
    }
    Ok(format!("'{}'", s.replace('\n', "\\n")))
}

/// The upstream's two servers. nginx reads a configuration parameter into a 4 KiB buffer,
/// so the SSE body (about 5 KiB) is one variable per event, joined in `return`.
fn upstream_servers(json_port: u16, sse_port: u16) -> BenchResult<String> {
    let mut sets = String::new();
    let mut joined = String::new();
    for (i, e) in stream_events(CONTENT_CHUNKS).iter().enumerate() {
        writeln!(
            sets,
            "    set $e{i} {};",
            nginx_quoted(&format!("data: {e}\n\n"))?
        )?;
        write!(joined, "$e{i}")?;
    }
    Ok(format!(
        "  server {{\n\
         \x20   listen 127.0.0.1:{json_port};\n\
         \x20   default_type application/json;\n\
         \x20   location / {{ return 200 {}; }}\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{sse_port};\n\
         \x20   default_type text/event-stream;\n\
         \x20   location / {{\n\
         {sets}\
         \x20     return 200 \"{joined}\";\n\
         \x20   }}\n\
         \x20 }}\n",
        nginx_quoted(&completion_json().to_string())?,
    ))
}

/// The reverse proxy's two servers, one per upstream port.
fn proxy_servers(json_up: u16, sse_up: u16, json_port: u16, sse_port: u16) -> String {
    format!(
        "  upstream json_upstream {{ server 127.0.0.1:{json_up}; keepalive 64; }}\n\
         \x20 upstream sse_upstream {{ server 127.0.0.1:{sse_up}; keepalive 64; }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{json_port};\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://json_upstream;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20   }}\n\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{sse_port};\n\
         \x20   location / {{\n\
         \x20     proxy_pass http://sse_upstream;\n\
         \x20     proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n\
         \x20     proxy_buffering off;\n\
         \x20   }}\n\
         \x20 }}\n"
    )
}

/// The closed-loop request body.
fn request_body(model: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 64,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// A wrk duration ("812.00us", "1.20ms", "2.00s", "1.00m") in µs.
fn wrk_duration_us(s: &str) -> Option<f64> {
    let (value, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else if let Some(v) = s.strip_suffix('h') {
        (v, 3600e6)
    } else {
        return None;
    };
    value.parse::<f64>().ok().map(|v| v * scale)
}

/// The figures of wrk's `--latency` report.
fn parse_wrk(out: &str) -> BenchResult<Wrk> {
    let mut w = Wrk {
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        rps: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: 0,
        socket_line: None,
        cpu_us_per_request: None,
    };
    let mut in_distribution = false;
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if t.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && words.len() == 2 && words[0].ends_with('%') {
            let us = wrk_duration_us(words[1]);
            match words[0] {
                "50%" => w.p50_us = us.unwrap_or(f64::NAN),
                "99%" => w.p99_us = us.unwrap_or(f64::NAN),
                _ => {}
            }
        } else if words.get(1) == Some(&"requests") && words.get(2) == Some(&"in") {
            in_distribution = false;
            w.requests = words[0].parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            w.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            w.socket_line = Some(format!("socket errors: {}", v.trim()));
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        }
    }
    if w.requests == 0 || w.rps.is_nan() || w.p99_us.is_nan() {
        return Err(format!("could not read wrk's report:\n{out}").into());
    }
    Ok(w)
}

/// Closed loop with wrk against `url`: POST `body` with `auth`, for `seconds`.
async fn wrk(
    cx: &Ctx<'_>,
    name: &str,
    url: &str,
    auth: &str,
    body: &Value,
    pid: Option<u32>,
) -> BenchResult<Wrk> {
    let o = cx.o;
    let script = cx.dir.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {auth}\"\n\
             wrk.body = [==[{body}]==]\n"
        ),
    )?;
    let cpu = CpuMeter::start(pid, cx.tick_us);
    let out = Command::new(&o.wrk)
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{}s", o.seconds))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            format!(
                "running {}: {e} (install it: apt-get install -y wrk)",
                o.wrk.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk {url}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut w = parse_wrk(&stdout)?;
    w.cpu_us_per_request = cpu.per_request(w.requests);
    eprintln!(
        "  {name:>24} wrk: p50 {:.0} µs p99 {:.0} µs, {:.0}/s, errors: {}, CPU {} µs/request",
        w.p50_us,
        w.p99_us,
        w.rps,
        w.errors(),
        w.cpu_us_per_request
            .map_or("?".into(), |c| format!("{c:.1}"))
    );
    Ok(w)
}

/// Open loop at `rate` for `--seconds`, with the CPU of the tree under `pid`.
async fn open(
    cx: &Ctx<'_>,
    target: &Target,
    rate: u64,
    stream: bool,
    pid: Option<u32>,
) -> BenchResult<Open> {
    let cpu = CpuMeter::start(pid, cx.tick_us);
    let duration = Duration::from_secs(cx.o.seconds);
    let stats = open_loop(&cx.client, target, rate, duration, stream).await?;
    let cpu_us_per_request = cpu.per_request(stats.sent);
    Ok(Open {
        stats,
        cpu_us_per_request,
    })
}

/// Every measurement on one path, one after the other.
async fn measure(cx: &Ctx<'_>, slug: &str, p: &PathSpec) -> BenchResult<Measured> {
    eprintln!("hotpath: {}", p.label);
    let target = |url: &str, model: &str| Target {
        name: slug.to_owned(),
        url: url.to_owned(),
        auth: p.auth.clone(),
        model: model.to_owned(),
    };
    let json_target = target(&p.json_url, &p.json_model);
    let sse_target = target(&p.sse_url, &p.sse_model);
    // Warm-up: connections, pools and caches, before anything is measured.
    let warm = Duration::from_secs(1);
    open_loop(&cx.client, &json_target, 200, warm, false).await?;
    open_loop(&cx.client, &sse_target, 200, warm, true).await?;
    let closed_json = wrk(
        cx,
        &format!("{slug}-json"),
        &p.json_url,
        &p.auth,
        &request_body(&p.json_model, false),
        p.pid,
    )
    .await?;
    let closed_stream = wrk(
        cx,
        &format!("{slug}-stream"),
        &p.sse_url,
        &p.auth,
        &request_body(&p.sse_model, true),
        p.pid,
    )
    .await?;
    let fixed = open(cx, &json_target, cx.o.rate, false, p.pid).await?;
    let stream = open(cx, &sse_target, cx.o.stream_rate, true, p.pid).await?;
    Ok(Measured {
        label: p.label.clone(),
        closed_json,
        closed_stream,
        fixed,
        stream,
    })
}

/// vmx (`bin`) in front of the upstream's two ports, measured, then stopped.
async fn measure_vmx(
    cx: &Ctx<'_>,
    bin: &Path,
    slug: &str,
    label: String,
    ports: (u16, u16),
) -> BenchResult<Measured> {
    let dir = cx.dir;
    let capacity: Vec<Value> = ["minute", "day", "lifetime"]
        .iter()
        .map(|period| {
            json!({"period": period, "requests": 1_000_000_000_u64,
                   "tokens": 1_000_000_000_000_u64})
        })
        .collect();
    let openai_base = format!("http://127.0.0.1:{}/v1", ports.0);
    let groq_base = format!("http://127.0.0.1:{}/v1", ports.1);
    let data = dir.join(slug);
    let log = dir.join(format!("{slug}.log"));
    let mut vmx = Vmx::launch(&VmxSetup {
        bin,
        data: &data,
        openai_base: &openai_base,
        groq_base: &groq_base,
        connections: ["hp", "hps"],
        capacity,
        sync_interval_ms: None,
        env: &[],
        log: Some(&log),
    })
    .await?;
    let url = format!("{}/v1/chat/completions", vmx.base);
    let spec = PathSpec {
        label,
        json_url: url.clone(),
        sse_url: url,
        auth: vmx.api_key.clone(),
        json_model: format!("hp/{MODEL}"),
        sse_model: format!("hps/{MODEL}"),
        pid: vmx.pid(),
    };
    let measured = measure(cx, slug, &spec).await;
    vmx.stop().await;
    let measured = measured?;
    let vmx_log = std::fs::read_to_string(&log).unwrap_or_default();
    if !vmx_log.trim().is_empty() {
        eprintln!(
            "hotpath: {slug} logged (warn and above), first lines:\n{}",
            vmx_log.lines().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(measured)
}

/// The row of the bare forwarder: the floor of vmx's own stack.
const FORWARDER: &str = "axum + reqwest forwarder";

/// The bare axum + reqwest forwarder (`vmx-forward`) in front of the upstream's two ports,
/// measured, then stopped.
async fn measure_forward(cx: &Ctx<'_>, ports: (u16, u16)) -> BenchResult<Measured> {
    let (json_port, sse_port) = (free_port()?, free_port()?);
    let route = |listen: u16, up: u16| {
        format!("127.0.0.1:{listen}=http://127.0.0.1:{up}/v1/chat/completions")
    };
    let bin = &cx.o.forward;
    let mut child = Command::new(bin)
        .arg(route(json_port, ports.0))
        .arg(route(sse_port, ports.1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "starting {}: {e} (build it: cargo build --profile harness -p vmx-bench)",
                bin.display()
            )
        })?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
    }
    if line.trim() != "ready" {
        let _ = child.kill().await;
        return Err(format!("{} did not start (printed {line:?})", bin.display()).into());
    }
    let url = |port: u16| format!("http://127.0.0.1:{port}/v1/chat/completions");
    let spec = PathSpec {
        label: FORWARDER.into(),
        json_url: url(json_port),
        sse_url: url(sse_port),
        auth: "sk-hotpath".into(),
        json_model: MODEL.into(),
        sse_model: MODEL.into(),
        pid: child.id(),
    };
    let measured = measure(cx, "forward", &spec).await;
    let _ = child.kill().await;
    measured
}

/// The first line of `bin -v`-style output (stdout or stderr).
fn version(bin: &Path, arg: &str) -> String {
    std::process::Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, m)| m.trim().to_owned());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or("unknown memory".into(), |kib| {
            format!("{:.1} GiB", kib / 1_048_576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |k| k.trim().to_owned());
    format!("{cores} cores ({model}), {mem}, Linux {kernel}")
}

fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("unknown".into(), |v| format!("{v:.digits$}"))
}

fn ms_f(us: f64) -> String {
    if us.is_finite() {
        format!("{:.3}", us / 1000.0)
    } else {
        "unknown".into()
    }
}

fn open_errors(s: &RunStats) -> String {
    if s.errors == 0 {
        "none".into()
    } else {
        format!(
            "**{} of {} failed** ({} shed: 503 `overloaded`; {} without an HTTP answer)",
            s.errors, s.sent, s.shed, s.connection_errors
        )
    }
}

/// µs difference `a − b` with its sign.
fn signed_us(a: u64, b: u64) -> i64 {
    a as i64 - b as i64
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "unknown".into()
    }
}

/// The Markdown report.
fn render(
    o: &Options,
    args: &[String],
    nginx_version: &str,
    wrk_version: &str,
    tick: (f64, bool),
    rows: &[Measured],
) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}.", machine());
    let _ = writeln!(
        out,
        "Harness command: `vmx-bench hotpath {}`; {nginx_version}; {wrk_version}.\n",
        args.join(" ")
    );
    let _ = write!(
        out,
        "The same requests, one path after the other in this one run, to a static upstream \
         and through three gateways in front of it. Nothing is pinned to a core: wrk or the \
         harness's load generator, both nginx instances, the forwarder and vmx share the machine's {cores} \
         cores, so the ratios between paths of the same run say more than the absolute \
         figures.\n\n\
         - **upstream directly**: nginx (one worker, no access log) answering every request \
         with a fixed body from `return 200`: on one port an OpenAI `chat.completion` with \
         `usage` (`application/json`), on another a `text/event-stream` body of \
         {SSE_EVENTS} events: {CONTENT_CHUNKS} `chat.completion.chunk` content chunks, the \
         finish chunk, the usage chunk (`choices: []`, as OpenAI sends with \
         `stream_options.include_usage`) and `data: [DONE]`, all in one response with a \
         `Content-Length`.\n\
         - **nginx proxy**: a second nginx (`worker_processes auto`, no access log) as a \
         plain reverse proxy to those two ports: HTTP/1.1 to the upstream with up to 64 idle \
         keep-alive connections, `proxy_buffering off` for the SSE port.\n\
         - **{FORWARDER}**: `vmx-forward` (bench/src/forward.rs), the floor of vmx's own \
         stack: the same parts as the local server (axum on hyper, reqwest with rustls, \
         tokio's multi-threaded runtime, mimalloc, `TCP_NODELAY`) doing nothing but \
         forwarding each request's body, `authorization` and `content-type` to the same \
         upstream port and streaming the answer back: no key, no admission, no parsing, no \
         usage.\n\
         - **vmx**: the `--vmx` binary, `VMX_LOG=warn`, its embedded store in its own data \
         directory; connection `hp` (provider openai, `VMX_OPENAI_BASE_URL` = the JSON \
         port) and `hps` (provider groq, same OpenAI wire format, `VMX_GROQ_BASE_URL` = the \
         SSE port), each with request and token windows per minute, day and lifetime \
         (limits of 10⁹ requests and 10¹² tokens, never reached), and an API key. Each \
         request is authenticated, admitted against those windows, forwarded, and its \
         usage recorded.\n"
    );
    if o.before.is_some() {
        let _ = writeln!(
            out,
            "- **{}**: the `--vmx-before` binary, set up the same way, started after vmx \
             stopped (never both at once).",
            o.before_label
        );
    }
    let (ticks, assumed) = tick;
    let _ = write!(
        out,
        "\nCPU µs/request: utime + stime of the measured process tree (vmx; the proxy's \
         master and workers; for the direct rows the upstream nginx's), from \
         `/proc/<pid>/stat` before and after the run, divided by the run's requests (wrk: \
         those it completed; open loop: those sent). /proc counts in clock ticks of 1/{ticks:.0} s \
         ({}), so short runs round.\n",
        if assumed {
            "`getconf CLK_TCK` failed: 100 per second assumed"
        } else {
            "`getconf CLK_TCK`"
        }
    );
    closed_loop(o, rows, &mut out);
    fixed_rate(o, rows, &mut out);
    streaming(o, rows, &mut out);
    out
}

/// a. Closed loop: every path, then the targets (vmx against the proxy).
fn closed_loop(o: &Options, rows: &[Measured], out: &mut String) {
    let s = o.seconds;
    let _ = write!(
        out,
        "\n### Closed loop (wrk)\n\n\
         `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{s}s --latency`, after a 1 s warm-up at \
         200/s per mode: {WRK_CONNECTIONS} connections, each sending its next request when \
         the previous answer is complete. POST `/v1/chat/completions` with \
         `{{\"model\": …, \"messages\": [{{\"role\": \"user\", \"content\": \"Say \
         hello.\"}}], \"max_tokens\": 64}}` and a bearer token (vmx: its API key, models \
         `hp/{MODEL}` and `hps/{MODEL}`); streaming adds `\"stream\": true, \
         \"stream_options\": {{\"include_usage\": true}}` and goes to the SSE port. Latency \
         as wrk reports it (its `--latency` distribution); errors: wrk's `Non-2xx or 3xx \
         responses` and `Socket errors` lines (wrk checks neither the body nor its \
         completeness).\n\n"
    );
    let mut closed_rows = Vec::new();
    for stream in [false, true] {
        for m in rows {
            let w = if stream {
                &m.closed_stream
            } else {
                &m.closed_json
            };
            closed_rows.push(vec![
                m.label.clone(),
                if stream { "streaming" } else { "non-streaming" }.into(),
                ms_f(w.p50_us),
                ms_f(w.p99_us),
                format!("{:.0}", w.rps),
                w.errors(),
                opt_f(w.cpu_us_per_request, 1),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "path",
            "mode",
            "p50 ms",
            "p99 ms",
            "requests/s",
            "non-2xx / socket errors",
            "CPU µs/request",
        ],
        &closed_rows,
    ));
    if rows
        .iter()
        .any(|m| m.closed_json.failed() || m.closed_stream.failed())
    {
        out.push_str(
            "\nRows with errors count the failed requests in their requests/s and latencies.\n",
        );
    }

    // What vmx's own work costs: vmx against the floor of its stack.
    let floor = rows.iter().find(|m| m.label == FORWARDER);
    if let (Some(f), Some(v), Some(p)) = (
        floor,
        rows.iter().find(|m| m.label == "vmx"),
        rows.iter().find(|m| m.label == "nginx proxy"),
    ) {
        out.push_str(
            "\nThe floor of vmx's stack (closed loop, the bare forwarder against the nginx proxy, \
             and vmx against the forwarder):\n\n",
        );
        for (mode, pw, fw, vw) in [
            (
                "non-streaming",
                &p.closed_json,
                &f.closed_json,
                &v.closed_json,
            ),
            (
                "streaming",
                &p.closed_stream,
                &f.closed_stream,
                &v.closed_stream,
            ),
        ] {
            let cpu = |w: &Wrk| {
                w.cpu_us_per_request
                    .map_or("?".to_owned(), |c| format!("{c:.1}"))
            };
            let _ = writeln!(
                out,
                "- {mode}: the forwarder's requests/s = {:.0} % of the proxy's; vmx's = {:.0} % \
                 of the forwarder's; CPU µs/request: proxy {}, forwarder {}, vmx {}",
                fw.rps / pw.rps * 100.0,
                vw.rps / fw.rps * 100.0,
                cpu(pw),
                cpu(fw),
                cpu(vw),
            );
        }
    }

    // Targets: vmx against the proxy, closed loop.
    let proxy = rows.iter().find(|m| m.label == "nginx proxy");
    let vmx = rows.iter().find(|m| m.label == "vmx");
    if let (Some(p), Some(v)) = (proxy, vmx) {
        out.push_str("\nTargets (closed loop, vmx against the nginx proxy):\n\n");
        for (mode, pw, vw) in [
            ("non-streaming", &p.closed_json, &v.closed_json),
            ("streaming", &p.closed_stream, &v.closed_stream),
        ] {
            let errors = if pw.failed() || vw.failed() {
                " (this run had errors: not a valid comparison)"
            } else {
                ""
            };
            let verdict = |ok: bool| {
                if ok && errors.is_empty() {
                    "met"
                } else {
                    "**not met**"
                }
            };
            let share = vw.rps / pw.rps;
            let factor = vw.p99_us / pw.p99_us;
            let before = rows.iter().find(|m| m.label == o.before_label).map(|b| {
                let bw = if mode == "streaming" {
                    &b.closed_stream
                } else {
                    &b.closed_json
                };
                (bw.rps / pw.rps, bw.p99_us / pw.p99_us)
            });
            let _ = writeln!(
                out,
                "- {mode}: vmx requests/s = {:.0} % of the proxy's (target ≥ {:.0} %): {}{errors}{}",
                share * 100.0,
                RPS_SHARE_TARGET * 100.0,
                verdict(share >= RPS_SHARE_TARGET),
                before.map_or(String::new(), |(b, _)| format!(
                    "; {}: {:.0} %",
                    o.before_label,
                    b * 100.0
                )),
            );
            let _ = writeln!(
                out,
                "- {mode}: vmx p99 = {factor:.2}× the proxy's (target ≤ {P99_FACTOR_TARGET:.0}×): {}{errors}{}",
                verdict(factor <= P99_FACTOR_TARGET),
                before.map_or(String::new(), |(_, b)| format!(
                    "; {}: {b:.2}×",
                    o.before_label
                )),
            );
        }
    }
}

/// b. CPU per request at a fixed rate, open loop.
fn fixed_rate(o: &Options, rows: &[Measured], out: &mut String) {
    let s = o.seconds;
    let proxy = rows.iter().find(|m| m.label == "nginx proxy");
    let _ = write!(
        out,
        "\n### CPU per request at {} requests/s (open loop, non-streaming)\n\n\
         The harness's open-loop load generator (the overhead section's: request i is due at \
         start + i / rate and sent then whether or not earlier ones have answered; latency \
         from the due time to the end of the body; its body asks for `max_tokens` 32 with \
         another short prompt), {s} s per path, after the closed-loop runs.\n\n",
        o.rate
    );
    let fixed_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let st = &m.fixed.stats;
            vec![
                m.label.clone(),
                ms(st.p(50.0)),
                ms(st.p(99.0)),
                format!("{:.0}", st.achieved),
                open_errors(st),
                opt_f(m.fixed.cpu_us_per_request, 1),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "path",
            "p50 ms",
            "p99 ms",
            "achieved/s",
            "errors",
            "CPU µs/request",
        ],
        &fixed_rows,
    ));
    if let Some(p) = proxy {
        let pc = p.fixed.cpu_us_per_request;
        let lines: Vec<String> = rows
            .iter()
            .filter(|m| m.label != "nginx proxy" && m.label != "upstream directly")
            .map(|m| {
                format!(
                    "- {}: {} the proxy's CPU per request",
                    m.label,
                    ratio(
                        m.fixed.cpu_us_per_request.unwrap_or(f64::NAN),
                        pc.unwrap_or(f64::NAN)
                    )
                )
            })
            .collect();
        if !lines.is_empty() {
            out.push('\n');
            out.push_str(&lines.join("\n"));
            out.push('\n');
        }
    }
}

/// c. Streaming, open loop: time to the first and last byte, what vmx adds to each.
fn streaming(o: &Options, rows: &[Measured], out: &mut String) {
    let s = o.seconds;
    let proxy = rows.iter().find(|m| m.label == "nginx proxy");
    let _ = write!(
        out,
        "\n### Streaming: time to first byte and per-event overhead (open loop, {} requests/s)\n\n\
         The same load generator, streaming ({s} s per path; its body has `\"stream\": true` \
         and no `stream_options`). TTFB: from the due time to the first byte of the response \
         body; TTLB: to its last byte (the whole body, ending with `data: [DONE]`, is \
         checked).\n\n",
        o.stream_rate
    );
    let stream_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let st = &m.stream.stats;
            vec![
                m.label.clone(),
                format!("{} / {}", ms(st.ttfb_p(50.0)), ms(st.ttfb_p(99.0))),
                format!("{} / {}", ms(st.p(50.0)), ms(st.p(99.0))),
                format!("{:.0}", st.achieved),
                open_errors(st),
                opt_f(m.stream.cpu_us_per_request, 1),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "path",
            "TTFB p50 / p99 ms",
            "TTLB p50 / p99 ms",
            "achieved/s",
            "errors",
            "CPU µs/request",
        ],
        &stream_rows,
    ));
    if let Some(p) = proxy {
        let ps = &p.stream.stats;
        let mut lines = Vec::new();
        for m in rows
            .iter()
            .filter(|m| m.label != "nginx proxy" && m.label != "upstream directly")
        {
            let vs = &m.stream.stats;
            let per_event = ((signed_us(vs.p(50.0), vs.ttfb_p(50.0)))
                - signed_us(ps.p(50.0), ps.ttfb_p(50.0))) as f64
                / SSE_EVENTS as f64;
            lines.push(format!(
                "- {}: TTFB overhead (its TTFB − the proxy's) {:+.3} ms at p50, {:+.3} ms at \
                 p99; TTFB {} the proxy's at p50, {} at p99; TTLB {} at p50, {} at p99; \
                 per-event overhead ((TTLB − TTFB) − the proxy's (TTLB − TTFB), at p50, over \
                 {SSE_EVENTS} events) {per_event:+.1} µs",
                m.label,
                signed_us(vs.ttfb_p(50.0), ps.ttfb_p(50.0)) as f64 / 1000.0,
                signed_us(vs.ttfb_p(99.0), ps.ttfb_p(99.0)) as f64 / 1000.0,
                ratio(vs.ttfb_p(50.0) as f64, ps.ttfb_p(50.0) as f64),
                ratio(vs.ttfb_p(99.0) as f64, ps.ttfb_p(99.0) as f64),
                ratio(vs.p(50.0) as f64, ps.p(50.0) as f64),
                ratio(vs.p(99.0) as f64, ps.p(99.0) as f64),
            ));
        }
        if !lines.is_empty() {
            out.push('\n');
            out.push_str(&lines.join("\n"));
            out.push('\n');
        }
    }
}

pub async fn run(args: &[String]) -> BenchResult<String> {
    let o = Options::parse(args)?;
    let tick = clock_ticks();
    let tick_us = 1e6 / tick.0;
    let nginx_version = version(&o.nginx, "-v").replace("nginx version: ", "");
    let wrk_version = version(&o.wrk, "-v");
    let wrk_version = wrk_version
        .split(" [")
        .next()
        .unwrap_or(&wrk_version)
        .to_owned();

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    // nginx started as root runs its workers as another user: let them in.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    let (json_up, sse_up) = (free_port()?, free_port()?);
    let (json_proxy, sse_proxy) = (free_port()?, free_port()?);
    let mut upstream = Nginx::start(
        &o.nginx,
        &dir.join("upstream"),
        "1",
        &upstream_servers(json_up, sse_up)?,
        &[
            format!("http://127.0.0.1:{json_up}/"),
            format!("http://127.0.0.1:{sse_up}/"),
        ],
    )
    .await?;
    let mut proxy = Nginx::start(
        &o.nginx,
        &dir.join("proxy"),
        "auto",
        &proxy_servers(json_up, sse_up, json_proxy, sse_proxy),
        &[
            format!("http://127.0.0.1:{json_proxy}/"),
            format!("http://127.0.0.1:{sse_proxy}/"),
        ],
    )
    .await?;

    let client = crate::overhead::load::client()?;
    let path = "v1/chat/completions";
    let plain = |label: &str, json_port: u16, sse_port: u16, pid: Option<u32>| PathSpec {
        label: label.to_owned(),
        json_url: format!("http://127.0.0.1:{json_port}/{path}"),
        sse_url: format!("http://127.0.0.1:{sse_port}/{path}"),
        auth: "sk-hotpath".into(),
        json_model: MODEL.into(),
        sse_model: MODEL.into(),
        pid,
    };
    let cx = Ctx {
        o: &o,
        client,
        dir,
        tick_us,
    };
    let result = async {
        let mut rows = Vec::new();
        let direct = plain("upstream directly", json_up, sse_up, upstream.pid());
        rows.push(measure(&cx, "direct", &direct).await?);
        let via_proxy = plain("nginx proxy", json_proxy, sse_proxy, proxy.pid());
        rows.push(measure(&cx, "proxy", &via_proxy).await?);
        let ports = (json_up, sse_up);
        rows.push(measure_forward(&cx, ports).await?);
        rows.push(measure_vmx(&cx, &o.vmx, "vmx", "vmx".into(), ports).await?);
        if let Some(before) = &o.before {
            let label = o.before_label.clone();
            rows.push(measure_vmx(&cx, before, "vmx-before", label, ports).await?);
        }
        BenchResult::Ok(rows)
    }
    .await;
    proxy.stop().await;
    upstream.stop().await;
    let rows = result?;
    Ok(render(&o, args, &nginx_version, &wrk_version, tick, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() -> BenchResult<()> {
        let out = "Running 2s test @ http://127.0.0.1:1/v1/chat/completions\n\
                   \x20 1 threads and 16 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20   Latency   150.00us   50.00us   2.00ms   90.00%\n\
                   \x20   Req/Sec    50.00k     1.00k   55.00k    70.00%\n\
                   \x20 Latency Distribution\n\
                   \x20    50%  142.00us\n\
                   \x20    75%  160.00us\n\
                   \x20    90%  190.00us\n\
                   \x20    99%    1.25ms\n\
                   \x20 100000 requests in 2.00s, 50.00MB read\n\
                   \x20 Non-2xx or 3xx responses: 7\n\
                   \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Requests/sec:  50000.50\n\
                   Transfer/sec:     25.00MB\n";
        let w = parse_wrk(out)?;
        assert!((w.p50_us - 142.0).abs() < 1e-9);
        assert!((w.p99_us - 1250.0).abs() < 1e-9);
        assert!((w.rps - 50000.5).abs() < 1e-9);
        assert_eq!((w.requests, w.non_2xx, w.socket_errors), (100_000, 7, 3));
        assert!(w.failed());
        assert_eq!(wrk_duration_us("2.00s"), Some(2e6));
        assert_eq!(wrk_duration_us("1.00m"), Some(60e6));
        Ok(())
    }

    #[test]
    fn nginx_bodies_are_quoted() -> BenchResult<()> {
        let servers = upstream_servers(1, 2)?;
        assert!(servers.contains("set $e22 'data: [DONE]\\n\\n';"));
        assert_eq!(servers.matches("set $e").count(), SSE_EVENTS);
        assert!(nginx_quoted("a'b").is_err());
        Ok(())
    }
}
