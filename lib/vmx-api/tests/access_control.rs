//! Walks the route table: every route that is not public refuses a missing, a malformed,
//! a wrong and a revoked credential, admin routes refuse gateway API keys, console pages
//! send a browser without a session to the sign-in page, and a console session cookie is
//! an admin credential but never an inference one. A route added to the table without the
//! right access level fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_app;

use axum::http::{Method, StatusCode};
use local_app::app;
use serde_json::json;
use vmx_api::{Access, route_table};

#[tokio::test]
async fn every_route_rejects_missing_malformed_wrong_and_revoked_credentials() {
    let app = app();
    let conn = app
        .post(
            "/v1/connections",
            &json!({"name": "c", "provider": "openai", "config": {"apiKey": "sk-x"}}),
        )
        .await;
    let conn_id = conn.body["id"].as_str().unwrap().to_owned();
    let key = app.post("/v1/api-keys", &json!({})).await;
    let (live_key, key_id) = (
        key.body["key"].as_str().unwrap().to_owned(),
        key.body["id"].as_str().unwrap().to_owned(),
    );
    let revoked = app.post("/v1/api-keys", &json!({})).await;
    let revoked_key = revoked.body["key"].as_str().unwrap().to_owned();
    let r = app
        .delete(&format!(
            "/v1/api-keys/{}",
            revoked.body["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let mut checked = 0;
    let table = route_table();
    assert!(table.len() >= 10, "the table lists every route");
    // A console session (cookie and CSRF token).
    let signed_in = app
        .call(
            Method::POST,
            "/console/session",
            Some(&json!({"token": local_app::TOKEN}).to_string()),
            &[("authorization", "")],
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.text);
    let cookie = signed_in.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    for route in &table {
        let path = route
            .path
            .replace("/v1/api-keys/{id}", &format!("/v1/api-keys/{key_id}"))
            .replace("{id}", &conn_id)
            .replace("/console/assets/{*path}", "/console/assets/index.html")
            .replace("{*path}", "connections/new");
        for m in route.methods {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            if route.access == Access::Public {
                let r = app
                    .call(method.clone(), &path, None, &[("authorization", "")])
                    .await;
                match (*m, path.as_str()) {
                    ("GET", "/") => {
                        assert_eq!(r.status, StatusCode::FOUND, "{m} {path}");
                    }
                    // Signing in: the token is in the body (none here).
                    ("POST", "/console/session") => {
                        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{m} {path}");
                    }
                    _ => assert_eq!(r.status, StatusCode::OK, "{m} {path} is public"),
                }
                continue;
            }
            if route.access == Access::Page {
                // Every credential but a console session goes to the sign-in page.
                for auth in ["", "Bearer wrong-token", &format!("Bearer {live_key}")] {
                    let r = app
                        .call(method.clone(), &path, None, &[("authorization", auth)])
                        .await;
                    assert_eq!(r.status, StatusCode::SEE_OTHER, "{m} {path} with {auth:?}");
                    let location = r.headers["location"].to_str().unwrap();
                    assert!(location.starts_with("/console/sign-in?next="), "{location}");
                    checked += 1;
                }
                let r = app
                    .call(
                        method.clone(),
                        &path,
                        None,
                        &[("authorization", ""), ("cookie", &cookie)],
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{m} {path} with a session");
                continue;
            }
            if route.access != Access::Session {
                // The console session cookie, without a bearer token and with the CSRF token
                // left out: inference routes refuse it; admin routes take it for reads and
                // refuse changes without the CSRF token.
                let r = app
                    .call(
                        method.clone(),
                        &path,
                        Some("{}"),
                        &[("authorization", ""), ("cookie", &cookie)],
                    )
                    .await;
                let expected = match (route.access, *m) {
                    (Access::Caller, _) => StatusCode::UNAUTHORIZED,
                    (_, "GET") => StatusCode::OK,
                    _ => StatusCode::FORBIDDEN,
                };
                assert_eq!(
                    r.status, expected,
                    "{m} {path} with the session cookie: {}",
                    r.text
                );
                checked += 1;
            }
            let bad: Vec<(&str, String)> = vec![
                ("authorization", String::new()),
                ("authorization", "Bearer".to_owned()),
                ("authorization", "Basic dXNlcjpwYXNz".to_owned()),
                ("authorization", "Bearer wrong-token".to_owned()),
                ("authorization", format!("Bearer {revoked_key}")),
                (
                    "authorization",
                    "Bearer vmx_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
                ),
            ];
            for (h, v) in &bad {
                let r = app.call(method.clone(), &path, Some("{}"), &[(h, v)]).await;
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{m} {path} with {h}: {v:?}: {}",
                    r.text
                );
                assert_eq!(r.body["error"]["code"], "unauthorized");
                checked += 1;
            }
            if matches!(route.access, Access::Admin | Access::Session) {
                // A gateway API key is not an admin credential.
                let r = app
                    .call(
                        method.clone(),
                        &path,
                        Some("{}"),
                        &[("authorization", &format!("Bearer {live_key}"))],
                    )
                    .await;
                assert_eq!(
                    r.status,
                    StatusCode::UNAUTHORIZED,
                    "{m} {path} with an API key"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 80, "{checked}");
    // Nothing was changed by the refused calls.
    assert_eq!(
        app.get(&format!("/v1/connections/{conn_id}")).await.body["version"],
        1
    );
}
