//! The one AWS SDK configuration of the process.
//!
//! Built once at start-up ([`load_sdk_config`]) and shared by every AWS client (DynamoDB, KMS,
//! STS): credentials, region and endpoints come from the standard environment
//! (`AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` as Lambda
//! sets them, profiles, `AWS_ENDPOINT_URL` and the per-service `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL_STS`, all honoured by `aws-config` itself).
//!
//! What is set here explicitly: the HTTP client (hyper + rustls with the `ring` provider, so
//! the build carries no C crypto library), the retry policy (standard mode: exponential
//! backoff with jitter, throttling errors included) and the timeouts.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// Retry and timeout policy of every AWS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsOptions {
    /// Attempts per call, the first included (standard retry mode). At least 1.
    pub max_attempts: u32,
    /// Base of the exponential backoff between attempts (jittered, doubled per attempt).
    pub initial_backoff: Duration,
    /// Upper bound of one backoff.
    pub max_backoff: Duration,
    /// Time allowed to open a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt.
    pub attempt_timeout: Duration,
    /// Time allowed for a whole call, retries included.
    pub operation_timeout: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
        }
    }
}

impl AwsOptions {
    /// Upper bound on `max_attempts`: more only piles up latency behind an API Gateway timeout.
    pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

    /// The defaults, with `max_attempts` when given (the configuration reads the standard
    /// `AWS_MAX_ATTEMPTS` variable: an explicit retry config would otherwise hide it).
    pub fn with_max_attempts(max_attempts: Option<u32>) -> Self {
        let mut options = Self::default();
        if let Some(n) = max_attempts {
            options.max_attempts = n.clamp(1, Self::MAX_ATTEMPTS_LIMIT);
        }
        options
    }

    /// The SDK retry configuration: standard mode, exponential backoff.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.clamp(1, Self::MAX_ATTEMPTS_LIMIT))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// The HTTP client of every AWS call: hyper 1 with rustls on `ring`. Connections are pooled
/// per client, so build the SDK config once and share the clients.
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The SDK config loader with vmx's HTTP client, retry policy and timeouts, everything else
/// from the environment. Callers may override more (tests set region, credentials and an
/// endpoint) before `load()`.
pub fn config_loader(options: &AwsOptions) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(options.retry_config())
        .timeout_config(options.timeout_config())
}

/// Loads the SDK configuration from the environment, with vmx's HTTP client, retry policy and
/// timeouts. Call once per process and build every client from the result.
pub async fn load_sdk_config(options: &AwsOptions) -> SdkConfig {
    config_loader(options).load().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_config_is_standard_with_backoff() {
        let options = AwsOptions {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(20),
            ..AwsOptions::default()
        };
        let rc = options.retry_config();
        assert_eq!(rc.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(rc.max_attempts(), 5);
        assert_eq!(rc.initial_backoff(), Duration::from_millis(20));
    }

    #[test]
    fn max_attempts_is_clamped() {
        let zero = AwsOptions {
            max_attempts: 0,
            ..AwsOptions::default()
        };
        assert_eq!(zero.retry_config().max_attempts(), 1);
        let many = AwsOptions {
            max_attempts: 99,
            ..AwsOptions::default()
        };
        assert_eq!(many.retry_config().max_attempts(), 10);
    }
}
