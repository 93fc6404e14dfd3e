//! The `vmx` binary as a newcomer runs it: a real process on 127.0.0.1, restarted on the same
//! data directory, with every byte it logs captured.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CANARY: &str = "sk-CANARY-e2e-7f3a9b1c2d4e";

struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Option<BufReader<std::process::ChildStderr>>,
    /// What was read from stderr before the server was handed over.
    prelude: String,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn start(dir: &std::path::Path, token: Option<&str>) -> (Server, Option<String>) {
    start_with(dir, token, &[])
}

fn start_with(
    dir: &std::path::Path,
    token: Option<&str>,
    extra: &[(&str, String)],
) -> (Server, Option<String>) {
    let addr = free_addr();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmx"));
    cmd.env_clear()
        .env("VMX_LISTEN", addr.to_string())
        .env("VMX_DATA_DIR", dir)
        .env("VMX_LOG", "debug")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("VMX_ADMIN_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A first start prints the generated token on stderr, before it listens.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut prelude = String::new();
    let printed = if token.is_none() {
        let mut found = None;
        for _ in 0..50 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            prelude.push_str(&line);
            if line.contains("generated admin token") {
                found = line.split(": ").last().map(|s| s.trim().to_owned());
                break;
            }
        }
        found
    } else {
        None
    };
    (
        Server {
            child,
            addr,
            stderr: Some(stderr),
            prelude,
        },
        printed,
    )
}

/// Sends SIGTERM and returns everything the process wrote.
fn stop(mut s: Server) -> String {
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let mut out = std::mem::take(&mut s.prelude);
    if let Some(mut o) = s.child.stdout.take() {
        o.read_to_string(&mut out).unwrap();
    }
    if let Some(mut e) = s.stderr.take() {
        e.read_to_string(&mut out).unwrap();
    }
    out
}

/// A minimal HTTP/1.1 client, so the test depends on nothing but std.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    (status, resp)
}

#[test]
fn data_survives_a_restart_and_the_canary_never_shows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = start(dir.path(), None);
    let token = token.expect("a generated token is printed at first start");
    assert!(token.starts_with("vmx_admin_"), "{token}");
    let stored = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert_eq!(stored.trim(), token);

    let mut responses = String::new();
    let body = format!(r#"{{"name":"prod","provider":"openai","config":{{"apiKey":"{CANARY}"}}}}"#);
    let (status, resp) = http(server.addr, "POST", "/v1/connections", &token, Some(&body));
    assert_eq!(status, 201, "{resp}");
    responses.push_str(&resp);
    let id = resp
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // Every error path that touches the secret.
    for (m, p, b) in [
        (
            "PATCH",
            format!("/v1/connections/{id}"),
            format!(r#"{{"config":{{"apiKey":"{CANARY}-2","bogus":1}}}}"#),
        ),
        (
            "PATCH",
            format!("/v1/connections/{id}"),
            format!(r#"{{"config":{{"apiKey":"{CANARY}"}}}}"#),
        ),
        ("POST", "/v1/connections".to_owned(), body.clone()),
        (
            "POST",
            "/v1/connections".to_owned(),
            format!(
                r#"{{"name":"x","provider":"openai","config":{{"apiKey":"{CANARY}"}},"capacity":7}}"#
            ),
        ),
        ("GET", "/v1/connections".to_owned(), String::new()),
        ("GET", format!("/v1/connections/{id}"), String::new()),
    ] {
        let (_, resp) = http(server.addr, m, &p, &token, Some(&b));
        responses.push_str(&resp);
    }
    let first_log = stop(server);

    // Restart on the same directory: the token is not printed again, the data is there.
    let (server, printed) = start(dir.path(), Some(&token));
    assert!(printed.is_none());
    let (status, resp) = http(
        server.addr,
        "GET",
        &format!("/v1/connections/{id}"),
        &token,
        None,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("\"name\":\"prod\""));
    assert!(
        resp.contains("\"version\":2"),
        "the rotation persisted: {resp}"
    );
    responses.push_str(&resp);
    let (status, _) = http(server.addr, "GET", "/v1/connections", "wrong-token", None);
    assert_eq!(status, 401);
    let second_log = stop(server);

    for (what, text) in [
        ("responses", &responses),
        ("first log", &first_log),
        ("second log", &second_log),
    ] {
        assert!(!text.contains(CANARY), "canary leaked in {what}");
    }
    assert!(
        first_log.contains("request"),
        "logs were captured: {first_log}"
    );
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "canary stored in plaintext"
        );
    }
}

