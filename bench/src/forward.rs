//! `vmx-forward`: the floor of vmx's stack, for the hot-path section. A bare forwarder
//! built from the same parts as the local server (axum on hyper, reqwest with rustls,
//! tokio's multi-threaded runtime, mimalloc, `TCP_NODELAY` on accepted sockets), doing
//! nothing but forwarding: no key, no admission, no parsing of either body, no usage.
//!
//! `vmx-forward <json listen>=<json upstream URL> <sse listen>=<sse upstream URL>`: each
//! argument pairs an address to listen on with the URL every request received there is
//! POSTed to (same body, `authorization` and `content-type`); the upstream's status,
//! `content-type` and body come back, the body streamed as it arrives. Prints `ready` on
//! stdout once every listener is bound.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;

const USAGE: &str = "usage: vmx-forward <listen address>=<upstream URL>...";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: String,
}

async fn forward(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    let mut req = up.client.post(&up.url).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status());
            if let Some(v) = resp.headers().get(header::CONTENT_TYPE) {
                out = out.header(header::CONTENT_TYPE, v);
            }
            out.body(Body::from_stream(resp.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmx-forward: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut servers = Vec::new();
    for arg in std::env::args().skip(1) {
        let Some((listen, url)) = arg.split_once('=') else {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        };
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l.tap_io(|s| {
                let _ = s.set_nodelay(true);
            }),
            Err(e) => {
                eprintln!("vmx-forward: {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(forward))
            .with_state(Upstream {
                client: client.clone(),
                url: url.to_owned(),
            });
        servers.push(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ));
    }
    if servers.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    }
    println!("ready");
    for s in servers {
        if !matches!(s.await, Ok(Ok(()))) {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
