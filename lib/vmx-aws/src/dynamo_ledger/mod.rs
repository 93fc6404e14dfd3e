//! [`CapacityLedger`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! # Items
//!
//! | item               | `pk`         | `sk`       | counter attributes                         |
//! |--------------------|--------------|------------|--------------------------------------------|
//! | connection-wide    | `CAP#<id>`   | `CAP`      | `r_<windowKey>`, `t_<windowKey>` (N)       |
//! | one source IP      | `CAP#<id>`   | `IP#<ip>`  | the same, for that IP's windows            |
//!
//! The connection item also holds the pools' counters (`r_<windowKey>@<pool>`) and the
//! counters of API keys with capacity of their own (`r_<windowKey>~<keyId>`, per key and
//! connection: [`vmx_domain::admission::key_window_key`]), so that one conditional write
//! covers the connection's, the pool's and the key's windows.
//!
//! `r_` counts requests and `t_` tokens; the window key ([`Window::key`], e.g. `m29481234`
//! for one minute, `L` for lifetime) is part of the attribute name, so a new window is a new
//! attribute that starts from zero: roll-over never needs a reset, and has no reset race.
//! The IP items share the connection's partition key so that the usage view lists them with
//! one `Query` (`begins_with(sk, "IP#")`), never a `Scan`; every IP write comes with a write
//! to the connection item anyway whenever a connection-wide window exists.
//!
//! `expiresAt` (TTL) is set on an item to one hour after the end of the latest window
//! written, unless a lifetime window lives on the item, in which case it is removed: lifetime
//! counters never expire.
//!
//! # Admission: one conditional write in the common case
//!
//! All windows of one item are charged by ONE `UpdateItem`:
//!
//! ```text
//! ADD #r0 :one, #t0 :charge, #r1 :one, #t1 :charge
//! SET expiresAt = :exp          (or REMOVE expiresAt with a lifetime window)
//! REMOVE <stale counters>
//! CONDITION (attribute_not_exists(#r0) OR #r0 <= :limit_minus_1)
//!       AND (attribute_not_exists(#t0) OR #t0 <= :limit_minus_charge) AND ...
//! ```
//!
//! with `ReturnValues = ALL_NEW` (the counters after the charge, for the `x-ratelimit-*`
//! headers) and `ReturnValuesOnConditionCheckFailure = ALL_OLD` (which window tripped). When
//! a source-ip window applies as well, the connection item's and the IP item's updates go in
//! one `TransactWriteItems` (all or nothing), followed by a consistent read of the two items
//! for the headers; a connection whose windows are all source-ip ones needs no transaction.
//!
//! The first attempt charges [`AdmitRequest::optimistic_charge`]. When a condition fails,
//! [`AdmitRequest::decide`] on the returned old counters gives the rejection (naming the
//! window) or a smaller exact charge (the output part capped at what is left), which is
//! tried again with the same conditions; see [`vmx_domain::admission`].
//!
//! # Stale counters
//!
//! Counters of ended windows are removed by the admissions themselves, at no extra write:
//! - every admission's update also `REMOVE`s the counters of the previous window of each of
//!   its periods (a no-op when absent), which covers steady traffic;
//! - after a gap (no traffic for several windows), the item returned by an admission
//!   (`ALL_NEW`, or `ALL_OLD` on a failed condition) shows the older counters; their names
//!   are remembered in memory for that item, and the next admission of that item removes
//!   them too;
//! - `expiresAt` deletes whole items that stop being used;
//! - the limit refresh runs [`CapacityLedger::sweep`] on each connection: one `Query` of
//!   its counter items and, per item with ended-window counters, one `UpdateItem` removing
//!   them (IPs that never came back, connections idle since); an item left with no live
//!   counter and no `expiresAt` (its lifetime window was removed from the connection) gets
//!   one, so the TTL takes it.
//!
//! # Configuration version
//!
//! The connection item also holds `cv`, the connection's configuration version, which
//! [`CapacityLedger::bump_config_version`] (an admin change of the connection, or of an API
//! key reaching it) raises by one, creating the item if needed. An admission's write of that
//! item returns it (`ALL_NEW`, or the read-back after a transaction) at no extra call
//! ([`vmx_domain::admission::Admitted::config_version`]); so does a rejection by a failed
//! condition (the old item comes back with the failure, or is read as the counters are).
//! An admission that writes no connection item (all of its windows are source-ip ones),
//! and a request refused before any write (it can never fit), carry no version.
//!
//! # Adjustments
//!
//! `adjust` is one unconditional `UpdateItem` (`ADD` of the token delta and of `-1` request)
//! on the live windows of the item, or a `TransactWriteItems` of the two items (so that a
//! failed adjustment changed nothing and can be retried as a whole). Ended windows are
//! skipped. `ADD` is not idempotent: if the SDK retries a write whose response was lost,
//! the delta can be applied twice (for an admission this over-counts, it never overshoots).
//!
//! # Errors
//!
//! Throttling and transport failures (after the SDK's retries) are `Error::Unavailable`
//! with a retry hint; details name the operation and error code, never item contents.
//!
//! # Files
//!
//! This file holds the adapter and its [`CapacityLedger`] implementation; `expr.rs` builds
//! the update and condition expressions of an admission, `admit.rs` runs one admission
//! attempt and reads the counters back, `sweep.rs` removes the ended windows' counters.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use time::OffsetDateTime;
use vmx_domain::admission::{
    Adjustment, Admission, AdmitRequest, CapacityUsage, Counters, Decision, IpUsage, Reservation,
    UsageRequest, WindowUsage, top_ips,
};
use vmx_domain::capacity::{Dimension, Window};
use vmx_domain::ports::CapacityLedger;
use vmx_domain::{Error, Result};