#[test]
fn a_second_start_reuses_the_generated_key_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = start(dir.path(), None);
    let token = token.unwrap();
    let body = r#"{"name":"k","provider":"groq","config":{"apiKey":"gsk_x"}}"#;
    assert_eq!(
        http(server.addr, "POST", "/v1/connections", &token, Some(body)).0,
        201
    );
    stop(server);
    // No VMX_ADMIN_TOKEN: the stored token is used and not printed again.
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmx"))
        .env_clear()
        .env("VMX_LISTEN", addr.to_string())
        .env("VMX_DATA_DIR", dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, resp) = http(addr, "GET", "/v1/connections", &token, None);
    assert_eq!(status, 200);
    assert!(resp.contains("\"name\":\"k\""));
    let stderr = child.stderr.take().map(BufReader::new);
    let log = stop(Server {
        child,
        addr,
        stderr,
        prelude: String::new(),
    });
    assert!(
        !log.contains(&token),
        "the token is printed only at the first start"
    );
}

/// Runs `vmx` with `args` and `env` to completion; a process still running after a minute
/// (a server, where a command was expected) is killed and fails the test.
fn run_vmx(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmx"))
        .args(args)
        .env_clear()
        .env("VMX_LISTEN", free_addr().to_string())
        .env("VMX_DATA_DIR", dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "vmx {args:?} did not exit: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_short_admin_token_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_vmx(dir.path(), &[], &[("VMX_ADMIN_TOKEN", "hunter2-hunter2")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("VMX_ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("32"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the token is not echoed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The same for a short token file.
    std::fs::write(dir.path().join("admin.token"), "hunter2-hunter2\n").unwrap();
    let out = run_vmx(dir.path(), &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("VMX_ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the token is not echoed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_and_version_answer_without_starting_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_vmx(dir.path(), &["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "rewrap", "--version"] {
        assert!(help.contains(word), "{word} in {help}");
    }
    let out = run_vmx(dir.path(), &["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vmx {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run_vmx(dir.path(), &["rewrap", "--help"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("dynamodb"));
    let out = run_vmx(dir.path(), &["no-such-command"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // Nothing was started: no database in the data directory.
    assert!(!dir.path().join("vmx.redb").exists());
}

/// An OpenAI-compatible upstream that answers a chat completion when the bearer key is one of
/// `keys`, else 401: a 200 through vmx proves the stored key was decrypted.
fn key_checking_stub(keys: &'static [&'static str]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut length, mut authorized) = (0usize, false);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("authorization:") {
                        authorized = keys.iter().any(|k| {
                            line.trim_end() == format!("authorization: Bearer {k}")
                                || line.trim_end() == format!("Authorization: Bearer {k}")
                        });
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let (status, body) = if authorized {
                    (
                        "200 OK",
                        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
                    )
                } else {
                    ("401 Unauthorized", r#"{"error":{"message":"bad key"}}"#)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

const OLD_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const NEW_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const ADMIN: &str = "rewrap-test-admin-token-0123456789abcdef";

fn chat_status(server: &Server, connection: &str) -> (u16, String) {
    let body = format!(
        r#"{{"model":"{connection}/gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    http(
        server.addr,
        "POST",
        "/v1/chat/completions",
        ADMIN,
        Some(&body),
    )
}

#[test]
fn after_rewrap_the_old_master_key_can_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let stub = format!(
        "http://{}",
        key_checking_stub(&["sk-rewrap-a", "sk-rewrap-b"])
    );
    let env = |master: &str, previous: Option<&str>| {
        let mut v = vec![
            ("VMX_MASTER_KEY", master.to_owned()),
            ("VMX_OPENAI_BASE_URL", stub.clone()),
        ];
        if let Some(p) = previous {
            v.push(("VMX_PREVIOUS_MASTER_KEYS", p.to_owned()));
        }
        v
    };
    let (server, _) = start_with(dir.path(), Some(ADMIN), &env(OLD_KEY, None));
    for (name, key) in [("a", "sk-rewrap-a"), ("b", "sk-rewrap-b")] {
        let body =
            format!(r#"{{"name":"{name}","provider":"openai","config":{{"apiKey":"{key}"}}}}"#);
        let (status, resp) = http(server.addr, "POST", "/v1/connections", ADMIN, Some(&body));
        assert_eq!(status, 201, "{resp}");
        assert_eq!(chat_status(&server, name).0, 200);
    }
    stop(server);

    // Without the old key, nothing opens yet.
    let (server, _) = start_with(dir.path(), Some(ADMIN), &env(NEW_KEY, None));
    assert_ne!(chat_status(&server, "a").0, 200);
    stop(server);

    // Rotate: the new key current, the old one still accepted; re-wrap.
    let rewrap = |env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run_vmx(dir.path(), &["rewrap"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let first = rewrap(&env(NEW_KEY, Some(OLD_KEY)));
    assert!(
        first.contains("rewrapped 2, already current 0, failed 0"),
        "{first}"
    );
    assert!(!first.contains("sk-rewrap"), "{first}");
    // Idempotent: a second run finds nothing to do.
    let second = rewrap(&env(NEW_KEY, Some(OLD_KEY)));
    assert!(
        second.contains("rewrapped 0, already current 2, failed 0"),
        "{second}"
    );

    // Drop the old key and restart: every connection still decrypts.
    let (server, _) = start_with(dir.path(), Some(ADMIN), &env(NEW_KEY, None));
    for name in ["a", "b"] {
        let (status, resp) = chat_status(&server, name);
        assert_eq!(status, 200, "{name}: {resp}");
    }
    stop(server);
}

/// An OpenAI-compatible upstream that streams `chunks` completion chunks, `gap` apart, then
/// `[DONE]`; it serves any number of requests.
fn slow_stream_stub(chunks: usize, gap: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for i in 0..chunks {
                    let chunk = format!(
                        "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
                    );
                    if conn
                        .write_all(chunk.as_bytes())
                        .and_then(|()| conn.flush())
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(gap);
                }
                let end = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5,\"total_tokens\":8}}\n\ndata: [DONE]\n\n";
                let _ = conn.write_all(end.as_bytes());
            });
        }
    });
    addr
}

/// Starts the local server against `stub`, creates a connection and opens a streaming chat
/// completion; returns once the first chunk has arrived.
fn open_stream(
    dir: &std::path::Path,
    stub: SocketAddr,
    grace_secs: u64,
) -> (Server, TcpStream, String) {
    open_stream_with(
        dir,
        stub,
        &[("VMX_SHUTDOWN_GRACE_SECS", grace_secs.to_string())],
    )
}

const DRAIN_TOKEN: &str = "vmx-drain-test-token-0123456789abcdef";

/// [`open_stream`] with these extra variables.
fn open_stream_with(
    dir: &std::path::Path,
    stub: SocketAddr,
    extra: &[(&str, String)],
) -> (Server, TcpStream, String) {
    let token = DRAIN_TOKEN;
    let mut vars = vec![("VMX_OPENAI_BASE_URL", format!("http://{stub}/v1"))];
    vars.extend(extra.iter().cloned());
    let (server, _) = start_with(dir, Some(token), &vars);
    let body = r#"{"name":"drain","provider":"openai","config":{"apiKey":"sk-drain"}}"#;
    let (status, resp) = http(server.addr, "POST", "/v1/connections", token, Some(body));
    assert_eq!(status, 201, "{resp}");
    let mut s = TcpStream::connect(server.addr).unwrap();
    let body = r#"{"model":"drain/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("word0") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before its first chunk: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    (server, s, seen)
}

fn sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
}

#[test]
fn sigterm_drains_an_in_flight_stream_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let stub = slow_stream_stub(6, Duration::from_millis(250));
    let (server, mut s, mut seen) = open_stream(dir.path(), stub, 30);
    sigterm(&server);
    // While the stream is still being drained, the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(1);
    let refused = loop {
        if TcpStream::connect(server.addr).is_err() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(refused, "new connections are refused after SIGTERM");
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    seen.push_str(&rest);
    for i in 0..6 {
        assert!(seen.contains(&format!("word{i}")), "chunk {i} lost: {seen}");
    }
    assert!(
        seen.contains("data: [DONE]"),
        "the stream was completed: {seen}"
    );
    let log = stop(server);
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("vmx stopped"), "{log}");
}

#[test]
fn a_stream_outliving_the_grace_period_is_cut_and_the_exit_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let stub = slow_stream_stub(60, Duration::from_millis(500));
    let (mut server, mut s, mut seen) = open_stream(dir.path(), stub, 1);
    let signalled = Instant::now();
    sigterm(&server);
    let status = server.child.wait().unwrap();
    let waited = signalled.elapsed();
    assert!(
        !status.success(),
        "cut streams make a failing exit: {status}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "the grace period was honoured: {waited:?}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(
        seen.contains("word1"),
        "the stream ran during the grace period: {seen}"
    );
    assert!(!seen.contains("[DONE]"), "{seen}");
    let mut log = std::mem::take(&mut server.prelude);
    if let Some(mut e) = server.stderr.take() {
        e.read_to_string(&mut log).unwrap();
    }
    if let Some(mut o) = server.child.stdout.take() {
        o.read_to_string(&mut log).unwrap();
    }
    assert!(log.contains("shutdown grace period"), "{log}");
}

#[test]
fn past_the_in_flight_bound_requests_are_shed_with_503_and_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // A stream that stays open (a chunk a second) holds the only in-flight slot.
    let stub = slow_stream_stub(600, Duration::from_secs(1));
    let (server, stream, _) =
        open_stream_with(dir.path(), stub, &[("VMX_MAX_IN_FLIGHT", "1".to_owned())]);
    for path in ["/v1/models", "/healthz"] {
        let (status, resp) = http(server.addr, "GET", path, DRAIN_TOKEN, None);
        assert_eq!(status, 503, "{path}: {resp}");
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "overloaded", "{body}");
        assert_eq!(body["error"]["type"], "api_error", "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // Closing the stream frees its slot (at the server's next write to it): requests are
    // served again.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, resp) = http(server.addr, "GET", "/v1/models", DRAIN_TOKEN, None);
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{resp}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(server);
}

/// Sends a keep-alive `GET path` on `s` and reads its answer (head and `Content-Length`
/// body); returns the head, lower-cased.
fn get_keep_alive(s: &mut TcpStream, path: &str) -> String {
    write!(s, "GET {path} HTTP/1.1\r\nHost: vmx\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "closed before the head ended"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head
}

#[test]
fn open_connections_are_bounded_and_crowded_ones_close_after_their_response() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start_with(
        dir.path(),
        Some(DRAIN_TOKEN),
        &[("VMX_MAX_CONNECTIONS", "2".to_owned())],
    );
    // Below 90 % of the bound a connection is kept alive: once the server has seen the
    // start-up probes' connections close, `a` is the only one open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let a = loop {
        let mut a = TcpStream::connect(server.addr).unwrap();
        let head = get_keep_alive(&mut a, "/healthz");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        if !head.contains("connection: close") {
            break a;
        }
        assert!(Instant::now() < deadline, "every connection closed: {head}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The second of two slots: the answer closes the connection.
    let mut b = TcpStream::connect(server.addr).unwrap();
    let head = get_keep_alive(&mut b, "/healthz");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the closing answer");
    // `a` and an idle `c` hold both slots: `d` connects (the kernel's listen queue) but is
    // not served while they stay open.
    let c = TcpStream::connect(server.addr).unwrap();
    let mut d = TcpStream::connect(server.addr).unwrap();
    d.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    write!(d, "GET /healthz HTTP/1.1\r\nHost: vmx\r\n\r\n").unwrap();
    let mut first = [0u8; 1];
    let waited = d.read(&mut first).unwrap_err();
    assert!(
        matches!(
            waited.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{waited}"
    );
    // Closing `a` frees a slot: `d` is accepted and answered.
    drop(a);
    d.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        assert_eq!(d.read(&mut byte).unwrap(), 1);
        answer.push(byte[0]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    drop((c, d));
    stop(server);
}
