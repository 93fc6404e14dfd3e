//! [`ConnectionStore`] on DynamoDB, in the single vmx table (see [`crate::table`]).
//!
//! Items:
//!
//! | item       | `pk`          | `sk`   | other attributes                                          |
//! |------------|---------------|--------|-----------------------------------------------------------|
//! | connection | `CONN`        | `<id>` | `name` (S), `version` (N), `doc` (S: the `Connection` JSON), `disc` (M), `dv` (N)? |
//! | name       | `NAME#<name>` | `NAME` | `connectionId` (S)                                        |
//!
//! Neither ever carries `expiresAt`. `doc` holds secrets only as encrypted envelopes.
//!
//! Discovered capacity (see `vmx_domain::discovered`) is not in `doc` but in the map `disc`
//! of the same item: `disc.<model> = {u: N (updatedAt, epoch ns), v: S (DiscoveredModel
//! JSON)}`, with `dv` (N) counting the discovery writes to the item.
//! - The gateway records one model with one `UpdateItem` `SET disc.#m = :v ADD dv :1`,
//!   conditioned on the item existing and the stored entry being older. It touches neither
//!   `doc` nor `version`, so an admin's `If-Match` keeps working.
//! - `replace` is an `Update` of `doc`, `name` and `version` only, conditioned on the
//!   version: it never touches `disc`, so an update never erases a discovery and a discovery
//!   never erases an update, with no conflict between them and no extra read.
//! - Except for very large connections ([`UPDATE_DOCS_MAX`]): moto counts the old and new
//!   value of an updated attribute against the 400 KB limit, so those are replaced with a
//!   `Put` of the whole item that carries over `disc` and `dv` read just before (one
//!   `GetItem`), conditioned on the version and on `dv`; a discovery written in between
//!   fails the condition and the put is retried on a fresh read.
//! - A delete removes the item and its `disc` at once; a concurrent discovery then fails its
//!   condition, so no orphan is left.
//! - Reads stay one `GetItem` (or the same `Query` for `list`).
//!
//! Cost of a discovery write: the WCUs of the whole connection item (usually 1-2 KB), and
//! discoveries are only written when the limits change.
//!
//! History: the discovery write returns the model's previous entry (`ReturnValues =
//! UPDATED_OLD`, which the roles' `dynamodb:Attributes` condition allows), so the changes are
//! worked out against what the write replaced; each change is then one `UpdateItem` of its
//! history item (`pk = DISCH#<id>`, `sk = DiscoveredChange::key()`, `doc` the change JSON,
//! `model`, `expiresAt` [`HISTORY_RETENTION_DAYS`] later; `UpdateItem` so that the inference
//! role needs no `PutItem`). Those writes follow the discovery write, not in one transaction
//! (a transaction returns no old values): a failure of one leaves the limits recorded and
//! that change out of the history, and is returned as an error. A history page is one or
//! more `Query`s on `pk = DISCH#<id>`, newest first, filtered by `model` when asked.
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
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use vmx_domain::connection::{Connection, DiscoveredCapacity, DiscoveredModel};
use vmx_domain::discovered::{
    ChangeSource, DiscoveredCapacityStore, DiscoveredChange, HISTORY_RETENTION_DAYS, changes,
    validate_model,
};
use vmx_domain::ports::ConnectionStore;
use vmx_domain::{Error, Result};

use crate::error::{Failure, RETRY_AFTER_SECS, classify, default_error, is_throttling, json_error};
use crate::table::{CONN_PK, NAME_SK, PK, SK, TTL_ATTRIBUTE, disch_pk, name_pk};

const ATTR_NAME: &str = "name";
const ATTR_VERSION: &str = "version";
const ATTR_DOC: &str = "doc";
const ATTR_CONNECTION_ID: &str = "connectionId";
/// Map of discovered capacity per model.
const ATTR_DISC: &str = "disc";
/// In a `disc` entry: `updatedAt` in epoch nanoseconds (N), which orders observations.
const DISC_UPDATED: &str = "u";
/// In a `disc` entry: the `DiscoveredModel` JSON (S).
const DISC_VALUE: &str = "v";
/// Number of discovery writes to the item (N, absent before the first): what `replace`
/// checks to carry `disc` over without losing a discovery written meanwhile.
const ATTR_DV: &str = "dv";