use crate::error::{RETRY_AFTER_SECS, classify, default_error};
use crate::table::{CAP_SK, IP_SK_PREFIX, PK, SK, cap_pk};

mod admit;
mod expr;
mod sweep;

use admit::{Attempt, backoff};
use expr::{
    UpdateSpec, counter_name, counters_of, is_stale_counter, item_plans, number_i,
    pool_counter_name, pool_windows_of, read_u64, sk_of,
};

/// Seconds an item outlives the end of the latest window written to it.
pub const TTL_GRACE_SECS: i64 = 3_600;
/// Most IP items the usage view reads per connection.
pub const MAX_USAGE_IPS: usize = 10_000;

/// Attempts of one admission (each a conditional write). An attempt after the first is
/// needed only when the counters changed since the last one (a concurrent admission or
/// adjustment made progress), or a transaction conflicted.
const ADMIT_ATTEMPTS: u32 = 8;
/// Items whose stale counter names are remembered at most (then the memory starts over).
const MAX_STALE_HINTS: usize = 10_000;

type Item = HashMap<String, AttributeValue>;

/// The capacity ledger of the AWS deployment.
pub struct DynamoLedger {
    client: Client,
    table: String,
    /// Stale counter names seen on an item (`pk\nsk`), removed by its next admission.
    stale: Mutex<HashMap<String, BTreeSet<String>>>,
    /// With pools: the connection item (by `pk`) as the last admission returned it, the
    /// snapshot of the other pools' counters the next admission starts from.
    seen: Mutex<HashMap<String, Item>>,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            stale: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn seen(&self, pk: &str) -> Option<Item> {
        self.seen.lock().ok()?.get(pk).cloned()
    }

    fn remember(&self, pk: &str, item: &Item) {
        if let Ok(mut m) = self.seen.lock() {
            if m.len() >= MAX_STALE_HINTS {
                m.clear();
            }
            m.insert(pk.to_owned(), item.clone());
        }
    }

