//! [`UsageStore`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! One item per connection, hour, model and API key:
//!
//! | `pk`              | `sk`                          | other attributes (all N unless noted)        |
//! |-------------------|-------------------------------|----------------------------------------------|
//! | `USAGE#<connId>`  | `H#<hour start, 12 digits>#<model>` (no key: the admin token), `H#<hour>@<keyId>#<model>` (a gateway API key) | `model` (S), `apiKeyId` (S, keyed items), `hour`, `requests`, `promptTokens`, `completionTokens`, `cachedTokens`, `latencyMsSum`, `latencyMsMax`, `ttftMsSum`, `ttftMsMax`, `ttftCount`, `err_<class>`, `expiresAt` |
//!
//! The key id is part of the sort key, so recording a key's request is the same one write;
//! the cost is in reads: an hour of a model used by `k` keys is `k` items, which every
//! query of the connection reads. `@` sorts after `#`, so an hour's keyed items lie between
//! its unkeyed ones and the next hour: the hour range below still covers exactly them.
//!
//! The hour is epoch seconds, zero-padded to 12 digits so that `sk` order is time order and
//! a time range is one `Query` with `sk BETWEEN`. `expiresAt` (TTL) is the hour plus
//! [`RETENTION_DAYS`].
//!
//! Writes per recorded event: **one** `UpdateItem` that `ADD`s every counter (atomic, so
//! concurrent records never lose a count) and sets each maximum only if the item has none
//! yet (`if_not_exists`), returning the item (`ALL_NEW`, no extra read cost). DynamoDB has no
//! `max()` in update expressions, so when the event's latency or time to first token is above
//! the stored maximum, a **second**, conditional `UpdateItem` raises it
//! (`SET latencyMsMax = :v` if `latencyMsMax < :v`; retried if a concurrent writer raised it
//! in between). That happens only when an event sets a new record for its hour and model:
//! for values in random order, about ln(n) times among n events of a bucket.
//!
//! Usage outlives its connection: deleting a connection keeps its items until they expire.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use vmx_domain::usage::{
    ErrorClass, RETENTION_DAYS, UsageBucket, UsageCounters, UsageEvent, UsageStore,
};
use vmx_domain::{Error, Result};

use crate::dynamo_store::{n, s};
use crate::error::{classify, default_error};
use crate::table::{
    PK, SK, TTL_ATTRIBUTE, USAGE_HOUR_SK_PREFIX, usage_hour_sk, usage_key_hour_sk, usage_pk,
};

/// Prefix of the per-class error counters: `err_rate_limited`, ...
pub const ERROR_ATTR_PREFIX: &str = "err_";

const MODEL: &str = "model";
const API_KEY: &str = "apiKeyId";
const HOUR: &str = "hour";
const REQUESTS: &str = "requests";
const PROMPT: &str = "promptTokens";
const COMPLETION: &str = "completionTokens";
const CACHED: &str = "cachedTokens";
const LATENCY_SUM: &str = "latencyMsSum";
const LATENCY_MAX: &str = "latencyMsMax";
const TTFT_SUM: &str = "ttftMsSum";
const TTFT_MAX: &str = "ttftMsMax";
const TTFT_COUNT: &str = "ttftCount";

/// Attempts at raising a maximum that concurrent writers keep raising first.
const MAX_ATTEMPTS: u32 = 5;

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB usage store. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct DynamoUsageStore {
    client: Client,
    table: String,
}

