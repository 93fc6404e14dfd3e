//! Lambda entry point: configuration, AWS clients, provider adapters and caches are built
//! once; responses stream (SSE) through API Gateway's STREAM integration or the function URL,
//! which read the same prelude-then-body output.

use vmx_api::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Config::from_env()?;
    vmx_lambda::init_tracing(&config);
    let app = vmx_fn_inference::app(&config).await?;
    lambda_http::run_with_streaming_response(app).await
}
