//! The inference API as a Lambda function with response streaming, behind an API Gateway
//! REST API (STREAM integrations, REST v1 events) or a function URL (payload 2.0 events):
//! the caller routes of the shared router (`/v1/chat/completions`, `/v1/models`, ...),
//! authenticated by gateway API keys, on DynamoDB, KMS and the provider adapters.

use axum::Router;
use vmx_api::Access;
use vmx_api::config::Config;
use vmx_domain::Result;

/// Builds the function's router once per cold start.
pub async fn app(config: &Config) -> Result<Router> {
    let aws = vmx_lambda::AwsAdapters::new(config, vmx_lambda::sdk_config(config).await)?;
    let state = aws.app_state(config, aws.providers(config)?);
    Ok(vmx_lambda::with_lambda_context(vmx_api::router_with(
        state,
        |r| r.access != Access::Admin,
    )))
}
