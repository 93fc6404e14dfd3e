//! [`CapacityLedger`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! # Items
//!
//! | item               | `pk`         | `sk`       | counter attributes                         |
//! |--------------------|--------------|------------|--------------------------------------------|
//! | connection-wide    | `CAP#<id>`   | `CAP`      | `r_<windowKey>`, `t_<windowKey>` (N)       |
//! | one source IP      | `CAP#<id>`   | `IP#<ip>`  | the same, for that IP's windows            |
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

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use time::OffsetDateTime;
use vmx_domain::admission::{
    Adjustment, Admission, AdmitRequest, CapacityUsage, Counters, Decision, IpUsage, PlannedWindow,
    Reservation, Scope, UsageRequest, WindowUsage, previous_window_key, top_ips, window_key_end,
};
use vmx_domain::capacity::{Dimension, Window};
use vmx_domain::ports::CapacityLedger;
use vmx_domain::{Error, Result};

use crate::error::{RETRY_AFTER_SECS, classify, default_error, is_throttling};
use crate::table::{CAP_SK, IP_SK_PREFIX, PK, SK, TTL_ATTRIBUTE, cap_pk, ip_sk};

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
}

/// One item of an admission and the windows (indices into the request) it holds.
struct ItemPlan {
    sk: String,
    windows: Vec<usize>,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            stale: Mutex::new(HashMap::new()),
        }
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

    /// The update of one item for a charge of one request and `charge` tokens. `None` when
    /// a tokens limit is below the charge (no counter state can admit it).
    fn update(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plan: &ItemPlan,
        charge: u64,
    ) -> Option<UpdateSpec> {
        let mut spec = UpdateSpec::new(&plan.sk);
        let mut add = Vec::new();
        let mut conditions = Vec::new();
        let mut current = BTreeSet::new();
        let mut lifetime = false;
        let mut latest_end = i64::MIN;
        spec.value(":one", AttributeValue::N("1".to_owned()));
        spec.value(":c", AttributeValue::N(charge.to_string()));
        for (n, &i) in plan.windows.iter().enumerate() {
            let w = request.windows.get(i)?;
            let (r, t) = (
                counter_name('r', &w.window.key),
                counter_name('t', &w.window.key),
            );
            spec.name(&format!("#r{n}"), &r);
            spec.name(&format!("#t{n}"), &t);
            add.push(format!("#r{n} :one, #t{n} :c"));
            if let Some(limit) = w.requests {
                let max_before = limit.checked_sub(1)?;
                spec.value(&format!(":r{n}"), number(max_before));
                conditions.push(format!("(attribute_not_exists(#r{n}) OR #r{n} <= :r{n})"));
            }
            if let Some(limit) = w.tokens {
                let max_before = limit.checked_sub(charge)?;
                spec.value(&format!(":t{n}"), number(max_before));
                conditions.push(format!("(attribute_not_exists(#t{n}) OR #t{n} <= :t{n})"));
            }
            current.insert(r);
            current.insert(t);
            match w.window.end {
                None => lifetime = true,
                Some(end) => latest_end = latest_end.max(end),
            }
        }
        let mut remove: BTreeSet<String> = self.take_stale(pk, &plan.sk);
        for &i in &plan.windows {
            let Some(w) = request.windows.get(i) else {
                continue;
            };
            if let Some(prev) = previous_window_key(w.period, request.now) {
                remove.insert(counter_name('r', &prev));
                remove.insert(counter_name('t', &prev));
            }
        }
        spec.name("#exp", TTL_ATTRIBUTE);
        let mut expr = format!("ADD {}", add.join(", "));
        let mut placeholders = Vec::new();
        if lifetime {
            placeholders.push("#exp".to_owned());
        } else {
            spec.value(":exp", number_i(latest_end.saturating_add(TTL_GRACE_SECS)));
            expr.push_str(" SET #exp = :exp");
        }
        for (n, name) in remove.difference(&current).enumerate() {
            let p = format!("#s{n}");
            spec.name(&p, name);
            placeholders.push(p);
        }
        if !placeholders.is_empty() {
            expr.push_str(" REMOVE ");
            expr.push_str(&placeholders.join(", "));
        }
        spec.expression = expr;
        spec.condition = (!conditions.is_empty()).then(|| conditions.join(" AND "));
        Some(spec)
    }

    /// One attempt at charging `charge` tokens to every item of `plans`.
    async fn attempt(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plans: &[ItemPlan],
        charge: u64,
    ) -> Result<Attempt> {
        let mut specs = Vec::with_capacity(plans.len());
        for plan in plans {
            match self.update(request, pk, plan, charge) {
                Some(spec) => specs.push(spec),
                None => return Ok(Attempt::Failed(vec![None; plans.len()])),
            }
        }
        let now = request.now.unix_timestamp();
        if let [spec] = specs.as_slice() {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(pk, &spec.sk)))
                .update_expression(&spec.expression)
                .set_condition_expression(spec.condition.clone())
                .set_expression_attribute_names(Some(spec.names.clone()))
                .set_expression_attribute_values(Some(spec.values.clone()))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match result {
                Ok(out) => {
                    let item = out.attributes.unwrap_or_default();
                    self.note_stale(pk, &spec.sk, &item, now);
                    Ok(Attempt::Admitted(vec![Some(item)]))
                }
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        UpdateItemError::ConditionalCheckFailedException(_)
                    ) =>
                {
                    let old = match service.into_err() {
                        UpdateItemError::ConditionalCheckFailedException(e) => e.item,
                        _ => None,
                    };
                    if let Some(item) = &old {
                        self.note_stale(pk, &spec.sk, item, now);
                    }
                    Ok(Attempt::Failed(vec![old]))
                }
                Err(e) => Err(default_error("DynamoDB UpdateItem", classify(&e))),
            };
        }
        let mut items = Vec::with_capacity(specs.len());
        for spec in &specs {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key(pk, &spec.sk)))
                .update_expression(&spec.expression)
                .set_condition_expression(spec.condition.clone())
                .set_expression_attribute_names(Some(spec.names.clone()))
                .set_expression_attribute_values(Some(spec.values.clone()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| Error::internal(format!("DynamoDB Update: {e}")))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        const WHAT: &str = "DynamoDB TransactWriteItems";
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Attempt::Admitted(vec![None; specs.len()])),
            Err(err) => err,
        };
        let reasons = match &err {
            SdkError::ServiceError(service) => match service.err() {
                TransactWriteItemsError::TransactionCanceledException(tc) => {
                    Some(tc.cancellation_reasons().to_vec())
                }
                _ => None,
            },
            _ => None,
        };
        let Some(reasons) = reasons else {
            return Err(default_error(WHAT, classify(&err)));
        };
        let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
        if codes.contains(&"ConditionalCheckFailed") {
            let old: Vec<Option<Item>> = reasons
                .iter()
                .zip(&specs)
                .map(|(r, spec)| {
                    let item = r.item().cloned();
                    if let Some(item) = &item {
                        self.note_stale(pk, &spec.sk, item, now);
                    }
                    item
                })
                .collect();
            return Ok(Attempt::Failed(old));
        }
        let transient = codes.iter().any(|c| {
            matches!(
                *c,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
            ) || is_throttling(c)
        });
        let detail = format!("{WHAT}: transaction canceled ({})", codes.join(", "));
        if transient {
            Ok(Attempt::Conflict(detail))
        } else {
            Err(Error::internal(detail))
        }
    }

    /// The counters of every window of `request`, from `items` (one per plan) where known,
    /// else read (strongly consistent).
    async fn counters(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plans: &[ItemPlan],
        items: Vec<Option<Item>>,
        read_missing: bool,
    ) -> Result<Vec<Counters>> {
        let mut out = vec![Counters::default(); request.windows.len()];
        for (plan, item) in plans.iter().zip(items) {
            let item = match item {
                Some(item) => Some(item),
                None if read_missing => {
                    let item = self.get_item(pk, &plan.sk).await?;
                    if let Some(item) = &item {
                        self.note_stale(pk, &plan.sk, item, request.now.unix_timestamp());
                    }
                    item
                }
                None => None,
            };
            let Some(item) = item else { continue };
            for &i in &plan.windows {
                if let (Some(w), Some(slot)) = (request.windows.get(i), out.get_mut(i)) {
                    *slot = counters_of(&item, &w.window.key);
                }
            }
        }
        Ok(out)
    }
}