fn read_u64(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

fn decode(item: &Item) -> Result<UsageBucket> {
    let hour = match item.get(HOUR) {
        Some(AttributeValue::N(v)) => v
            .parse::<i64>()
            .map_err(|_| Error::internal("stored usage bucket has a malformed hour"))?,
        _ => return Err(Error::internal("stored usage bucket has no hour")),
    };
    let model = match item.get(MODEL) {
        Some(AttributeValue::S(m)) => m.clone(),
        _ => return Err(Error::internal("stored usage bucket has no model")),
    };
    let mut errors = std::collections::BTreeMap::new();
    for class in ErrorClass::ALL {
        let count = read_u64(item, &error_attr(class));
        if count > 0 {
            errors.insert(class, count);
        }
    }
    let counters = UsageCounters {
        requests: read_u64(item, REQUESTS),
        errors,
        prompt_tokens: read_u64(item, PROMPT),
        completion_tokens: read_u64(item, COMPLETION),
        cached_tokens: read_u64(item, CACHED),
        latency_ms_sum: read_u64(item, LATENCY_SUM),
        latency_ms_max: read_u64(item, LATENCY_MAX),
        ttft_ms_sum: read_u64(item, TTFT_SUM),
        ttft_ms_max: read_u64(item, TTFT_MAX),
        ttft_count: read_u64(item, TTFT_COUNT),
    };
    let mut bucket = UsageBucket::hourly(hour, model, counters);
    if let Some(AttributeValue::S(k)) = item.get(API_KEY) {
        bucket.api_key_id = Some(k.clone());
    }
    Ok(bucket)
}

fn error_attr(class: ErrorClass) -> String {
    format!("{ERROR_ATTR_PREFIX}{}", class.as_str())
}

/// An update expression under construction, with its placeholders.
#[derive(Default)]
struct Expr {
    add: Vec<String>,
    set: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attribute: &str) -> String {
        let placeholder = format!("#a{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    fn add(&mut self, attribute: &str, by: u64) {
        let (a, v) = (self.name(attribute), self.value(n(by)));
        self.add.push(format!("{a} {v}"));
    }

    fn set(&mut self, attribute: &str, to: AttributeValue) {
        let (a, v) = (self.name(attribute), self.value(to));
        self.set.push(format!("{a} = {v}"));
    }

    fn set_if_absent(&mut self, attribute: &str, to: u64) {
        let (a, v) = (self.name(attribute), self.value(n(to)));
        self.set.push(format!("{a} = if_not_exists({a}, {v})"));
    }

    fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        parts.join(" ")
    }
}

/// The one update of a recorded event.
fn record_expr(event: &UsageEvent) -> Expr {
    let mut e = Expr::default();
    e.add(REQUESTS, 1);
    e.add(PROMPT, event.prompt_tokens);
    e.add(COMPLETION, event.completion_tokens);
    e.add(CACHED, event.cached_tokens);
    e.add(LATENCY_SUM, event.latency_ms);
    if let Some(t) = event.ttft_ms {
        e.add(TTFT_SUM, t);
        e.add(TTFT_COUNT, 1);
        e.set_if_absent(TTFT_MAX, t);
    }
    if let Some(class) = event.error {
        e.add(&error_attr(class), 1);
    }
    e.set_if_absent(LATENCY_MAX, event.latency_ms);
    e.set(MODEL, s(&event.model));
    if let Some(k) = &event.api_key_id {
        e.set(API_KEY, s(k));
    }
    e.set(HOUR, AttributeValue::N(event.hour().to_string()));
    e.set(
        TTL_ATTRIBUTE,
        AttributeValue::N((event.hour() + RETENTION_DAYS * 86_400).to_string()),
    );
    e
}

/// The maxima `event` would raise in `item`: (attribute, value) pairs.
fn raises(event: &UsageEvent, item: &Item) -> Vec<(&'static str, u64)> {
    let mut out = Vec::new();
    if !item.contains_key(LATENCY_MAX) || read_u64(item, LATENCY_MAX) < event.latency_ms {
        out.push((LATENCY_MAX, event.latency_ms));
    }
    if let Some(t) = event.ttft_ms
        && (!item.contains_key(TTFT_MAX) || read_u64(item, TTFT_MAX) < t)
    {
        out.push((TTFT_MAX, t));
    }
    out
}

