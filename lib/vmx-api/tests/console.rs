//! The web console through the real router: redirects, the shell and its assets, the
//! security headers, `config.json`, and the local session (sign-in, cookie flags, CSRF,
//! expiry on a test clock, sign-out, the sign-in throttle).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use local_app::{App, Resp, TOKEN, app_with_console};
use serde_json::json;
use time::OffsetDateTime;
use vmx_api::console::{Console, ConsoleSettings};
use vmx_domain::clock::Clock;

struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(OffsetDateTime::now_utc())))
    }
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

fn console_app(settings: ConsoleSettings, clock: Arc<ManualClock>) -> App {
    app_with_console(
        tempfile::tempdir().unwrap(),
        256 * 1024,
        Default::default(),
        Console::new(settings, clock),
    )
}

fn app() -> (App, Arc<ManualClock>) {
    let clock = ManualClock::new();
    (
        console_app(ConsoleSettings::default(), clock.clone()),
        clock,
    )
}

/// No bearer token: only what `headers` carries.
async fn anon(
    app: &App,
    method: Method,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut all = vec![("authorization", "")];
    all.extend_from_slice(headers);
    app.call(method, path, body, &all).await
}

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

fn assert_security_headers(r: &Resp) {
    let csp = header(r, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(header(r, "x-content-type-options"), "nosniff");
    assert_eq!(header(r, "referrer-policy"), "no-referrer");
    assert_eq!(header(r, "x-frame-options"), "DENY");
}

/// Signs in; returns (the `Cookie` header value, the CSRF token).
async fn sign_in(app: &App) -> (String, String) {
    let r = anon(
        app,
        Method::POST,
        "/console/session",
        Some(&json!({"token": TOKEN}).to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let set = header(&r, "set-cookie");
    let pair = set.split(';').next().unwrap().to_owned();
    (pair, r.body["csrfToken"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn root_redirects_to_the_console() {
    let (app, _) = app();
    let r = anon(&app, Method::GET, "/", None, &[]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(header(&r, "location"), "/console/");
    assert_security_headers(&r);
}

#[tokio::test]
async fn pages_need_a_session_except_sign_in_and_callback() {
    let (app, _) = app();
    for (path, next) in [
        ("/console", "/console"),
        ("/console/", "/console/"),
        ("/console/connections/new", "/console/connections/new"),
        (
            "/console/?provider=openai&q=prod",
            "/console/%3Fprovider%3Dopenai%26q%3Dprod",
        ),
        ("/console/api-keys", "/console/api-keys"),
    ] {
        let r = anon(&app, Method::GET, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            header(&r, "location"),
            format!("/console/sign-in?next={next}")
        );
        assert_security_headers(&r);
        // The admin bearer token is not a console session.
        let r = app.call(Method::GET, path, None, &[]).await;
        assert_eq!(
            r.status,
            StatusCode::SEE_OTHER,
            "{path} with the bearer token"
        );
    }
    for path in [
        "/console/sign-in",
        "/console/sign-in?next=%2Fconsole%2F",
        "/console/callback",
    ] {
        let r = anon(&app, Method::GET, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(header(&r, "content-type").starts_with("text/html"));
        assert!(r.text.contains("/console/assets/app.js"), "{}", r.text);
        assert_security_headers(&r);
    }
    let (cookie, _) = sign_in(&app).await;
    for path in [
        "/console/",
        "/console/connections/abc/edit",
        "/console/no-such-screen",
    ] {
        let r = anon(&app, Method::GET, path, None, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.text.contains("<script type=\"module\""), "{path}");
    }
}

#[tokio::test]
async fn assets_have_types_etags_and_security_headers() {
    let (app, _) = app();
    let r = anon(&app, Method::GET, "/console/assets/index.html", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert_security_headers(&r);
    let etag = header(&r, "etag").to_owned();
    assert!(etag.starts_with('"'), "{etag}");
    let r = anon(
        &app,
        Method::GET,
        "/console/assets/index.html",
        None,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.text.is_empty());
    for missing in [
        "/console/assets/no-such.js",
        "/console/assets/%2e%2e/Cargo.toml",
        "/console/assets/../Cargo.toml",
    ] {
        let r = anon(&app, Method::GET, missing, None, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(r.body["error"]["code"], "not_found");
    }
}

#[tokio::test]
async fn a_console_dir_is_read_at_request_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<p>one</p>").unwrap();
    std::fs::write(dir.path().join("app.js"), "export {};").unwrap();
    let settings = ConsoleSettings {
        assets: vmx_console::Assets::dir(dir.path()),
        ..ConsoleSettings::default()
    };
    let app = console_app(settings, ManualClock::new());
    let r = anon(&app, Method::GET, "/console/sign-in", None, &[]).await;
    assert_eq!(r.text, "<p>one</p>");
    std::fs::write(dir.path().join("index.html"), "<p>two</p>").unwrap();
    let r = anon(&app, Method::GET, "/console/sign-in", None, &[]).await;
    assert_eq!(r.text, "<p>two</p>");
    let r = anon(&app, Method::GET, "/console/assets/app.js", None, &[]).await;
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
}

#[tokio::test]
async fn config_json_says_local() {
    let (app, _) = app();
    let r = anon(&app, Method::GET, "/console/config.json", None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"mode": "local", "name": "local", "apiBase": ""})
    );
    assert_security_headers(&r);
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_token() {
    let (app, _) = app();
    let body = json!({"token": TOKEN}).to_string();
    let r = anon(&app, Method::POST, "/console/session", Some(&body), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.body["csrfToken"].as_str().unwrap().len() >= 32);
    assert!(r.body["expiresAt"].is_string());
    assert!(!r.text.contains(TOKEN));
    assert_eq!(header(&r, "cache-control"), "no-store");
    let cookie = header(&r, "set-cookie");
    assert!(cookie.starts_with("vmx_session="), "{cookie}");
    assert!(!cookie.contains(TOKEN));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert_security_headers(&r);

    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = anon(
        &app,
        Method::POST,
        "/console/session",
        Some(&body),
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(header(&r, "set-cookie").contains("; Secure"));

    // GET /console/session returns the CSRF token of the cookie's session.
    let (cookie, csrf) = sign_in(&app).await;
    let r = anon(
        &app,
        Method::GET,
        "/console/session",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["signedIn"], true);
    assert_eq!(r.body["csrfToken"], csrf.as_str());
    assert_eq!(r.body["name"], "local");
}

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused() {
    let (app, _) = app();
    let r = anon(
        &app,
        Method::POST,
        "/console/session",
        Some(r#"{"token":"wrong"}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert!(r.headers.get("set-cookie").is_none());
    for body in ["{}", r#"{"token":""}"#, r#"{"token":42}"#] {
        let r = anon(&app, Method::POST, "/console/session", Some(body), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.body["error"]["field"], "token");
    }
    for cookie in ["", "vmx_session=forged", "other=1"] {
        let r = anon(
            &app,
            Method::GET,
            "/console/session",
            None,
            &[("cookie", cookie)],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{cookie}");
    }
}

#[tokio::test]
async fn repeated_wrong_tokens_pause_sign_in() {
    let (app, clock) = app();
    let wrong = json!({"token": "guess"}).to_string();
    for _ in 0..vmx_api::session::MAX_FAILURES {
        let r = anon(&app, Method::POST, "/console/session", Some(&wrong), &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // Paused: even the right token waits.
    let right = json!({"token": TOKEN}).to_string();
    let r = anon(&app, Method::POST, "/console/session", Some(&right), &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "too_many_attempts");
    let wait: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    clock.advance(vmx_api::session::FAILURE_WINDOW + Duration::from_secs(1));
    let r = anon(&app, Method::POST, "/console/session", Some(&right), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn the_cookie_authorizes_admin_routes_with_csrf_on_changes() {
    let (app, _) = app();
    let (cookie, csrf) = sign_in(&app).await;
    let r = anon(
        &app,
        Method::GET,
        "/v1/connections",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let create =
        json!({"name": "c1", "provider": "openai", "config": {"apiKey": "sk-x"}}).to_string();
    for bad in [
        vec![],
        vec![("x-csrf-token", "wrong")],
        vec![("x-csrf-token", "")],
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(bad);
        let r = anon(
            &app,
            Method::POST,
            "/v1/connections",
            Some(&create),
            &headers,
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "csrf_failed");
    }
    // Nothing was created by the refused calls.
    assert_eq!(app.get("/v1/connections").await.body["data"], json!([]));
    let headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = anon(
        &app,
        Method::POST,
        "/v1/connections",
        Some(&create),
        &headers,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = anon(
        &app,
        Method::DELETE,
        &format!("/v1/connections/{id}"),
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = anon(
        &app,
        Method::DELETE,
        &format!("/v1/connections/{id}"),
        None,
        &headers,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // The bearer token keeps working, without any CSRF header.
    let r = app
        .post(
            "/v1/connections",
            &json!({"name": "c2", "provider": "openai", "config": {"apiKey": "sk-y"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A wrong bearer token is not rescued by a valid cookie.
    let r = app
        .call(
            Method::GET,
            "/v1/connections",
            None,
            &[("authorization", "Bearer wrong"), ("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_cookie_is_not_an_inference_credential() {
    let (app, _) = app();
    let (cookie, csrf) = sign_in(&app).await;
    let headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let r = anon(&app, Method::GET, "/v1/models", None, &headers).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let chat =
        json!({"model": "c/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = anon(
        &app,
        Method::POST,
        "/v1/chat/completions",
        Some(&chat),
        &headers,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sessions_expire_on_the_server() {
    let clock = ManualClock::new();
    let settings = ConsoleSettings {
        session_ttl: Duration::from_secs(600),
        ..ConsoleSettings::default()
    };
    let app = console_app(settings, clock.clone());
    let (cookie, _) = sign_in(&app).await;
    clock.advance(Duration::from_secs(599));
    let r = anon(
        &app,
        Method::GET,
        "/console/session",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    clock.advance(Duration::from_secs(2));
    let r = anon(
        &app,
        Method::GET,
        "/console/session",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = anon(&app, Method::GET, "/console/", None, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = anon(
        &app,
        Method::GET,
        "/v1/connections",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_out_needs_csrf_and_ends_the_session() {
    let (app, _) = app();
    let (cookie, csrf) = sign_in(&app).await;
    let (other_cookie, _) = sign_in(&app).await;
    let r = anon(
        &app,
        Method::DELETE,
        "/console/session",
        None,
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "csrf_failed");
    let r = anon(
        &app,
        Method::DELETE,
        "/console/session",
        None,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let cleared = header(&r, "set-cookie");
    assert!(
        cleared.starts_with("vmx_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for path in ["/console/session", "/v1/connections"] {
        let r = anon(&app, Method::GET, path, None, &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = anon(&app, Method::GET, "/console/", None, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // Another session is untouched.
    let r = anon(
        &app,
        Method::GET,
        "/console/session",
        None,
        &[("cookie", &other_cookie)],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}
