//! Walks the route table: every route but the health check refuses a missing, a malformed,
//! a wrong and a revoked credential, and admin routes refuse gateway API keys. A route added
//! to the table without the right access level fails here.
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
    for route in &table {
        let path = route
            .path
            .replace("/v1/api-keys/{id}", &format!("/v1/api-keys/{key_id}"))
            .replace("{id}", &conn_id);
        for m in route.methods {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            if route.access == Access::Public {
                let r = app
                    .call(method, &path, None, &[("authorization", "")])
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{m} {path} is public");
                continue;
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
            if route.access == Access::Admin {
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
