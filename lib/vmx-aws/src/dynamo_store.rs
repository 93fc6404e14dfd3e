//! [`ConnectionStore`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! Items:
//!
//! | item       | `pk`          | `sk`   | other attributes                                          |
//! |------------|---------------|--------|-----------------------------------------------------------|
//! | connection | `CONN`        | `<id>` | `name` (S), `version` (N), `doc` (S: the `Connection` JSON) |
//! | name       | `NAME#<name>` | `NAME` | `connectionId` (S)                                        |
//!
//! Neither ever carries `expiresAt`. `doc` holds secrets only as encrypted envelopes.
//!
//! - Ids are UUID v7, so `sk` order is creation order and `list` is one `Query` on
//!   `pk = CONN AND sk > :after`. All connections share one partition: fine for the few
//!   hundred connections of a deployment, whose reads are cached by the application anyway.
//! - Name uniqueness: every write that takes a name puts the name item with
//!   `attribute_not_exists(pk)` in the same transaction as the connection item, so no moment
//!   exists in which two connections hold one name, and a failed write leaves nothing behind.
//! - Optimistic concurrency: `replace` and `delete` are conditioned on the stored `version`.
//! - Reads are strongly consistent.
//!
//! Errors: throttling (after the SDK's own retries) and transport failures become
//! `Error::Unavailable` with a retry hint; error details name the operation and the error
//! code, never an item's contents.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use vmx_domain::connection::Connection;
use vmx_domain::ports::ConnectionStore;
use vmx_domain::{Error, Result};

use crate::error::{RETRY_AFTER_SECS, classify, default_error, is_throttling, json_error};
use crate::table::{PK, SK};

/// `pk` of every connection item.
pub const CONN_PK: &str = "CONN";
/// `pk` prefix of name items: `NAME#<name>`.
pub const NAME_PK_PREFIX: &str = "NAME#";
/// `sk` of name items.
pub const NAME_SK: &str = "NAME";

const ATTR_NAME: &str = "name";
const ATTR_VERSION: &str = "version";
const ATTR_DOC: &str = "doc";
const ATTR_CONNECTION_ID: &str = "connectionId";

/// Largest `doc` accepted: a DynamoDB item is at most 400 KB, keys and attribute names
/// included. The validated fields of a connection stay well below (about 270 KB at most).
pub const MAX_DOC_BYTES: usize = 390 * 1024;

/// Attempts of one transaction that DynamoDB cancels for a conflict with another
/// transaction (or throttles inside it); the SDK does not retry those cancellations.
const TRANSACTION_ATTEMPTS: u32 = 4;

