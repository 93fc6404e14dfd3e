//! [`CapacityLedger::sweep`] on one connection's counter items: the query of the items and
//! the update of each.
//!
//! [`CapacityLedger::sweep`]: vmx_domain::ports::CapacityLedger::sweep

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use vmx_domain::Result;

use super::expr::{counter_name, is_stale_counter, number_i};
use super::{DynamoLedger, Item, TTL_GRACE_SECS};
use crate::error::{classify, default_error};
use crate::table::{PK, SK, TTL_ATTRIBUTE};

impl DynamoLedger {
    /// Every counter item of the connection (`pk = CAP#<id>`: the connection item and its
    /// IP items), all attributes.
    pub(super) async fn query_counter_items(&self, pk: &str) -> Result<Vec<Item>> {
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
    ///
    /// [`CapacityLedger::sweep`]: vmx_domain::ports::CapacityLedger::sweep
    pub(super) async fn sweep_item(
        &self,
        item: &Item,
        keep_lifetime: bool,
        now: i64,
    ) -> Result<u64> {
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
}
