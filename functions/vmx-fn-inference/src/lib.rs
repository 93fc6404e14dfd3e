//! The inference API as a Lambda function behind a function URL with response streaming:
//! the caller routes of the shared router (`/v1/chat/completions`, `/v1/models`, ...),
//! authenticated by gateway API keys, on DynamoDB, KMS and the provider adapters.

use axum::Router;
use vmx_api::Access;
use vmx_api::config::Config;
use vmx_domain::Result;

/// Builds the function's router once per cold start.
pub async fn app(config: &Config) -> Result<Router> {
    let aws = vmx_lambda::aws_adapters(config).await?;
    let providers = vmx_api::providers::from_config_with(config, Some(&aws.sdk))?;
    let state = aws.app_state(config, providers);
    Ok(vmx_lambda::with_lambda_context(vmx_api::router_with(
        state,
        |r| r.access != Access::Admin,
    )))
}
