//! `vmx-bedrock-stub`: the Bedrock runtime stub as a process, for end-to-end tests that drive
//! vmx from outside (point `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` at it).
//!
//! Prints one JSON line `{"bedrock": "<url>", "requests": "<url>/__vmx/requests"}`, then
//! serves until SIGTERM/Ctrl-C. `GET` on the requests URL lists what reached the stub (method,
//! path, operation, modelId, headers, JSON body, SigV4 access key id); `DELETE` clears it.
//! Every model answers the success fixtures of `vmx_conformance::bedrock_stub`.

use std::io::Write;

use vmx_conformance::bedrock_stub::{BedrockStub, CONTROL_PATH};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let stub = BedrockStub::start().await;
    let line = serde_json::json!({
        "bedrock": stub.url,
        "requests": format!("{}{CONTROL_PATH}", stub.url),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
