//! The connections admin API as a Lambda function: the shared router on the DynamoDB store
//! and KMS envelope encryption. Admin routes are IAM-authorized by API Gateway; the router
//! requires the caller identity the gateway passes on.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use vmx_api::auth::AdminAuth;
use vmx_api::client_ip::TrustedProxies;
use vmx_api::config::Config;
use vmx_api::gateway::{Gateway, GatewayOptions};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_domain::Result;
use vmx_domain::clock::SystemClock;

/// Builds the function's router once per cold start.
pub async fn app(config: &Config) -> Result<Router> {
    let aws = vmx_lambda::aws_adapters(config).await?;
    let clock = Arc::new(SystemClock);
    let connections = Arc::new(ConnectionService::new(aws.store, aws.sealer, clock.clone()));
    // The admin function serves no inference: no provider adapters, but the ledger for the
    // capacity view.
    let gateway = Arc::new(Gateway::new(
        connections.clone(),
        aws.ledger,
        HashMap::new(),
        clock,
        GatewayOptions::default(),
    ));
    let state = AppState {
        connections,
        gateway,
        admin: AdminAuth::Gateway,
        trusted_proxies: Arc::new(TrustedProxies::default()),
        max_body_bytes: config.max_body_bytes,
    };
    Ok(vmx_lambda::with_lambda_context(router(state)))
}
