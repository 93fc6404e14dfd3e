//! [`ApiKeyStore`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! Two items per key, written together in one transaction:
//!
//! | item    | `pk`             | `sk`     | other attributes                                   |
//! |---------|------------------|----------|----------------------------------------------------|
//! | by hash | `APIKEY#<hash>`  | `APIKEY` | `doc` (S), `revokedAt` (N)?, `lastUsedAt` (N)?      |
//! | listing | `APIKEYS`        | `<id>`   | the same                                           |
//!
//! `doc` is the record's JSON without `revokedAt`/`lastUsedAt`, which are separate number
//! attributes (epoch nanoseconds) so that revoking and marking a key used are `UpdateItem`s
//! of one attribute each and never undo one another. `<hash>` is the lowercase hex SHA-256
//! of the key; the key itself is stored nowhere.
//!
//! - Authentication (`find_by_hash`) is one strongly consistent `GetItem` of the by-hash item
//!   (1 RCU): a revocation is seen by the next request that reaches the store.
//! - `get` is one `GetItem` of the listing item; `list` is one `Query` on `pk = APIKEYS`
//!   (ids are UUID v7: creation order). All keys share one partition, like connections.
//! - `insert` is one `TransactWriteItems` of two `Put`s conditioned on
//!   `attribute_not_exists(pk)`; `revoke`, `mark_used`, `set_capacity` (which rewrites
//!   `doc`) and `delete` read the listing item (for the hash), then write both items in one
//!   transaction.
//! - Neither item carries `expiresAt`: an expired key is kept (and shown as expired) until
//!   deleted.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use time::OffsetDateTime;
use vmx_domain::api_key::{ApiKeyRecord, ApiKeyStore};
use vmx_domain::capacity::CapacityEntry;
use vmx_domain::{Error, Result};

use crate::dynamo_store::{CCF, s, transact_write};
use crate::error::{classify, default_error, json_error};
use crate::table::{API_KEY_SK, API_KEYS_PK, PK, SK, api_key_pk};

const ATTR_DOC: &str = "doc";
const ATTR_REVOKED: &str = "revokedAt";
const ATTR_LAST_USED: &str = "lastUsedAt";

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB API key store. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct DynamoApiKeyStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl DynamoApiKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn listing_key(id: &str) -> Item {
        HashMap::from([(PK.to_owned(), s(API_KEYS_PK)), (SK.to_owned(), s(id))])
    }

    fn hash_key(hash: &str) -> Item {
        HashMap::from([
            (PK.to_owned(), s(api_key_pk(hash))),
            (SK.to_owned(), s(API_KEY_SK)),
        ])
    }

    async fn get_item(&self, key: Item) -> Result<Option<ApiKeyRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB GetItem", classify(&e)))?;
        out.item.as_ref().map(decode).transpose()
    }

    /// The same `Update` of the listing and the by-hash item of `record`, in one transaction.
    /// `Ok(false)` when a condition failed.
    async fn update_both(
        &self,
        record: &ApiKeyRecord,
        expression: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<bool> {
        let mut items = Vec::with_capacity(2);
        for key in [Self::listing_key(&record.id), Self::hash_key(&record.hash)] {
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression(expression)
                .condition_expression(condition)
                .expression_attribute_names("#pk", PK);
            for (k, v) in names {
                update = update.expression_attribute_names(*k, *v);
            }
            for (k, v) in values {
                update = update.expression_attribute_values(*k, v.clone());
            }
            let update = update
                .build()
                .map_err(|e| Error::internal(format!("building a DynamoDB Update: {e}")))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(transact_write(&self.client, items).await?.is_ok())
    }
}

impl DynamoApiKeyStore {
    /// [`Self::update_both`] of a key that must still exist, then the key as stored.
    async fn update_existing(
        &self,
        record: &ApiKeyRecord,
        expression: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<ApiKeyRecord> {
        let written = self
            .update_both(record, expression, "attribute_exists(#pk)", names, values)
            .await?;
        if !written {
            return Err(Error::NotFound { what: "API key" });
        }
        self.get(&record.id)
            .await?
            .ok_or(Error::NotFound { what: "API key" })
    }
}

fn nanos(t: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(t.unix_timestamp_nanos().to_string())
}

fn time_attr(item: &Item, name: &str) -> Result<Option<OffsetDateTime>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(v)) => v
            .parse::<i128>()
            .ok()
            .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
            .map(Some)
            .ok_or_else(|| Error::internal(format!("stored API key has a malformed {name}"))),
        Some(_) => Err(Error::internal(format!(
            "stored API key has a non-number {name}"
        ))),
    }
}

