//! Conformance suites for the ports of `vmx_domain`: each adapter's tests run the same
//! cases, so the embedded and the AWS backends keep the same contract.
//!
//! This is test-support code: a failed check panics, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api_keys;
pub mod aws;
pub mod aws_stub;
pub mod bedrock_stub;
pub mod capacity;
pub mod discovered;
pub mod key_capacity;
pub mod moto_proxy;
pub mod pools;
pub mod service_quotas_stub;
pub mod store;
pub mod template;
pub mod usage;