/// An update expression with its names and values.
struct UpdateSpec {
    sk: String,
    expression: String,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl UpdateSpec {
    fn new(sk: &str) -> Self {
        Self {
            sk: sk.to_owned(),
            expression: String::new(),
            condition: None,
            names: HashMap::new(),
            values: HashMap::new(),
        }
    }

    fn name(&mut self, placeholder: &str, name: &str) {
        self.names.insert(placeholder.to_owned(), name.to_owned());
    }

    fn value(&mut self, placeholder: &str, value: AttributeValue) {
        self.values.insert(placeholder.to_owned(), value);
    }
}

enum Attempt {
    /// Charged; the items after the charge where DynamoDB returned them.
    Admitted(Vec<Option<Item>>),
    /// A condition failed; the items before, where DynamoDB returned them.
    Failed(Vec<Option<Item>>),
    /// A transaction conflicted with another one (or was throttled inside).
    Conflict(String),
}

fn number(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn number_i(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn counter_name(metric: char, window_key: &str) -> String {
    format!("{metric}_{window_key}")
}

/// `r_<key>` or `t_<key>` of a window that ended at or before `now`.
fn is_stale_counter(name: &str, now: i64) -> bool {
    let Some(key) = name.strip_prefix("r_").or_else(|| name.strip_prefix("t_")) else {
        return false;
    };
    matches!(window_key_end(key), Some(Some(end)) if end <= now)
}

fn read_u64(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<i128>()
            .map(|v| u64::try_from(v.max(0)).unwrap_or(u64::MAX))
            .unwrap_or(0),
        _ => 0,
    }
}

fn counters_of(item: &Item, window_key: &str) -> Counters {
    Counters {
        requests: read_u64(item, &counter_name('r', window_key)),
        tokens: read_u64(item, &counter_name('t', window_key)),
    }
}

fn sk_of(scope: Scope) -> String {
    match scope {
        Scope::Connection => CAP_SK.to_owned(),
        Scope::SourceIp(ip) => ip_sk(ip),
    }
}

/// The items of an admission, connection-wide first.
fn item_plans(windows: &[PlannedWindow]) -> Vec<ItemPlan> {
    let mut plans: Vec<ItemPlan> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        let sk = sk_of(w.scope);
        match plans.iter_mut().find(|p| p.sk == sk) {
            Some(p) => p.windows.push(i),
            None => plans.push(ItemPlan {
                sk,
                windows: vec![i],
            }),
        }
    }
    plans.sort_by_key(|p| p.sk != CAP_SK);
    plans
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempt.min(6)))
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

    async fn admit(&self, request: &AdmitRequest) -> Result<Admission> {
        if request.is_unlimited() {
            return Ok(Admission::Admitted(request.admitted(0, Vec::new())));
        }
        let pk = cap_pk(&request.connection_id);
        let plans = item_plans(&request.windows);
        let mut charge = match request.decide(&[]) {
            Decision::Charge { tokens } => tokens,
            Decision::Reject(r) => return Ok(Admission::Rejected(r)),
        };
        let mut last = String::new();
        for attempt in 1..=ADMIT_ATTEMPTS {
            match self.attempt(request, &pk, &plans, charge).await? {
                Attempt::Admitted(items) => {
                    let known = items.iter().all(Option::is_some);
                    let after = self.counters(request, &pk, &plans, items, !known).await?;
                    return Ok(Admission::Admitted(request.admitted(charge, after)));
                }
                Attempt::Failed(items) => {
                    let used = self.counters(request, &pk, &plans, items, true).await?;
                    match request.decide(&used) {
                        Decision::Reject(r) => return Ok(Admission::Rejected(r)),
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
    /// Every counter item of the connection (`pk = CAP#<id>`: the connection item and its
    /// IP items), all attributes.
    async fn query_counter_items(&self, pk: &str) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| default_error("DynamoDB Query", classify(&e)))?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(out),
            }
        }
    }

    /// One item of [`CapacityLedger::sweep`]: removes its ended-window counters (and its
    /// lifetime counters unless `keep_lifetime`, on the condition that they still hold what
    /// was read) and, when it holds no live counter and has no `expiresAt`, sets one (on the
    /// condition that no lifetime counter appeared meanwhile: those must never expire).
    /// Returns the number of counters removed (0 when the item changed under it: the next
    /// sweep takes it).
    async fn sweep_item(&self, item: &Item, keep_lifetime: bool, now: i64) -> Result<u64> {
        let lifetime = [counter_name('r', "L"), counter_name('t', "L")];
        let is_counter = |name: &str| name.starts_with("r_") || name.starts_with("t_");
        let drop_lifetime = |name: &str| !keep_lifetime && lifetime.iter().any(|l| l == name);
        let stale: Vec<&String> = item
            .keys()
            .filter(|name| is_stale_counter(name, now) || drop_lifetime(name))
            .collect();
        let live = item
            .keys()
            .any(|name| is_counter(name) && !stale.contains(&name));
        let has_ttl = item.contains_key(TTL_ATTRIBUTE);
        let expire = !live && !has_ttl;
        if stale.is_empty() && !expire {
            return Ok(0);
        }
        let (Some(pk), Some(sk)) = (item.get(PK), item.get(SK)) else {
            return Ok(0);
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, pk.clone())
            .key(SK, sk.clone())
            .expression_attribute_names("#pk", PK);
        let mut clauses = Vec::new();
        if !stale.is_empty() {
            let names: Vec<String> = (0..stale.len()).map(|i| format!("#s{i}")).collect();
            for (alias, name) in names.iter().zip(&stale) {
                update = update.expression_attribute_names(alias, name.as_str());
            }
            clauses.push(format!("REMOVE {}", names.join(", ")));
        }
        let mut condition = "attribute_exists(#pk)".to_owned();
        for (i, name) in stale.iter().filter(|n| drop_lifetime(n)).enumerate() {
            if let Some(old) = item.get(name.as_str()) {
                condition.push_str(&format!(" AND #l{i} = :l{i}"));
                update = update
                    .expression_attribute_names(format!("#l{i}"), name.as_str())
                    .expression_attribute_values(format!(":l{i}"), old.clone());
            }
        }
        if expire && !stale.iter().any(|n| drop_lifetime(n)) {
            clauses.push("SET #exp = :exp".to_owned());
            condition.push_str(
                " AND attribute_not_exists(#exp) AND attribute_not_exists(#rl) \
                 AND attribute_not_exists(#tl)",
            );
            update = update
                .expression_attribute_names("#exp", TTL_ATTRIBUTE)
                .expression_attribute_names("#rl", counter_name('r', "L"))
                .expression_attribute_names("#tl", counter_name('t', "L"))
                .expression_attribute_values(":exp", number_i(now + TTL_GRACE_SECS));
        }
        let result = update
            .update_expression(clauses.join(" "))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(stale.len() as u64),
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    UpdateItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(default_error("DynamoDB UpdateItem", classify(&e))),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use vmx_domain::admission::{TokenEstimate, plan};
    use vmx_domain::capacity::{CapacityEntry, Period};

    fn entry(period: Period, requests: Option<u64>, tokens: Option<u64>) -> CapacityEntry {
        CapacityEntry {
            period,
            requests,
            tokens,
            enabled: true,
            dimension: None,
        }
    }

    #[test]
    fn one_update_holds_every_connection_window() {
        let now = datetime!(2026-11-25 13:45:30 UTC);
        let mut ip_entry = entry(Period::Hour, Some(10), None);
        ip_entry.dimension = Some(Dimension::SourceIp);
        let entries = [
            entry(Period::Minute, Some(100), Some(1000)),
            entry(Period::Day, Some(5000), None),
            ip_entry,
        ];
        let ip = "203.0.113.7".parse().expect("ip");
        let req = plan(
            "c1",
            "n",
            &entries,
            ip,
            TokenEstimate {
                prompt: 10,
                max_output: 20,
            },
            now,
        )
        .expect("plan");
        let plans = item_plans(&req.windows);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].sk, "CAP");
        assert_eq!(plans[0].windows, vec![0, 1]);
        assert_eq!(plans[1].sk, "IP#203.0.113.7");
        let client = Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let ledger = DynamoLedger::new(client, "t");
        let spec = ledger.update(&req, "CAP#c1", &plans[0], 30).expect("spec");
        assert_eq!(
            spec.expression,
            "ADD #r0 :one, #t0 :c, #r1 :one, #t1 :c SET #exp = :exp REMOVE #s0, #s1, #s2, #s3"
        );
        assert_eq!(
            spec.condition.as_deref(),
            Some(
                "(attribute_not_exists(#r0) OR #r0 <= :r0) AND (attribute_not_exists(#t0) OR #t0 <= :t0) \
                 AND (attribute_not_exists(#r1) OR #r1 <= :r1)"
            )
        );
        let minute = Period::Minute.window(now);
        assert_eq!(spec.names.get("#r0"), Some(&format!("r_{}", minute.key)));
        assert_eq!(spec.values.get(":t0"), Some(&number(970)));
        assert_eq!(spec.values.get(":r1"), Some(&number(4999)));
        let day_end = Period::Day.window(now).end.expect("end");
        assert_eq!(
            spec.values.get(":exp"),
            Some(&number_i(day_end + TTL_GRACE_SECS))
        );
        let prev = previous_window_key(Period::Minute, now).expect("prev");
        assert!(spec.names.values().any(|n| *n == format!("t_{prev}")));
        // A charge above a tokens limit can never be admitted.
        assert!(ledger.update(&req, "CAP#c1", &plans[0], 1001).is_none());
    }

    #[test]
    fn stale_counter_names() {
        assert!(is_stale_counter("r_m0", 60));
        assert!(is_stale_counter("t_m0", 60));
        assert!(!is_stale_counter("t_m1", 60));
        assert!(!is_stale_counter("r_L", i64::MAX));
        assert!(!is_stale_counter("expiresAt", i64::MAX));
        assert!(!is_stale_counter("pk", i64::MAX));
    }
}