fn item_of(key: Item, record: &ApiKeyRecord) -> Result<Item> {
    let mut doc_record = record.clone();
    doc_record.revoked_at = None;
    doc_record.last_used_at = None;
    let doc =
        serde_json::to_string(&doc_record).map_err(|e| json_error("encoding an API key", &e))?;
    let mut item = key;
    item.insert(ATTR_DOC.to_owned(), AttributeValue::S(doc));
    if let Some(t) = record.revoked_at {
        item.insert(ATTR_REVOKED.to_owned(), nanos(t));
    }
    if let Some(t) = record.last_used_at {
        item.insert(ATTR_LAST_USED.to_owned(), nanos(t));
    }
    Ok(item)
}

fn decode(item: &Item) -> Result<ApiKeyRecord> {
    let Some(AttributeValue::S(doc)) = item.get(ATTR_DOC) else {
        return Err(Error::internal("stored API key has no doc"));
    };
    let mut record: ApiKeyRecord =
        serde_json::from_str(doc).map_err(|e| json_error("decoding a stored API key", &e))?;
    record.revoked_at = time_attr(item, ATTR_REVOKED)?;
    record.last_used_at = time_attr(item, ATTR_LAST_USED)?;
    Ok(record)
}

/// A hash as [`vmx_domain::api_key::hash_key`] makes them; anything else cannot be stored.
fn is_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeyStore {
    async fn insert(&self, key: &ApiKeyRecord) -> Result<()> {
        if !is_hash(&key.hash) {
            return Err(Error::internal(
                "an API key hash must be 64 lowercase hex digits",
            ));
        }
        let mut items = Vec::with_capacity(2);
        for item in [
            item_of(Self::listing_key(&key.id), key)?,
            item_of(Self::hash_key(&key.hash), key)?,
        ] {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| Error::internal(format!("building a DynamoDB Put: {e}")))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match transact_write(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(codes) if codes.first().is_some_and(|c| c == CCF) => Err(Error::internal(format!(
                "API key id {} already exists",
                key.id
            ))),
            Err(_) => Err(Error::internal("API key hash already exists")),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        self.get_item(Self::listing_key(id)).await
    }

    async fn find_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        if !is_hash(hash) {
            return Ok(None);
        }
        self.get_item(Self::hash_key(hash)).await
    }

    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let remaining = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(API_KEYS_PK))
                .limit(remaining)
                .set_exclusive_start_key(start.take());
            query = match after {
                Some(after) => query
                    .key_condition_expression("#pk = :pk AND #sk > :after")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":after", s(after)),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let page = query
                .send()
                .await
                .map_err(|e| default_error("DynamoDB Query", classify(&e)))?;
            for item in page.items() {
                out.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn revoke(&self, id: &str, at: OffsetDateTime) -> Result<ApiKeyRecord> {
        let Some(current) = self.get(id).await? else {
            return Err(Error::NotFound { what: "API key" });
        };
        if current.revoked_at.is_some() {
            return Ok(current);
        }
        self.update_existing(
            &current,
            "SET #r = if_not_exists(#r, :at)",
            &[("#r", ATTR_REVOKED)],
            &[(":at", nanos(at))],
        )
        .await
    }

    async fn set_capacity(&self, id: &str, capacity: Vec<CapacityEntry>) -> Result<ApiKeyRecord> {
        let Some(mut current) = self.get(id).await? else {
            return Err(Error::NotFound { what: "API key" });
        };
        if current.capacity == capacity {
            return Ok(current);
        }
        current.capacity = capacity;
        let mut doc = current.clone();
        doc.revoked_at = None;
        doc.last_used_at = None;
        let doc = serde_json::to_string(&doc).map_err(|e| json_error("encoding an API key", &e))?;
        self.update_existing(
            &current,
            "SET #d = :doc",
            &[("#d", ATTR_DOC)],
            &[(":doc", AttributeValue::S(doc))],
        )
        .await
    }

    async fn mark_used(&self, id: &str, at: OffsetDateTime) -> Result<()> {
        let Some(current) = self.get(id).await? else {
            return Err(Error::NotFound { what: "API key" });
        };
        if current.last_used_at.is_some_and(|t| t >= at) {
            return Ok(());
        }
        let written = self
            .update_both(
                &current,
                "SET #l = :at",
                "attribute_exists(#pk) AND (attribute_not_exists(#l) OR #l < :at)",
                &[("#l", ATTR_LAST_USED)],
                &[(":at", nanos(at))],
            )
            .await?;
        if written || self.get(id).await?.is_some() {
            // Not written only if deleted, or marked with a later time meanwhile.
            return Ok(());
        }
        Err(Error::NotFound { what: "API key" })
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let Some(current) = self.get(id).await? else {
            return Err(Error::NotFound { what: "API key" });
        };
        let mut items = Vec::with_capacity(2);
        for (key, condition) in [
            (Self::listing_key(id), Some("attribute_exists(pk)")),
            (Self::hash_key(&current.hash), None),
        ] {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key))
                .set_condition_expression(condition.map(str::to_owned))
                .build()
                .map_err(|e| Error::internal(format!("building a DynamoDB Delete: {e}")))?;
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        match transact_write(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::NotFound { what: "API key" }),
        }
    }
}
