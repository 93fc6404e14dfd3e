//! Embedded adapters for running vmx on one machine: the connection store (and the capacity
//! ledger) in one redb database file. redb is pure Rust (no C build), ACID with serializable
//! write transactions, and crash-safe, which is what the store port's atomicity needs.

pub mod api_keys;
pub mod ledger;
pub mod prioritization;
pub mod store;
pub mod sync;
pub mod usage;

pub use api_keys::LocalApiKeyStore;
pub use store::{LocalStore, open_database};
pub use sync::LazySync;
pub use usage::LocalUsageStore;
