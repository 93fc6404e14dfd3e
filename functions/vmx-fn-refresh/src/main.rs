//! Lambda entry point for the scheduled limit refresh.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use vmx_api::config::Config;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::from_env()?;
    vmx_lambda::init_tracing(&config);
    let sdk = vmx_lambda::sdk_config(&config).await;
    let function = vmx_fn_refresh::Function::new(&config, sdk, Default::default())?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let left = Duration::from_millis(
            u64::try_from(u128::from(event.context.deadline).saturating_sub(now_ms)).unwrap_or(0),
        );
        let report = function.handle(event.payload, left).await?;
        Ok::<Value, lambda_runtime::Error>(serde_json::to_value(report)?)
    }))
    .await
}