/// Largest `doc` accepted: a DynamoDB item is at most 400 KB, keys and attribute names
/// included. The validated fields of a connection stay well below (about 270 KB at most).
pub const MAX_DOC_BYTES: usize = 390 * 1024;

/// Attempts of one transaction that DynamoDB cancels for a conflict with another
/// transaction (or throttles inside it); the SDK does not retry those cancellations.
const TRANSACTION_ATTEMPTS: u32 = 4;

/// `replace` writes with an `Update` unless the previous and the next `doc` together exceed
/// this. Above it (connections of roughly 190 KB and more: hundreds of long allowed-model
/// ids), it writes with a `Put` carrying `disc` over: moto counts the old and the new value
/// of an updated attribute against the 400 KB item limit (DynamoDB counts the result), so an
/// `Update` of a large `doc` fails there.
pub const UPDATE_DOCS_MAX: usize = 380 * 1024;

/// Attempts of a `Put` replace that concurrent discoveries keep invalidating.
const PUT_REPLACE_ATTEMPTS: u32 = 8;

pub(crate) const CCF: &str = "ConditionalCheckFailed";

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
            (PK.to_owned(), s(name_pk(name))),
            (SK.to_owned(), s(NAME_SK)),
        ])
    }

    /// The `doc` of a connection: its JSON without the discovered capacity (kept in `disc`).
    fn doc(connection: &Connection) -> Result<String> {
        let mut c = connection.clone();
        c.discovered_capacity = DiscoveredCapacity::default();
        let doc = serde_json::to_string(&c).map_err(|e| json_error("encoding a connection", &e))?;
        if doc.len() > MAX_DOC_BYTES {
            return Err(Error::internal(format!(
                "connection {} is too large to store: {} bytes, at most {MAX_DOC_BYTES}",
                connection.id,
                doc.len()
            )));
        }
        Ok(doc)
    }

    fn conn_item(connection: &Connection) -> Result<Item> {
        let doc = Self::doc(connection)?;
        let mut disc = HashMap::new();
        for (model, d) in &connection.discovered_capacity.models {
            disc.insert(model.clone(), disc_entry(d)?);
        }
        let mut item = Self::conn_key(&connection.id);
        item.insert(ATTR_NAME.to_owned(), s(&connection.name));
        item.insert(ATTR_VERSION.to_owned(), n(connection.version));
        item.insert(ATTR_DOC.to_owned(), AttributeValue::S(doc));
        item.insert(ATTR_DISC.to_owned(), AttributeValue::M(disc));
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

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<std::result::Result<(), Vec<String>>> {
        transact_write(&self.client, items).await
    }

    /// A strongly consistent read of `key`, all attributes or those of `projection`
    /// (expression, attribute names).
    async fn get_item(
        &self,
        key: Item,
        projection: Option<(&str, &[(&str, &str)])>,
    ) -> Result<Option<Item>> {
        let mut request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true);
        if let Some((expression, names)) = projection {
            request = request.projection_expression(expression);
            for (k, v) in names {
                request = request.expression_attribute_names(*k, *v);
            }
        }
        let out = request
            .send()
            .await
            .map_err(|e| default_error("DynamoDB GetItem", classify(&e)))?;
        Ok(out.item)
    }

    /// The stored name and version of a connection.
    async fn head(&self, id: &str) -> Result<Option<(String, u64)>> {
        let names = [("#n", ATTR_NAME), ("#v", ATTR_VERSION)];
        let Some(item) = self
            .get_item(Self::conn_key(id), Some(("#n, #v", &names)))
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            string_attr(&item, ATTR_NAME)?.to_owned(),
            version_attr(&item)?,
        )))
    }

    /// The name items' part of a replace: free the old name, take the new one.
    fn rename_items(
        &self,
        previous: &Connection,
        next: &Connection,
    ) -> Result<Vec<TransactWriteItem>> {
        if previous.name == next.name {
            return Ok(Vec::new());
        }
        Ok(vec![
            self.delete(
                Self::name_key(&previous.name),
                "#cid = :id",
                &[("#cid", ATTR_CONNECTION_ID)],
                &[(":id", s(&next.id))],
            )?,
            self.put(
                Self::name_item(&next.name, &next.id),
                "attribute_not_exists(pk)",
                &[],
                &[],
            )?,
        ])
    }

    /// `replace` as one `Update` of `doc`, `name` and `version`, conditioned on the version:
    /// `disc` and `dv` are not touched, so no discovery can conflict with it.
    async fn replace_by_update(
        &self,
        previous: &Connection,
        next: &Connection,
        doc: String,
        expected_version: u64,
    ) -> Result<()> {
        let id = next.id.as_str();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::conn_key(id)))
            .update_expression(
                "SET #doc = :doc, #n = :name, #v = :next, #disc = if_not_exists(#disc, :empty)",
            )
            .condition_expression("#v = :expected");
        for (k, v) in [
            ("#doc", ATTR_DOC),
            ("#n", ATTR_NAME),
            ("#v", ATTR_VERSION),
            ("#disc", ATTR_DISC),
        ] {
            update = update.expression_attribute_names(k, v);
        }
        for (k, v) in [
            (":doc", AttributeValue::S(doc)),
            (":name", s(&next.name)),
            (":next", n(next.version)),
            (":empty", AttributeValue::M(HashMap::new())),
            (":expected", n(expected_version)),
        ] {
            update = update.expression_attribute_values(k, v);
        }
        let update = update
            .build()
            .map_err(|e| Error::internal(format!("building a DynamoDB Update: {e}")))?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        items.extend(self.rename_items(previous, next)?);
        let renamed = items.len() > 1;
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(codes) if codes.first().is_some_and(|c| c == CCF) => {
                Err(match self.head(id).await {
                    Ok(Some((_, current))) => Error::VersionConflict { current },
                    Ok(None) => Error::NotFound { what: "connection" },
                    Err(e) => e,
                })
            }
            Err(codes) if renamed && codes.get(2).is_some_and(|c| c == CCF) => {
                Err(Error::NameTaken(next.name.clone()))
            }
            Err(_) => Err(Error::internal(format!(
                "replace: the name item of connection {id} does not match its previous name"
            ))),
        }
    }

    /// `replace` as a `Put` of the whole item for very large connections: reads `disc` and
    /// `dv`, then puts the new item with them, conditioned on the version and on `dv`, so a
    /// discovery written in between fails the put and it is retried on a fresh read.
    async fn replace_by_put(
        &self,
        previous: &Connection,
        next: &Connection,
        expected_version: u64,
    ) -> Result<()> {
        let id = next.id.as_str();
        let mut attempt = 0;
        while attempt < PUT_REPLACE_ATTEMPTS {
            attempt += 1;
            let Some(current) = self.disc_of(id).await? else {
                return Err(Error::NotFound { what: "connection" });
            };
            let version = version_attr(&current)?;
            if version != expected_version {
                return Err(Error::VersionConflict { current: version });
            }
            let mut item = Self::conn_item(next)?;
            item.insert(
                ATTR_DISC.to_owned(),
                current
                    .get(ATTR_DISC)
                    .cloned()
                    .unwrap_or_else(|| AttributeValue::M(HashMap::new())),
            );
            let mut values = vec![(":expected", n(expected_version))];
            let condition = match current.get(ATTR_DV) {
                Some(dv) => {
                    item.insert(ATTR_DV.to_owned(), dv.clone());
                    values.push((":dv", dv.clone()));
                    "#v = :expected AND #dv = :dv"
                }
                None => "#v = :expected AND attribute_not_exists(#dv)",
            };
            let mut items = vec![self.put(
                item,
                condition,
                &[("#v", ATTR_VERSION), ("#dv", ATTR_DV)],
                &values,
            )?];
            items.extend(self.rename_items(previous, next)?);
            let renamed = items.len() > 1;
            match self.transact(items).await? {
                Ok(()) => return Ok(()),
                // Changed since read (a discovery, an update or a delete): read again.
                Err(codes) if codes.first().is_some_and(|c| c == CCF) => {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(codes) if renamed && codes.get(2).is_some_and(|c| c == CCF) => {
                    return Err(Error::NameTaken(next.name.clone()));
                }
                Err(_) => {
                    return Err(Error::internal(format!(
                        "replace: the name item of connection {id} does not match its previous name"
                    )));
                }
            }
        }
        Err(Error::unavailable(
            Some(RETRY_AFTER_SECS),
            format!("replace: connection {id} kept changing"),
        ))
    }

    /// The version, `disc` and `dv` of a connection item.
    async fn disc_of(&self, id: &str) -> Result<Option<Item>> {
        let names = [("#v", ATTR_VERSION), ("#disc", ATTR_DISC), ("#dv", ATTR_DV)];
        self.get_item(Self::conn_key(id), Some(("#v, #disc, #dv", &names)))
            .await
    }
}

