//! The pure domain of vmx: what an AI Connection is, how its input is validated, how
//! capacity windows are computed, and the ports (traits) that adapters implement.
//!
//! Architecture invariant: nothing in this crate knows AWS, HTTP or Lambda. Adapters live in
//! `vmx-local`, `vmx-aws` and `vmx-crypto`; HTTP lives in `vmx-api`.

pub mod admission;
pub mod api_key;
pub mod capacity;
pub mod clock;
pub mod connection;
pub mod discovered;
pub mod error;
pub mod inference;
pub mod json;
pub mod output;
pub mod ports;
pub mod prioritization;
pub mod provider;
pub mod secret;
pub mod usage;

pub use error::{Error, Result};