impl DynamoUsageStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(event: &UsageEvent) -> Item {
        HashMap::from([
            (PK.to_owned(), s(usage_pk(&event.connection_id))),
            (
                SK.to_owned(),
                s(match &event.api_key_id {
                    Some(k) => usage_key_hour_sk(event.hour(), k, &event.model),
                    None => usage_hour_sk(event.hour(), &event.model),
                }),
            ),
        ])
    }

    /// Raises the maxima in `pending` (each only if larger than what is stored), retrying
    /// with what is left when a concurrent writer got there first.
    async fn raise_maxima(
        &self,
        event: &UsageEvent,
        mut pending: Vec<(&'static str, u64)>,
    ) -> Result<()> {
        for _ in 0..MAX_ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            let mut e = Expr::default();
            let mut conditions = Vec::new();
            for (attribute, value) in &pending {
                let (a, v) = (e.name(attribute), e.value(n(*value)));
                e.set.push(format!("{a} = {v}"));
                conditions.push(format!("{a} < {v}"));
            }
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(event)))
                .update_expression(e.expression())
                .condition_expression(conditions.join(" AND "))
                .set_expression_attribute_names(Some(e.names))
                .set_expression_attribute_values(Some(e.values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(service))
                    if matches!(
                        service.err(),
                        UpdateItemError::ConditionalCheckFailedException(_)
                    ) =>
                {
                    let old = match service.err() {
                        UpdateItemError::ConditionalCheckFailedException(c) => {
                            c.item().cloned().unwrap_or_default()
                        }
                        _ => Item::new(),
                    };
                    pending.retain(|(attribute, value)| read_u64(&old, attribute) < *value);
                }
                Err(e) => return Err(default_error("DynamoDB UpdateItem", classify(&e))),
            }
        }
        Err(Error::unavailable(
            Some(crate::error::RETRY_AFTER_SECS),
            "DynamoDB UpdateItem: a usage maximum kept changing",
        ))
    }
}

#[async_trait]
impl UsageStore for DynamoUsageStore {
    async fn record(&self, event: &UsageEvent) -> Result<()> {
        event.validate()?;
        let e = record_expr(event);
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(event)))
            .update_expression(e.expression())
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB UpdateItem", classify(&e)))?;
        let item = out.attributes.unwrap_or_default();
        let pending = raises(event, &item);
        if pending.is_empty() {
            return Ok(());
        }
        self.raise_maxima(event, pending).await
    }

    async fn hours(&self, connection_id: &str, lo: i64, hi: i64) -> Result<Vec<UsageBucket>> {
        if lo >= hi || connection_id.is_empty() {
            return Ok(Vec::new());
        }
        // Every `sk` of an hour h in [lo, hi) is `H#<h>#<model>` or `H#<h>@<key>#<model>`: at
        // least `H#<lo>#` and below `H#<hi>` (which sorts before `H#<hi>#...` and
        // `H#<hi>@...`), so BETWEEN is exactly the range.
        let low = usage_hour_sk(lo, "");
        let high = format!("{USAGE_HOUR_SK_PREFIX}{hi:012}");
        let mut hours = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND #sk BETWEEN :lo AND :hi")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(usage_pk(connection_id)))
                .expression_attribute_values(":lo", s(&low))
                .expression_attribute_values(":hi", s(&high))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| default_error("DynamoDB Query", classify(&e)))?;
            for item in page.items() {
                let bucket = decode(item)?;
                let h = bucket.start.unix_timestamp();
                // `H#<hi>` itself is inside BETWEEN; no bucket has that exact sk, but stay
                // exact whatever was written.
                if (lo..hi).contains(&h) {
                    hours.push(bucket);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(hours)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time() {
        assert_eq!(usage_hour_sk(3600, "gpt-4o"), "H#000000003600#gpt-4o");
        assert!(usage_hour_sk(3600, "zzz") < usage_hour_sk(7200, ""));
        assert!(
            usage_hour_sk(1_750_000_000, "m")
                < format!("{USAGE_HOUR_SK_PREFIX}{:012}", 1_750_003_600)
        );
        assert_eq!(usage_pk("c"), "USAGE#c");
        // A key's buckets of an hour sort after its unkeyed ones and before the next hour.
        let keyed = usage_key_hour_sk(3600, "k1", "zzz");
        assert_eq!(keyed, "H#000000003600@k1#zzz");
        assert!(usage_hour_sk(3600, "") < keyed);
        assert!(keyed < format!("{USAGE_HOUR_SK_PREFIX}{:012}", 7200));
    }

    #[test]
    fn one_update_adds_every_counter() {
        let mut event = UsageEvent::new("c", "m", time::OffsetDateTime::UNIX_EPOCH);
        event.ttft_ms = Some(5);
        event.error = Some(ErrorClass::RateLimited);
        let e = record_expr(&event);
        let expr = e.expression();
        assert!(expr.starts_with("ADD "), "{expr}");
        assert_eq!(e.add.len(), 8, "{expr}");
        assert!(expr.contains("if_not_exists"), "{expr}");
        let names: Vec<&String> = e.names.values().collect();
        assert!(names.iter().any(|n| *n == "err_rate_limited"));
        assert!(names.iter().any(|n| *n == TTL_ATTRIBUTE));
    }
}
