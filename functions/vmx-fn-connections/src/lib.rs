//! The connections admin API as a Lambda function: the shared router on the DynamoDB store
//! and KMS envelope encryption. Admin routes are IAM-authorized by API Gateway; the router
//! requires the caller identity the gateway passes on.

use axum::Router;
use vmx_api::Access;
use vmx_api::config::Config;
use vmx_domain::Result;

/// Builds the function's router once per cold start. It serves the admin routes; the
/// provider adapters are there for `POST /v1/connections/{id}/test`.
pub async fn app(config: &Config) -> Result<Router> {
    let aws = vmx_lambda::aws_adapters(config).await?;
    let providers = vmx_api::providers::from_config_with(config, Some(&aws.sdk))?;
    let state = aws.app_state(config, providers);
    Ok(vmx_lambda::with_lambda_context(vmx_api::router_with(
        state,
        |r| r.access != Access::Caller,
    )))
}
