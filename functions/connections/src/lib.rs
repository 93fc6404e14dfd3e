//! The connections admin API as a Lambda function: the shared router on the DynamoDB store
//! and KMS envelope encryption. Admin routes are IAM-authorized by API Gateway; the router
//! requires the caller identity the gateway passes on.

use std::sync::Arc;

use axum::Router;
use vmx_api::auth::AdminAuth;
use vmx_api::config::Config;
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_domain::Result;
use vmx_domain::clock::SystemClock;

/// Builds the function's router once per cold start.
pub async fn app(config: &Config) -> Result<Router> {
    let aws = vmx_lambda::aws_adapters(config).await?;
    let connections = Arc::new(ConnectionService::new(
        aws.store,
        aws.sealer,
        Arc::new(SystemClock),
    ));
    let state = AppState {
        connections,
        admin: AdminAuth::Gateway,
        max_body_bytes: config.max_body_bytes,
    };
    Ok(vmx_lambda::with_lambda_context(router(state)))
}