    /// A rejection with pools. A pool with a minimum that is turned away while it has no
    /// counter in the window gets one (at 0, one `UpdateItem`), so it is active from now on
    /// and its minimum is protected (see [`vmx_domain::prioritization`]).
    async fn pool_rejected(
        &self,
        request: &AdmitRequest,
        pk: &str,
        item: &Item,
        rejection: vmx_domain::admission::Rejection,
    ) -> Result<Admission> {
        let Some(p) = request.pools.as_ref().filter(|p| p.pool.min > 0) else {
            return Ok(Admission::Rejected(rejection));
        };
        let names: Vec<String> = request
            .windows
            .iter()
            .filter(|w| w.scope == vmx_domain::admission::Scope::Connection)
            .map(|w| pool_counter_name('r', &w.window.key, &p.pool.name))
            .filter(|name| !item.contains_key(name))
            .collect();
        if names.is_empty() {
            return Ok(Admission::Rejected(rejection));
        }
        let mut spec = UpdateSpec::new(CAP_SK);
        spec.value(":zero", AttributeValue::N("0".to_owned()));
        let add: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(n, name)| {
                spec.name(&format!("#m{n}"), name);
                format!("#m{n} :zero")
            })
            .collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, CAP_SK)))
            .update_expression(format!("ADD {}", add.join(", ")))
            .set_expression_attribute_names(Some(spec.names))
            .set_expression_attribute_values(Some(spec.values))
            .send()
            .await;
        if let Err(e) = result {
            // The rejection stands; the pool is marked by its next rejection.
            tracing::warn!(
                error = %default_error("DynamoDB UpdateItem", classify(&e)),
                connection_id = %request.connection_id,
                "could not mark a prioritization pool active"
            );
        }
        Ok(Admission::Rejected(rejection))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn take_stale(&self, pk: &str, sk: &str) -> BTreeSet<String> {
        match self.stale.lock() {
            Ok(mut m) => m.remove(&format!("{pk}\n{sk}")).unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Remembers the counters of ended windows that `item` still carries.
    fn note_stale(&self, pk: &str, sk: &str, item: &Item, now: i64) {
        let names: BTreeSet<String> = item
            .keys()
            .filter(|name| is_stale_counter(name, now))
            .cloned()
            .collect();
        if names.is_empty() {
            return;
        }
        if let Ok(mut m) = self.stale.lock() {
            if m.len() >= MAX_STALE_HINTS {
                m.clear();
            }
            m.insert(format!("{pk}\n{sk}"), names);
        }
    }

    fn key(pk: &str, sk: &str) -> Item {
        HashMap::from([
            (PK.to_owned(), AttributeValue::S(pk.to_owned())),
            (SK.to_owned(), AttributeValue::S(sk.to_owned())),
        ])
    }

    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB GetItem", classify(&e)))?;
        Ok(out.item)
    }
}

#[async_trait]
impl CapacityLedger for DynamoLedger {
    async fn sweep(
        &self,
        connection_id: &str,
        keep_lifetime: bool,
        now: OffsetDateTime,
    ) -> Result<u64> {
        let now = now.unix_timestamp();
        let mut removed = 0;
        for item in self.query_counter_items(&cap_pk(connection_id)).await? {
            removed += self.sweep_item(&item, keep_lifetime, now).await?;
        }
        Ok(removed)
    }

    fn keeps_config_version(&self) -> bool {
        true
    }

