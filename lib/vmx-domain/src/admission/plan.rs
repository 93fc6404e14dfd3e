//! [`plan`]: which windows apply to a request, and the decision on one snapshot of their
//! counters.

use super::*;

/// What the ledger must do: charge one request and a token reservation to every window, or
/// none. Built by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitRequest {
    pub connection_id: String,
    /// For messages only.
    pub connection_name: String,
    /// The applicable enabled windows: connection-wide ones first, then source-ip ones,
    /// then the caller's API key's ones.
    pub windows: Vec<PlannedWindow>,
    pub estimate: TokenEstimate,
    pub now: OffsetDateTime,
    /// The caller's prioritization pool, when pools are defined ([`AdmitRequest::with_pools`]):
    /// connection-wide windows are then also split by pool.
    pub pools: Option<PoolAdmission>,
    /// The caller's API key, when it has windows of its own ([`Scope::ApiKey`]).
    pub api_key_id: Option<String>,
}

/// The caller's API key and its own capacity entries (same schema as a connection's; only
/// connection-wide entries, see [`crate::api_key`]), enforced per connection it uses.
#[derive(Debug, Clone, Copy)]
pub struct KeyCapacity<'a> {
    pub id: &'a str,
    pub entries: &'a [CapacityEntry],
}

/// What the ledger decided for one snapshot of counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Charge one request and `tokens` tokens to every window.
    Charge {
        tokens: u64,
    },
    Reject(Rejection),
}

/// Builds the admission of a request on a connection with `entries`, from `source_ip`.
///
/// Disabled entries are ignored. A prompt that exceeds a tokens limit on its own is
/// rejected here (it can never fit), before any counter is touched. With no enabled entry
/// the request has no window and the ledger admits it without a write.
pub fn plan(
    connection_id: &str,
    connection_name: &str,
    entries: &[CapacityEntry],
    source_ip: IpAddr,
    estimate: TokenEstimate,
    now: OffsetDateTime,
) -> Result<AdmitRequest, Rejection> {
    plan_keyed(
        connection_id,
        connection_name,
        entries,
        source_ip,
        None,
        estimate,
        now,
    )
}

/// [`plan`] for a caller whose API key carries its own capacity: the key's enabled entries
/// are windows too ([`Scope::ApiKey`], after the connection's), charged in the same
/// admission, all or nothing.
pub fn plan_keyed(
    connection_id: &str,
    connection_name: &str,
    entries: &[CapacityEntry],
    source_ip: IpAddr,
    key: Option<KeyCapacity<'_>>,
    estimate: TokenEstimate,
    now: OffsetDateTime,
) -> Result<AdmitRequest, Rejection> {
    let ip = canonical_ip(source_ip);
    let mut windows: Vec<PlannedWindow> = entries
        .iter()
        .filter(|e| e.enabled && (e.requests.is_some() || e.tokens.is_some()))
        .map(|e| PlannedWindow {
            period: e.period,
            scope: match e.dimension {
                None => Scope::Connection,
                Some(Dimension::SourceIp) => Scope::SourceIp(ip),
            },
            window: e.period.window(now),
            requests: e.requests,
            tokens: e.tokens,
        })
        .collect();
    windows.sort_by_key(|w| (w.scope != Scope::Connection, w.period));
    let key = key.filter(|k| k.entries.iter().any(is_enforced));
    if let Some(k) = key {
        let mut own: Vec<PlannedWindow> = k
            .entries
            .iter()
            .filter(|e| is_enforced(e) && e.dimension.is_none())
            .map(|e| {
                let mut window = e.period.window(now);
                window.key = key_window_key(&window.key, k.id);
                PlannedWindow {
                    period: e.period,
                    scope: Scope::ApiKey,
                    window,
                    requests: e.requests,
                    tokens: e.tokens,
                }
            })
            .collect();
        own.sort_by_key(|w| w.period);
        windows.extend(own);
    }
    let request = AdmitRequest {
        connection_id: connection_id.to_owned(),
        connection_name: connection_name.to_owned(),
        windows,
        estimate,
        now,
        pools: None,
        api_key_id: key.map(|k| k.id.to_owned()),
    };
    // The window that can never hold the prompt and stays so longest.
    let never = request
        .windows
        .iter()
        .enumerate()
        .filter(|(_, w)| w.tokens.is_some_and(|t| estimate.prompt > t))
        .max_by_key(|(i, w)| (w.window.end.unwrap_or(i64::MAX), std::cmp::Reverse(*i)));
    if let Some((i, _)) = never {
        let mut r = request.rejection(i, Metric::Tokens);
        r.kind = RejectionKind::NeverFits {
            prompt_tokens: estimate.prompt,
        };
        r.retry_after_secs = None;
        return Err(r);
    }
    Ok(request)
}

fn is_enforced(e: &CapacityEntry) -> bool {
    e.enabled && (e.requests.is_some() || e.tokens.is_some())
}

impl AdmitRequest {
    /// True when no window applies: nothing to count.
    pub fn is_unlimited(&self) -> bool {
        self.windows.is_empty()
    }

    /// The same request for a caller in a prioritization pool (see
    /// [`crate::prioritization`]); `None` leaves it unsplit.
    pub fn with_pools(mut self, pools: Option<PoolAdmission>) -> Self {
        self.pools = pools;
        self
    }

