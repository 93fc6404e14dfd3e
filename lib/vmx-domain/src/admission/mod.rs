//! Admission: what one request must fit in, and what the caller is told.
//!
//! # Semantics
//!
//! Every *enabled* capacity entry of a connection is a window (see [`crate::capacity`]).
//! Entries without a dimension are connection-wide; `dimension: "source-ip"` entries keep one
//! counter per caller IP (the IP is canonicalised: `::ffff:1.2.3.4` counts as `1.2.3.4`).
//! Every window counts both requests and tokens, whichever of the two it limits, so that the
//! usage view can show both.
//!
//! A request is admitted only if every applicable window has room, and admission charges one
//! request and a token reservation to all of them atomically: all or nothing.
//!
//! # The token reservation
//!
//! The reservation is `prompt + output`, where `prompt` is the estimate of
//! [`estimate_request_tokens`] (or [`estimate_prompt_tokens`]) and `output` is what vmx will
//! send the provider as the output limit ([`crate::output::output_limit`]: the request's
//! own limit or, when it gives none, a configurable default
//! ([`DEFAULT_OUTPUT_RESERVATION`]), times the choices `n`). `max_tokens` is never
//! required. [`TokenEstimate::for_output`] counts one output token per choice with the
//! prompt (so every admitted request can be sent with a limit of at least 1); the gateway
//! then sends the provider [`Reservation::sendable_output`], so what the provider may
//! produce is never more than what was reserved.
//!
//! A window with a tokens limit `T` and `used` tokens admits the request iff
//! `used + prompt <= T`: only the prompt must fit. The output part is then capped at what
//! the tightest token window has left:
//!
//! ```text
//! output = min(max_output, min over token windows of (T - used - prompt))
//! ```
//!
//! so a connection whose token limit is smaller than the default output reservation is never
//! locked out. A prompt larger than `T` itself can never fit; [`plan`] rejects it before any
//! counter is touched, with a message that says so ([`RejectionKind::NeverFits`]).
//!
//! The cap depends on the counters, so it must be computed from the same state the charge
//! is applied to. [`AdmitRequest::decide`] is that computation, over one consistent
//! snapshot of the counters:
//! - the embedded ledger reads the counters and writes the charge in one serializable write
//!   transaction;
//! - the DynamoDB ledger is optimistic: it first charges [`AdmitRequest::optimistic_charge`]
//!   (the cap computed as if the windows were empty) with a condition per window
//!   (`used <= limit - charge`). That is the one write of the common case. When a token
//!   condition fails, the failure returns the item as it was (`ALL_OLD`); `decide` on those
//!   values gives either the rejection or a smaller, exact charge, which is retried with
//!   the same conditions. The condition makes each attempt atomic, so no interleaving can
//!   overshoot a limit.
//!
//! After the provider call, the reservation is reconciled to the reported usage
//! ([`Reservation::reconcile`]), or refunded when the call failed ([`Reservation::failed`]).
//! Admission is the only step that checks limits: a reconciliation that reports more tokens
//! than reserved can take a counter past its limit, and later requests are then rejected
//! until the window ends. Counters therefore equal the true totals once every admitted
//! request is reconciled.
//!
//! # Which window a rejection names
//!
//! When several windows are full, the rejection names the one that stays full longest
//! (lifetime first, then the latest end; requests before tokens on a tie), so its
//! `Retry-After` is never too early. `Retry-After` is the number of seconds until that
//! window ends; a lifetime window has none, since its cap is permanent until raised.
//!
//! # Files
//!
//! Everything is re-exported here. `windows.rs`: metrics, scopes, counters, the planned
//! windows and their keys; `plan.rs`: [`plan`], the admission request and its decision;
//! `outcome.rs`: the admitted request's `x-ratelimit-*` headers and the rejection's body and
//! headers; `reservation.rs`: reconciliation and refund; `usage.rs`: the usage view;
//! `estimate.rs`: prompt-token estimation.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::capacity::{CapacityEntry, Dimension, Period, Window};
use crate::connection::rfc3339;
use crate::prioritization::{
    DEFAULT_POOL, OtherPool, PoolAdmission, PoolRoom, PoolShare, PoolWindow, Prioritization,
};

mod estimate;
mod outcome;
mod plan;
mod reservation;
mod usage;
mod windows;

pub use estimate::*;
pub use outcome::*;
pub use plan::*;
pub use reservation::*;
pub use usage::*;
pub use windows::*;

/// Output tokens reserved for a request that does not state its own output limit.
pub const DEFAULT_OUTPUT_RESERVATION: u64 = 4096;
/// Tokens counted per chat message on top of its text (role, separators).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;
/// Tokens counted once per request for the priming of the reply.
pub const REPLY_PRIMING_TOKENS: u64 = 3;
/// Tokens counted for one image or other binary attachment, whatever its size.
pub const ATTACHMENT_TOKENS: u64 = 1600;
/// Most source IPs a usage view lists per source-ip window.
pub const MAX_TOP_IPS: usize = 100;

#[cfg(test)]
mod tests;
