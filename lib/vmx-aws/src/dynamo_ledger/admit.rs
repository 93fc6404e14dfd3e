//! One attempt of an admission (one conditional `UpdateItem`, or a `TransactWriteItems` of
//! the connection and IP items) and the counters it leaves, read back where DynamoDB did
//! not return them.

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use vmx_domain::admission::{AdmitRequest, Counters};
use vmx_domain::prioritization::PoolWindow;
use vmx_domain::{Error, Result};

use super::expr::{ItemPlan, config_version_of, counters_of};
use super::{DynamoLedger, Item};
use crate::error::{classify, default_error, is_throttling};
use crate::table::CAP_SK;

impl DynamoLedger {
    /// One attempt at charging `charge` tokens to every item of `plans`, decided on the pool
    /// snapshot `pools`.
    pub(super) async fn attempt(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plans: &[ItemPlan],
        charge: u64,
        pools: &[PoolWindow],
    ) -> Result<Attempt> {
        let mut specs = Vec::with_capacity(plans.len());
        for plan in plans {
            match self.update(request, pk, plan, charge, pools) {
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
    /// else read (strongly consistent), and the connection's configuration version when the
    /// connection item is among them.
    pub(super) async fn counters(
        &self,
        request: &AdmitRequest,
        pk: &str,
        plans: &[ItemPlan],
        items: Vec<Option<Item>>,
        read_missing: bool,
    ) -> Result<(Vec<Counters>, Option<u64>)> {
        let mut out = vec![Counters::default(); request.windows.len()];
        let mut version = None;
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
            if plan.sk == CAP_SK {
                version = Some(config_version_of(&item));
            }
            for &i in &plan.windows {
                if let (Some(w), Some(slot)) = (request.windows.get(i), out.get_mut(i)) {
                    *slot = counters_of(&item, &w.window.key);
                }
            }
        }
        Ok((out, version))
    }
}

pub(super) enum Attempt {
    /// Charged; the items after the charge where DynamoDB returned them.
    Admitted(Vec<Option<Item>>),
    /// A condition failed; the items before, where DynamoDB returned them.
    Failed(Vec<Option<Item>>),
    /// A transaction conflicted with another one (or was throttled inside).
    Conflict(String),
}

pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << attempt.min(6)))
}