    /// Decides on one consistent snapshot of the counters (`used[i]` for `windows[i]`;
    /// missing entries count as zero). See the module documentation. With pools, the pool
    /// counters count as zero and every other pool as idle: use [`Self::decide_pooled`].
    pub fn decide(&self, used: &[Counters]) -> Decision {
        self.decide_pooled(used, &[])
    }

    /// [`Self::decide`] with the pool counters of the same snapshot (`pools[i]` for
    /// `windows[i]`, read for connection-wide windows only; missing entries: zero, idle).
    pub fn decide_pooled(&self, used: &[Counters], pools: &[PoolWindow]) -> Decision {
        let at = |i: usize| used.get(i).copied().unwrap_or_default();
        let idle = PoolWindow::default();
        let pool_at = |i: usize| pools.get(i).unwrap_or(&idle);
        let mut pool_trips: Vec<(usize, Metric, PoolRoom)> = Vec::new();
        let prompt = self.estimate.prompt;
        let mut tripped: Option<(usize, Metric)> = None;
        let mut output = self.estimate.max_output;
        for (i, w) in self.windows.iter().enumerate() {
            let u = at(i);
            let mut trip = |metric: Metric| {
                let better = match tripped {
                    None => true,
                    Some((j, _)) => {
                        let end = |k: usize| {
                            self.windows
                                .get(k)
                                .map_or(i64::MIN, |w| w.window.end.unwrap_or(i64::MAX))
                        };
                        end(i) > end(j)
                    }
                };
                if better {
                    tripped = Some((i, metric));
                }
            };
            let pool = match (&self.pools, w.scope) {
                (Some(p), Scope::Connection) => Some(p),
                _ => None,
            };
            let room = |metric: Metric, limit: u64| match pool {
                Some(p) => p.room(metric, limit, u.get(metric), pool_at(i)),
                None => PoolRoom::unsplit(limit, u.get(metric)),
            };
            if let Some(r) = w.requests {
                let pr = room(Metric::Requests, r);
                if pr.room < 1 {
                    trip(Metric::Requests);
                    pool_trips.push((i, Metric::Requests, pr));
                }
            }
            if let Some(t) = w.tokens {
                let pr = room(Metric::Tokens, t);
                match pr.room.checked_sub(prompt) {
                    None => {
                        trip(Metric::Tokens);
                        pool_trips.push((i, Metric::Tokens, pr));
                    }
                    Some(room) => output = output.min(room),
                }
            }
        }
        match tripped {
            Some((i, metric)) => {
                let mut r = self.rejection(i, metric);
                let room = pool_trips
                    .iter()
                    .find(|(j, m, _)| *j == i && *m == metric)
                    .map(|(_, _, room)| *room);
                if let (Some(p), Some(room)) = (&self.pools, room)
                    && self
                        .windows
                        .get(i)
                        .is_some_and(|w| w.scope == Scope::Connection)
                {
                    r.pool = Some(Box::new(PoolRejection {
                        name: p.pool.name.clone(),
                        allocation: room.allocation,
                    }));
                }
                Decision::Reject(r)
            }
            None => Decision::Charge {
                tokens: prompt.saturating_add(output),
            },
        }
    }

    /// The charge to try first when the counters are not known: [`Self::decide`] as if every
    /// window were empty. `None` when even that is rejected (which [`plan`] already rules
    /// out).
    pub fn optimistic_charge(&self) -> Option<u64> {
        match self.decide(&[]) {
            Decision::Charge { tokens } => Some(tokens),
            Decision::Reject(_) => None,
        }
    }

    /// The rejection naming `windows[index]` and `metric`.
    pub fn rejection(&self, index: usize, metric: Metric) -> Rejection {
        let (period, scope, limit, retry) = match self.windows.get(index) {
            Some(w) => (
                w.period,
                w.scope,
                w.limit(metric).unwrap_or(0),
                w.reset_secs(self.now),
            ),
            None => (Period::Lifetime, Scope::Connection, 0, None),
        };
        Rejection {
            connection_name: self.connection_name.clone(),
            period,
            metric,
            limit,
            scope,
            retry_after_secs: retry,
            kind: RejectionKind::Exhausted,
            pool: None,
            api_key_id: self
                .api_key_id
                .as_deref()
                .filter(|_| scope == Scope::ApiKey)
                .map(Box::from),
            config_version: None,
        }
    }

    /// The admission result after charging one request and `tokens` tokens; `after[i]` are
    /// the counters of `windows[i]` after the charge (as the ledger read them back).
    pub fn admitted(&self, tokens: u64, after: Vec<Counters>) -> Admitted {
        let prompt = self.estimate.prompt.min(tokens);
        let windows = self
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| WindowState {
                window: w.clone(),
                used: after.get(i).copied().unwrap_or_default(),
            })
            .collect();
        Admitted {
            reservation: Reservation {
                connection_id: self.connection_id.clone(),
                windows: self
                    .windows
                    .iter()
                    .map(|w| ReservedWindow {
                        scope: w.scope,
                        key: w.window.key.clone(),
                        end: w.window.end,
                    })
                    .collect(),
                prompt_tokens: prompt,
                output_tokens: tokens - prompt,
                pool: self.pools.as_ref().map(|p| p.pool.name.clone()),
            },
            windows,
            at: self.now,
            config_version: None,
        }
    }
}

/// The outcome of an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(Admitted),
    Rejected(Rejection),
}
