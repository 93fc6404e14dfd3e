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
    let aws = vmx_lambda::AwsAdapters::new(config, vmx_lambda::sdk_config(config).await)?;
    let state = aws.app_state(config, aws.providers(config)?);
    Ok(vmx_lambda::with_lambda_context(vmx_api::router_with(
        state,
        |r| r.access != Access::Caller,
    )))
}