    async fn bump_config_version(&self, connection_id: &str) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(&cap_pk(connection_id), CAP_SK)))
            .update_expression("ADD #cv :one")
            .expression_attribute_names("#cv", expr::ATTR_CONFIG_VERSION)
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .send()
            .await
            .map_err(|e| default_error("DynamoDB UpdateItem", classify(&e)))?;
        Ok(())
    }

    async fn admit(&self, request: &AdmitRequest) -> Result<Admission> {
        if request.is_unlimited() {
            return Ok(Admission::Admitted(request.admitted(0, Vec::new())));
        }
        let pk = cap_pk(&request.connection_id);
        let plans = item_plans(&request.windows);
        let pooled = request.pools.is_some() && plans.first().is_some_and(|p| p.sk == CAP_SK);
        // With pools: the other pools' counters as this process last saw them.
        let mut snapshot = match self.seen(&pk) {
            Some(item) if pooled => pool_windows_of(request, &item),
            _ => Vec::new(),
        };
        let mut charge = match request.decide_pooled(&[], &snapshot) {
            Decision::Charge { tokens } => tokens,
            Decision::Reject(r) if !pooled => return Ok(Admission::Rejected(r)),
            Decision::Reject(_) => {
                // The snapshot may be stale: decide on the item as it is now.
                let mut items: Vec<Option<Item>> = vec![None; plans.len()];
                let item = self.get_item(&pk, CAP_SK).await?.unwrap_or_default();
                self.remember(&pk, &item);
                snapshot = pool_windows_of(request, &item);
                if let Some(slot) = items.first_mut() {
                    *slot = Some(item.clone());
                }
                let (used, version) = self.counters(request, &pk, &plans, items, true).await?;
                match request.decide_pooled(&used, &snapshot) {
                    Decision::Charge { tokens } => tokens,
                    Decision::Reject(mut r) => {
                        r.config_version = version.and_then(|v| u32::try_from(v).ok());
                        return self.pool_rejected(request, &pk, &item, r).await;
                    }
                }
            }
        };
        let mut last = String::new();
        for attempt in 1..=ADMIT_ATTEMPTS {
            match self
                .attempt(request, &pk, &plans, charge, &snapshot)
                .await?
            {
                Attempt::Admitted(items) => {
                    if pooled && let Some(Some(item)) = items.first() {
                        self.remember(&pk, item);
                    }
                    let known = items.iter().all(Option::is_some);
                    let (after, version) =
                        self.counters(request, &pk, &plans, items, !known).await?;
                    let mut admitted = request.admitted(charge, after);
                    admitted.config_version = version;
                    return Ok(Admission::Admitted(admitted));
                }
                Attempt::Failed(mut items) => {
                    let mut fresh = None;
                    if pooled && let Some(slot) = items.first_mut() {
                        let item = match slot.take() {
                            Some(item) => item,
                            None => self.get_item(&pk, CAP_SK).await?.unwrap_or_default(),
                        };
                        self.remember(&pk, &item);
                        snapshot = pool_windows_of(request, &item);
                        *slot = Some(item.clone());
                        fresh = Some(item);
                    }
                    let (used, version) = self.counters(request, &pk, &plans, items, true).await?;
                    match request.decide_pooled(&used, &snapshot) {
                        Decision::Reject(mut r) => {
                            r.config_version = version.and_then(|v| u32::try_from(v).ok());
                            return match fresh {
                                Some(item) => self.pool_rejected(request, &pk, &item, r).await,
                                None => Ok(Admission::Rejected(r)),
                            };
                        }
                        Decision::Charge { tokens } => {
                            charge = tokens;
                            last = "the counters kept changing".to_owned();
                        }
                    }
                }
                Attempt::Conflict(detail) => {
                    last = detail;
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(Error::unavailable(
            Some(RETRY_AFTER_SECS),
            format!("capacity admission gave up after {ADMIT_ATTEMPTS} attempts: {last}"),
        ))
    }

    async fn adjust(
        &self,
        reservation: &Reservation,
        adjustment: Adjustment,
        now: OffsetDateTime,
    ) -> Result<()> {
        if adjustment.is_noop() {
            return Ok(());
        }
        let pk = cap_pk(&reservation.connection_id);
        let mut by_item: Vec<(String, Vec<&str>)> = Vec::new();
        for w in reservation.windows.iter().filter(|w| w.is_live(now)) {
            let sk = sk_of(w.scope);
            match by_item.iter_mut().find(|(s, _)| *s == sk) {
                Some((_, keys)) => keys.push(&w.key),
                None => by_item.push((sk, vec![&w.key])),
            }
        }
        let mut specs = Vec::with_capacity(by_item.len());
        for (sk, keys) in &by_item {
            let mut spec = UpdateSpec::new(sk);
            let mut add = Vec::new();
            let pool = reservation.pool.as_deref().filter(|_| sk == CAP_SK);
            if adjustment.refund_request {
                spec.value(":r", AttributeValue::N("-1".to_owned()));
            }
            if adjustment.token_delta != 0 {
                spec.value(":t", number_i(adjustment.token_delta));
            }
            for (n, key) in keys.iter().enumerate() {
                if adjustment.refund_request {
                    spec.name(&format!("#r{n}"), &counter_name('r', key));
                    add.push(format!("#r{n} :r"));
                }
                if adjustment.token_delta != 0 {
                    spec.name(&format!("#t{n}"), &counter_name('t', key));
                    add.push(format!("#t{n} :t"));
                }
                if let Some(pool) = pool {
                    if adjustment.refund_request {
                        spec.name(&format!("#pr{n}"), &pool_counter_name('r', key, pool));
                        add.push(format!("#pr{n} :r"));
                    }
                    if adjustment.token_delta != 0 {
                        spec.name(&format!("#pt{n}"), &pool_counter_name('t', key, pool));
                        add.push(format!("#pt{n} :t"));
                    }
                }
            }
            spec.expression = format!("ADD {}", add.join(", "));
            specs.push(spec);
        }
        match specs.as_slice() {
            [] => Ok(()),
            [spec] => {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(&pk, &spec.sk)))
                    .update_expression(&spec.expression)
                    .set_expression_attribute_names(Some(spec.names.clone()))
                    .set_expression_attribute_values(Some(spec.values.clone()))
                    .send()
                    .await
                    .map_err(|e| default_error("DynamoDB UpdateItem", classify(&e)))?;
                Ok(())
            }
            specs => {
                let mut items = Vec::with_capacity(specs.len());
                for spec in specs {
                    let update = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(Self::key(&pk, &spec.sk)))
                        .update_expression(&spec.expression)
                        .set_expression_attribute_names(Some(spec.names.clone()))
                        .set_expression_attribute_values(Some(spec.values.clone()))
                        .build()
                        .map_err(|e| Error::internal(format!("DynamoDB Update: {e}")))?;
                    items.push(TransactWriteItem::builder().update(update).build());
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let result = self
                        .client
                        .transact_write_items()
                        .set_transact_items(Some(items.clone()))
                        .send()
                        .await;
                    let err = match result {
                        Ok(_) => return Ok(()),
                        Err(err) => err,
                    };
                    let conflict = matches!(
                        &err,
                        SdkError::ServiceError(s)
                            if matches!(s.err(), TransactWriteItemsError::TransactionCanceledException(_))
                    );
                    if !conflict || attempt >= ADMIT_ATTEMPTS {
                        return Err(default_error("DynamoDB TransactWriteItems", classify(&err)));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    async fn usage(&self, request: &UsageRequest) -> Result<CapacityUsage> {
        let pk = cap_pk(&request.connection_id);
        let connection = if request.windows.iter().any(|w| w.dimension.is_none()) {
            self.get_item(&pk, CAP_SK).await?.unwrap_or_default()
        } else {
            Item::new()
        };
        let ip_windows: Vec<&Window> = request
            .windows
            .iter()
            .filter(|w| w.dimension == Some(Dimension::SourceIp))
            .map(|w| &w.window)
            .collect();
        let ip_items = if ip_windows.is_empty() {
            Vec::new()
        } else {
            self.query_ips(&pk, &ip_windows).await?
        };
        let windows = request
            .windows
            .iter()
            .map(|w| match w.dimension {
                None => WindowUsage {
                    window: w.clone(),
                    used: counters_of(&connection, &w.window.key),
                    top_ips: Vec::new(),
                    ip_count: 0,
                    // The pools' counters are attributes of the same item.
                    pools: request
                        .pool_usage(w, |pool, key| {
                            let requests = pool_counter_name('r', key, pool);
                            if !connection.contains_key(&requests) {
                                return Ok(None);
                            }
                            Ok(Some(Counters {
                                requests: read_u64(&connection, &requests),
                                tokens: read_u64(&connection, &pool_counter_name('t', key, pool)),
                            }))
                        })
                        .unwrap_or_default(),
                },
                Some(Dimension::SourceIp) => {
                    let ips: Vec<IpUsage> = ip_items
                        .iter()
                        .filter_map(|item| {
                            let used = counters_of(item, &w.window.key);
                            if used == Counters::default()
                                && !item.contains_key(&counter_name('r', &w.window.key))
                            {
                                return None;
                            }
                            let ip = match item.get(SK) {
                                Some(AttributeValue::S(sk)) => sk.strip_prefix(IP_SK_PREFIX)?,
                                _ => return None,
                            };
                            Some(IpUsage {
                                ip: ip.to_owned(),
                                used,
                            })
                        })
                        .collect();
                    let ip_count = u64::try_from(ips.len()).unwrap_or(u64::MAX);
                    WindowUsage {
                        window: w.clone(),
                        used: Counters::default(),
                        top_ips: top_ips(ips, w, request.top_n),
                        ip_count,
                        pools: Vec::new(),
                    }
                }
            })
            .collect();
        Ok(CapacityUsage {
            connection_id: request.connection_id.clone(),
            at: request.now,
            windows,
        })
    }
}

impl DynamoLedger {
    /// The IP items of a connection (at most [`MAX_USAGE_IPS`]), with the counters of
    /// `windows` only.
    async fn query_ips(&self, pk: &str, windows: &[&Window]) -> Result<Vec<Item>> {
        let mut names = HashMap::from([
            ("#pk".to_owned(), PK.to_owned()),
            ("#sk".to_owned(), SK.to_owned()),
        ]);
        let mut projection = vec!["#sk".to_owned()];
        for (n, w) in windows.iter().enumerate() {
            names.insert(format!("#r{n}"), counter_name('r', &w.key));
            names.insert(format!("#t{n}"), counter_name('t', &w.key));
            projection.push(format!("#r{n}"));
            projection.push(format!("#t{n}"));
        }
        let projection = projection.join(", ");
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :ip)")
                .set_expression_attribute_names(Some(names.clone()))
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .expression_attribute_values(":ip", AttributeValue::S(IP_SK_PREFIX.to_owned()))
                .projection_expression(&projection)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| default_error("DynamoDB Query", classify(&e)))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if out.len() < MAX_USAGE_IPS => start = Some(key),
                _ => break,
            }
        }
        out.truncate(MAX_USAGE_IPS);
        Ok(out)
    }
}
