//! Lambda entry point: configuration and clients are built once, then the router serves
//! every invocation.

use vmx_api::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let config = Config::from_env()?;
    vmx_lambda::init_tracing(&config);
    let app = vmx_fn_connections::app(&config).await?;
    lambda_http::run(app).await
}