/// Runs a write transaction. `Ok(Err(codes))` when a condition failed: the cancellation
/// reason code of each item, in order. Transactions cancelled only for conflicts with
/// other transactions or for throttling are retried a few times, each with a fresh
/// idempotency token (the SDK's own retries of one attempt reuse its token, so a retried
/// write that had in fact succeeded is not reported as a failed condition).
pub(crate) async fn transact_write(
    client: &Client,
    items: Vec<TransactWriteItem>,
) -> Result<std::result::Result<(), Vec<String>>> {
    const WHAT: &str = "DynamoDB TransactWriteItems";
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
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

/// Exponential backoff with jitter between transaction attempts: 20 ms, 40 ms, 80 ms, ...
/// each scaled by a random factor in [0.5, 1) so that writers that collided spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(6);
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u64;
    Duration::from_millis(base / 2 + base * random / 0x2_0000)
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: u64) -> AttributeValue {
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

/// The `disc` entry of one model: `{u: updatedAt in epoch ns, v: the JSON}`.
fn disc_entry(d: &DiscoveredModel) -> Result<AttributeValue> {
    let json =
        serde_json::to_string(d).map_err(|e| json_error("encoding discovered capacity", &e))?;
    Ok(AttributeValue::M(HashMap::from([
        (
            DISC_UPDATED.to_owned(),
            AttributeValue::N(d.updated_at.unix_timestamp_nanos().to_string()),
        ),
        (DISC_VALUE.to_owned(), AttributeValue::S(json)),
    ])))
}

/// The `DiscoveredModel` of one `disc` entry.
fn disc_model(entry: &AttributeValue) -> Result<DiscoveredModel> {
    let Some(AttributeValue::S(json)) = entry.as_m().ok().and_then(|m| m.get(DISC_VALUE)) else {
        return Err(Error::internal("malformed discovered capacity entry"));
    };
    serde_json::from_str(json).map_err(|e| json_error("decoding stored discovered capacity", &e))
}

fn decode(item: &Item) -> Result<Connection> {
    let doc = string_attr(item, ATTR_DOC)?;
    let mut c: Connection =
        serde_json::from_str(doc).map_err(|e| json_error("decoding a stored connection", &e))?;
    if let Some(AttributeValue::M(disc)) = item.get(ATTR_DISC) {
        for (model, entry) in disc {
            let Some(AttributeValue::S(json)) = entry.as_m().ok().and_then(|m| m.get(DISC_VALUE))
            else {
                return Err(Error::internal(format!(
                    "connection {} has a malformed discovered capacity entry",
                    c.id
                )));
            };
            let d: DiscoveredModel = serde_json::from_str(json)
                .map_err(|e| json_error("decoding stored discovered capacity", &e))?;
            c.discovered_capacity.models.insert(model.clone(), d);
        }
    }
    Ok(c)
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
        let doc = Self::doc(next)?;
        if Self::doc(previous)?.len() + doc.len() <= UPDATE_DOCS_MAX {
            self.replace_by_update(previous, next, doc, expected_version)
                .await
        } else {
            self.replace_by_put(previous, next, expected_version).await
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

/// In a history item: the `DiscoveredChange` JSON (S).
const HIST_DOC: &str = "doc";
/// In a history item: the change's model (S), for the `model` filter.
const HIST_MODEL: &str = "model";

/// How one attempt of a discovery write ended.
enum DiscWrite {
    /// Written; the model's entry it replaced, if any.
    Done(Option<DiscoveredModel>),
    /// The condition failed: the connection is gone, or the stored entry is as new.
    ConditionFailed,
    /// The item has no `disc` map to set a model in.
    NoMap,
}

impl DynamoStore {
    async fn disc_update(
        &self,
        id: &str,
        model: &str,
        expression: &str,
        condition: &str,
        entry: &AttributeValue,
        updated: &AttributeValue,
    ) -> Result<DiscWrite> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::conn_key(id)))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#disc", ATTR_DISC)
            .expression_attribute_names("#dv", ATTR_DV)
            .expression_attribute_values(":d", entry.clone())
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedOld);
        if expression.contains("#m") {
            request = request
                .expression_attribute_names("#m", model)
                .expression_attribute_names("#u", DISC_UPDATED)
                .expression_attribute_values(":u", updated.clone());
        }
        match request.send().await {
            // With UPDATED_OLD, `disc` holds the model's old entry when there was one
            // (DynamoDB returns the updated path, moto the whole old map).
            Ok(out) => Ok(DiscWrite::Done(
                out.attributes()
                    .and_then(|old| old.get(ATTR_DISC))
                    .and_then(|disc| disc.as_m().ok())
                    .and_then(|disc| disc.get(model))
                    .map(disc_model)
                    .transpose()?,
            )),
            Err(e) => {
                if let SdkError::ServiceError(service) = &e
                    && matches!(
                        service.err(),
                        UpdateItemError::ConditionalCheckFailedException(_)
                    )
                {
                    return Ok(DiscWrite::ConditionFailed);
                }
                match classify(&e) {
                    // "The document path provided in the update expression is invalid for
                    // update": the item exists without `disc`.
                    Failure::Service { code, .. } if code == "ValidationException" => {
                        Ok(DiscWrite::NoMap)
                    }
                    failure => Err(default_error("DynamoDB UpdateItem", failure)),
                }
            }
        }
    }
}

