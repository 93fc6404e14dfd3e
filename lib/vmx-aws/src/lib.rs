//! AWS adapters of vmx: the DynamoDB connection store, the KMS key provider, the shared SDK
//! configuration and the table schema; STS role assumption ([`sts`], which the Bedrock
//! providers of `vmx-bedrock` and [`service_quotas`] sign with).
//!
//! Architecture invariant: this crate turns every AWS failure into a `vmx_domain::Error`
//! whose detail names the operation and error code only; item contents, key material and
//! ciphertext never appear in an error or a log line.

pub mod client;
pub mod dynamo_api_keys;
pub mod dynamo_ledger;
pub mod dynamo_prioritization;
pub mod dynamo_store;
pub mod dynamo_usage;
mod error;
pub mod events;
pub mod kms;
pub mod refresh_cursor;
pub mod service_quotas;
pub mod sts;
pub mod table;

pub use client::{AwsOptions, load_sdk_config};
pub use dynamo_api_keys::DynamoApiKeyStore;
pub use dynamo_store::DynamoStore;
pub use dynamo_usage::DynamoUsageStore;
pub use error::{CallFailure, call_failure};
pub use events::EventBridgeNotifier;
pub use kms::KmsKeyProvider;
