//! The reservation of an admitted request: reconciled to the reported usage after the
//! provider call, or refunded when the call failed.

use super::*;

/// The windows one admission charged, to reconcile or refund after the provider call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub connection_id: String,
    pub windows: Vec<ReservedWindow>,
    /// Tokens charged for the prompt estimate.
    pub prompt_tokens: u64,
    /// Tokens charged for the output (capped at what the windows had left).
    pub output_tokens: u64,
    /// The prioritization pool charged with the connection-wide windows, if pools are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedWindow {
    #[serde(flatten)]
    pub scope: Scope,
    /// The window key ([`Window::key`]).
    pub key: String,
    /// Unix seconds; `None` for lifetime.
    pub end: Option<i64>,
}

impl ReservedWindow {
    /// Whether the window is still current at `now`; adjustments skip ended windows (their
    /// counters are never read again).
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.end.is_none_or(|end| now.unix_timestamp() < end)
    }
}

/// A change to apply to the windows of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Adjustment {
    /// Added to every token counter; negative to give tokens back.
    pub token_delta: i64,
    /// Whether to give the request back (decrement every request counter by one).
    pub refund_request: bool,
}

impl Adjustment {
    pub fn is_noop(self) -> bool {
        self.token_delta == 0 && !self.refund_request
    }
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Reservation {
    /// Tokens charged by the admission.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.output_tokens)
    }

    /// The output limit a request admitted with [`TokenEstimate::for_output`]`(_, output)`
    /// may be sent with: its reserved output (the first token of each choice included)
    /// split over the choices, so the provider can never produce more than was reserved.
    pub fn sendable_output(
        &self,
        output: crate::output::OutputLimit,
    ) -> crate::output::OutputLimit {
        let first = output.choices.max(1);
        output.within(self.output_tokens.saturating_add(first))
    }

    /// After a call: bring the counters to the provider's reported total (prompt plus
    /// completion tokens). The delta may be negative.
    pub fn reconcile(&self, actual_tokens: u64) -> Adjustment {
        Adjustment {
            token_delta: signed(actual_tokens).saturating_sub(signed(self.tokens())),
            refund_request: false,
        }
    }

    /// After a failed call: refund the whole reservation, request included.
    pub fn refund(&self) -> Adjustment {
        Adjustment {
            token_delta: -signed(self.tokens()),
            refund_request: true,
        }
    }

    /// After a call that failed part-way: when no tokens were produced (the provider
    /// refused or never answered), everything is refunded; otherwise the request stays
    /// counted and the tokens are reconciled to `tokens_used`.
    pub fn failed(&self, tokens_used: u64) -> Adjustment {
        if tokens_used == 0 {
            self.refund()
        } else {
            self.reconcile(tokens_used)
        }
    }
}