#[async_trait]
impl DiscoveredCapacityStore for DynamoStore {
    /// One `UpdateItem` on the connection item: `SET disc.#m = :d`, conditioned on the item
    /// existing and the stored entry being older. Only for an item without `disc` (written
    /// by hand, or before discovered capacity had its own attribute) a second write creates
    /// the map.
    async fn record_discovered(
        &self,
        connection_id: &str,
        model: &str,
        discovered: &DiscoveredModel,
        source: ChangeSource,
    ) -> Result<Vec<DiscoveredChange>> {
        validate_model(model)?;
        let entry = disc_entry(discovered)?;
        let updated = AttributeValue::N(discovered.updated_at.unix_timestamp_nanos().to_string());
        // Two rounds: a `disc` map created concurrently by another writer costs one more.
        for _ in 0..2 {
            let set_model = self
                .disc_update(
                    connection_id,
                    model,
                    "SET #disc.#m = :d ADD #dv :one",
                    "attribute_exists(#pk) AND (attribute_not_exists(#disc.#m) OR #disc.#m.#u < :u)",
                    &entry,
                    &updated,
                )
                .await?;
            match set_model {
                DiscWrite::Done(previous) => {
                    return self
                        .keep_changes(connection_id, model, previous.as_ref(), discovered, source)
                        .await;
                }
                DiscWrite::ConditionFailed => {
                    return match self.head(connection_id).await? {
                        // A late observation: the stored one is as new or newer.
                        Some(_) => Ok(Vec::new()),
                        None => Err(Error::NotFound { what: "connection" }),
                    };
                }
                DiscWrite::NoMap => {}
            }
            let map = AttributeValue::M(HashMap::from([(model.to_owned(), entry.clone())]));
            let create_map = self
                .disc_update(
                    connection_id,
                    model,
                    "SET #disc = :d ADD #dv :one",
                    "attribute_exists(#pk) AND attribute_not_exists(#disc)",
                    &map,
                    &updated,
                )
                .await?;
            match create_map {
                DiscWrite::Done(_) => {
                    return self
                        .keep_changes(connection_id, model, None, discovered, source)
                        .await;
                }
                // Gone, or the map was created meanwhile: try the model again.
                DiscWrite::ConditionFailed | DiscWrite::NoMap => {
                    if self.head(connection_id).await?.is_none() {
                        return Err(Error::NotFound { what: "connection" });
                    }
                }
            }
        }
        // The map exists and the model still cannot be set: another validation failure,
        // e.g. the item would exceed DynamoDB's 400 KB.
        Err(Error::internal(format!(
            "DynamoDB UpdateItem: ValidationException recording discovered capacity of connection {connection_id}"
        )))
    }

