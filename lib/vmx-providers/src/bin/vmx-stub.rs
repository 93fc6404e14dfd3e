//! `vmx-stub`: the five stub providers as one process, for end-to-end tests and benchmarks
//! that drive vmx from outside (the Python SDK tests, the load generator).
//!
//! Prints one JSON line with each stub's base URL and a control URL, then serves until
//! SIGTERM/Ctrl-C. The control server answers `GET /requests/<provider>` with the requests
//! that stub received (method, path, headers, JSON body) and `DELETE /requests/<provider>`
//! clears them.
#![allow(clippy::print_stdout, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::StubServer;

type Stubs = Arc<HashMap<&'static str, StubServer>>;

async fn requests(
    State(stubs): State<Stubs>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, StatusCode> {
    let stub = stubs.get(name.as_str()).ok_or(StatusCode::NOT_FOUND)?;
    let list: Vec<Value> = stub
        .requests()
        .into_iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "headers": r.headers.into_iter().collect::<HashMap<_, _>>(),
                "body": r.body,
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(list)))
}

async fn clear(State(stubs): State<Stubs>, Path(name): Path<String>) -> StatusCode {
    match stubs.get(name.as_str()) {
        Some(s) => {
            s.clear();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

#[tokio::main]
async fn main() {
    let mut stubs = HashMap::new();
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Groq,
        ProviderKind::Perplexity,
    ] {
        stubs.insert(kind.id(), StubServer::start(kind).await);
    }
    let stubs: Stubs = Arc::new(stubs);
    let app = Router::new()
        .route("/requests/{provider}", get(requests).delete(clear))
        .with_state(stubs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the control port");
    let control = listener.local_addr().expect("control address");
    let mut urls: HashMap<&str, String> = stubs
        .iter()
        .map(|(k, s)| (*k, s.base_url.clone()))
        .collect();
    let control_url = format!("http://{control}");
    urls.insert("control", control_url);
    println!("{}", json!(urls));
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .expect("serve");
}