const CCF: &str = "ConditionalCheckFailed";

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB connection store. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// A store with its own DynamoDB client built from the process-wide SDK config.
    pub fn from_sdk_config(config: &SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn conn_key(id: &str) -> Item {
        HashMap::from([(PK.to_owned(), s(CONN_PK)), (SK.to_owned(), s(id))])
    }

    fn name_key(name: &str) -> Item {
        HashMap::from([
            (PK.to_owned(), s(format!("{NAME_PK_PREFIX}{name}"))),
            (SK.to_owned(), s(NAME_SK)),
        ])
    }

    fn conn_item(connection: &Connection) -> Result<Item> {
        let doc = serde_json::to_string(connection)
            .map_err(|e| json_error("encoding a connection", &e))?;
        if doc.len() > MAX_DOC_BYTES {
            return Err(Error::internal(format!(
                "connection {} is too large to store: {} bytes, at most {MAX_DOC_BYTES}",
                connection.id,
                doc.len()
            )));
        }
        let mut item = Self::conn_key(&connection.id);
        item.insert(ATTR_NAME.to_owned(), s(&connection.name));
        item.insert(ATTR_VERSION.to_owned(), n(connection.version));
        item.insert(ATTR_DOC.to_owned(), AttributeValue::S(doc));
        Ok(item)
    }

    fn name_item(name: &str, id: &str) -> Item {
        let mut item = Self::name_key(name);
        item.insert(ATTR_CONNECTION_ID.to_owned(), s(id));
        item
    }

    fn put(
        &self,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<TransactWriteItem> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        for (k, v) in names {
            put = put.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            put = put.expression_attribute_values(*k, v.clone());
        }
        let put = put
            .build()
            .map_err(|e| Error::internal(format!("building a DynamoDB Put: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(
        &self,
        key: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
    ) -> Result<TransactWriteItem> {
        let mut delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .condition_expression(condition);
        for (k, v) in names {
            delete = delete.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            delete = delete.expression_attribute_values(*k, v.clone());
        }
        let delete = delete
            .build()
            .map_err(|e| Error::internal(format!("building a DynamoDB Delete: {e}")))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// Runs a write transaction. `Ok(Err(codes))` when a condition failed: the cancellation
    /// reason code of each item, in order. Transactions cancelled only for conflicts with
    /// other transactions or for throttling are retried a few times, each with a fresh
    /// idempotency token (the SDK's own retries of one attempt reuse its token, so a retried
    /// write that had in fact succeeded is not reported as a failed condition).
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<std::result::Result<(), Vec<String>>> {
        const WHAT: &str = "DynamoDB TransactWriteItems";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            let canceled = match &err {
                SdkError::ServiceError(service) => match service.err() {
                    TransactWriteItemsError::TransactionCanceledException(tc) => Some(
                        tc.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_owned())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                },
                _ => None,
            };
            let Some(codes) = canceled else {
                return Err(default_error(WHAT, classify(&err)));
            };
            if codes.iter().any(|c| c == CCF) {
                return Ok(Err(codes));
            }
            let transient = codes.iter().any(|c| {
                matches!(
                    c.as_str(),
                    "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                ) || is_throttling(c)
            });
            let detail = format!("{WHAT}: transaction canceled ({})", codes.join(", "));
            if !transient {
                return Err(Error::internal(detail));
            }
            if attempt >= TRANSACTION_ATTEMPTS {
                return Err(Error::unavailable(Some(RETRY_AFTER_SECS), detail));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn get_item(&self, key: Item, projection: Option<&str>) -> Result<Option<Item>> {
        let mut request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true);
        if let Some(p) = projection {
            request = request
                .projection_expression(p)
                .expression_attribute_names("#n", ATTR_NAME)
                .expression_attribute_names("#v", ATTR_VERSION);
        }
        let out = request
            .send()
            .await
            .map_err(|e| default_error("DynamoDB GetItem", classify(&e)))?;
        Ok(out.item)
    }

    /// The stored name and version of a connection.
    async fn head(&self, id: &str) -> Result<Option<(String, u64)>> {
        let Some(item) = self.get_item(Self::conn_key(id), Some("#n, #v")).await? else {
            return Ok(None);
        };
        Ok(Some((
            string_attr(&item, ATTR_NAME)?.to_owned(),
            version_attr(&item)?,
        )))
    }

    /// The error of a write whose version condition failed.
    async fn version_error(&self, id: &str) -> Error {
        match self.head(id).await {
            Ok(Some((_, current))) => Error::VersionConflict { current },
            Ok(None) => Error::NotFound { what: "connection" },
            Err(e) => e,
        }
    }
}

/// Exponential backoff with jitter between transaction attempts: 20 ms, 40 ms, 80 ms, ...
/// each scaled by a random factor in [0.5, 1) so that writers that collided spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(6);
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u64;
    Duration::from_millis(base / 2 + base * random / 0x2_0000)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn string_attr<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(Error::internal(format!(
            "stored item has no string attribute {name}"
        ))),
    }
}

fn version_attr(item: &Item) -> Result<u64> {
    match item.get(ATTR_VERSION) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| Error::internal("stored item has a non-integer version")),
        _ => Err(Error::internal(
            "stored item has no number attribute version",
        )),
    }
}

fn decode(item: &Item) -> Result<Connection> {
    let doc = string_attr(item, ATTR_DOC)?;
    serde_json::from_str(doc).map_err(|e| json_error("decoding a stored connection", &e))
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn insert(&self, connection: &Connection) -> Result<()> {
        let items = vec![
            self.put(
                Self::conn_item(connection)?,
                "attribute_not_exists(pk)",
                &[],
                &[],
            )?,
            self.put(
                Self::name_item(&connection.name, &connection.id),
                "attribute_not_exists(pk)",
                &[],
                &[],
            )?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(codes) if codes.get(1).is_some_and(|c| c == CCF) => {
                Err(Error::NameTaken(connection.name.clone()))
            }
            Err(_) => Err(Error::internal(format!(
                "connection id {} already exists",
                connection.id
            ))),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Connection>> {
        self.get_item(Self::conn_key(id), None)
            .await?
            .map(|item| decode(&item))
            .transpose()
    }

    async fn get_by_name(&self, name: &str) -> Result<Option<Connection>> {
        let Some(item) = self.get_item(Self::name_key(name), None).await? else {
            return Ok(None);
        };
        let id = string_attr(&item, ATTR_CONNECTION_ID)?;
        Ok(self.get(id).await?.filter(|c| c.name == name))
    }

    async fn list(&self, limit: usize, after: Option<&str>) -> Result<Vec<Connection>> {
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
                .expression_attribute_values(":pk", s(CONN_PK))
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
            // Pages also end at 1 MB of data, before `Limit` items.
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn replace(
        &self,
        previous: &Connection,
        next: &Connection,
        expected_version: u64,
    ) -> Result<()> {
        if previous.id != next.id {
            return Err(Error::internal(
                "replace: the ids of previous and next differ",
            ));
        }
        let id = next.id.as_str();
        let mut items = vec![self.put(
            Self::conn_item(next)?,
            "#v = :expected",
            &[("#v", ATTR_VERSION)],
            &[(":expected", n(expected_version))],
        )?];
        let renamed = previous.name != next.name;
        if renamed {
            items.push(self.delete(
                Self::name_key(&previous.name),
                "#cid = :id",
                &[("#cid", ATTR_CONNECTION_ID)],
                &[(":id", s(id))],
            )?);
            items.push(self.put(
                Self::name_item(&next.name, id),
                "attribute_not_exists(pk)",
                &[],
                &[],
            )?);
        }
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(codes) if codes.first().is_some_and(|c| c == CCF) => {
                Err(self.version_error(id).await)
            }
            Err(codes) if renamed && codes.get(2).is_some_and(|c| c == CCF) => {
                Err(Error::NameTaken(next.name.clone()))
            }
            Err(_) => Err(Error::internal(format!(
                "replace: the name item of connection {id} does not match its previous name"
            ))),
        }
    }

    async fn delete(&self, id: &str) -> Result<()> {
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some((name, version)) = self.head(id).await? else {
                return Err(Error::NotFound { what: "connection" });
            };
            let delete_conn = self.delete(
                Self::conn_key(id),
                "#v = :v",
                &[("#v", ATTR_VERSION)],
                &[(":v", n(version))],
            )?;
            let delete_name = self.delete(
                Self::name_key(&name),
                "#cid = :id",
                &[("#cid", ATTR_CONNECTION_ID)],
                &[(":id", s(id))],
            )?;
            match self
                .transact(vec![delete_conn.clone(), delete_name])
                .await?
            {
                Ok(()) => return Ok(()),
                // Changed or deleted since read: read again.
                Err(codes) if codes.first().is_some_and(|c| c == CCF) => continue,
                Err(_) => {
                    // The name item is missing or belongs to another connection (only after
                    // a manual edit): delete the connection alone, leaving that item be.
                    tracing::warn!(connection_id = id, "name item out of sync on delete");
                    match self.transact(vec![delete_conn]).await? {
                        Ok(()) => return Ok(()),
                        Err(_) => continue,
                    }
                }
            }
        }
        Err(Error::unavailable(
            Some(RETRY_AFTER_SECS),
            format!("delete: connection {id} kept changing"),
        ))
    }
}