    async fn discovered_history(
        &self,
        connection_id: &str,
        model: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DiscoveredChange>> {
        self.history_page(connection_id, model, limit, after).await
    }
}

impl DynamoStore {
    /// Works out the changes of a discovery write that replaced `previous` and writes each
    /// as a history item.
    async fn keep_changes(
        &self,
        connection_id: &str,
        model: &str,
        previous: Option<&DiscoveredModel>,
        discovered: &DiscoveredModel,
        source: ChangeSource,
    ) -> Result<Vec<DiscoveredChange>> {
        let changed = changes(model, previous, discovered, source);
        for change in &changed {
            let doc = serde_json::to_string(change)
                .map_err(|e| json_error("encoding a discovered-capacity change", &e))?;
            let expires = (change.at + time::Duration::days(HISTORY_RETENTION_DAYS))
                .unix_timestamp()
                .max(0);
            self.client
                .update_item()
                .table_name(&self.table)
                .key(PK, s(disch_pk(connection_id)))
                .key(SK, s(change.key()))
                .update_expression("SET #doc = :doc, #model = :model, #ttl = :ttl")
                .expression_attribute_names("#doc", HIST_DOC)
                .expression_attribute_names("#model", HIST_MODEL)
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":doc", s(doc))
                .expression_attribute_values(":model", s(&change.model))
                .expression_attribute_values(":ttl", n(expires.unsigned_abs()))
                .send()
                .await
                .map_err(|e| {
                    default_error("DynamoDB UpdateItem (discovered history)", classify(&e))
                })?;
        }
        Ok(changed)
    }

    /// One page of the history (see [`DiscoveredCapacityStore::discovered_history`]).
    async fn history_page(
        &self,
        connection_id: &str,
        model: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Vec<DiscoveredChange>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        let query_limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .scan_index_forward(false)
                .limit(query_limit)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(disch_pk(connection_id)))
                .set_exclusive_start_key(start.take());
            query = match after {
                Some(a) => query
                    .key_condition_expression("#pk = :pk AND #sk < :after")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":after", s(a)),
                None => query.key_condition_expression("#pk = :pk"),
            };
            if let Some(m) = model {
                query = query
                    .filter_expression("#model = :model")
                    .expression_attribute_names("#model", HIST_MODEL)
                    .expression_attribute_values(":model", s(m));
            }
            let page = query
                .send()
                .await
                .map_err(|e| default_error("DynamoDB Query", classify(&e)))?;
            for item in page.items() {
                let doc = string_attr(item, HIST_DOC)?;
                let change: DiscoveredChange = serde_json::from_str(doc)
                    .map_err(|e| json_error("decoding a discovered-capacity change", &e))?;
                out.push(change);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }
}
