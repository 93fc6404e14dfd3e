//! The one DynamoDB table of vmx, and the single definition of its schema.
//!
//! Every test creates its tables with [`ensure_table`]; the SAM template (`template.yaml`)
//! declares the same table and must mirror [`create_table_request`] exactly:
//!
//! ```yaml
//! Table:
//!   Type: AWS::DynamoDB::Table
//!   Properties:
//!     BillingMode: PAY_PER_REQUEST
//!     AttributeDefinitions:
//!       - { AttributeName: pk, AttributeType: S }
//!       - { AttributeName: sk, AttributeType: S }
//!     KeySchema:
//!       - { AttributeName: pk, KeyType: HASH }
//!       - { AttributeName: sk, KeyType: RANGE }
//!     TimeToLiveSpecification:
//!       AttributeName: expiresAt
//!       Enabled: true
//! ```
//!
//! No secondary index. Every item has a string `pk` and `sk`, built only from the key
//! constants and functions of this module (one per item kind, below); items that should
//! expire carry `expiresAt` (Number, epoch seconds): counters, usage buckets and the
//! discovered-capacity history. Connection, name, API key and cursor items never carry it. ARCHITECTURE.md ("DynamoDB table") lists every item kind with its
//! attributes; each adapter module documents how it reads and writes its items.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use vmx_domain::{Error, Result};

use crate::error::{Failure, classify, default_error};

/// Partition key attribute (String).
pub const PK: &str = "pk";
/// Sort key attribute (String).
pub const SK: &str = "sk";
/// Time-to-live attribute (Number, epoch seconds). DynamoDB deletes an item some time after
/// it passes, so readers must still check it.
pub const TTL_ATTRIBUTE: &str = "expiresAt";

// Item keys, one group per item kind.

/// Connection: `pk = CONN`, `sk = <connection id>` ([`crate::dynamo_store`]).
pub const CONN_PK: &str = "CONN";
/// Name claim: `pk = NAME#<name>`, `sk = NAME` ([`crate::dynamo_store`]).
pub const NAME_PK_PREFIX: &str = "NAME#";
/// `sk` of name claims.
pub const NAME_SK: &str = "NAME";
/// Capacity counters: `pk = CAP#<connection id>`, `sk = CAP` connection-wide or `IP#<ip>`
/// for one source IP ([`crate::dynamo_ledger`]).
pub const CAP_PK_PREFIX: &str = "CAP#";
/// `sk` of the connection-wide counter item.
pub const CAP_SK: &str = "CAP";
/// `sk` prefix of the per-IP counter items.
pub const IP_SK_PREFIX: &str = "IP#";
/// API key, listing item: `pk = APIKEYS`, `sk = <key id>` ([`crate::dynamo_api_keys`]).
pub const API_KEYS_PK: &str = "APIKEYS";
/// API key, by-hash item: `pk = APIKEY#<sha-256 hex>`, `sk = APIKEY`.
pub const API_KEY_PK_PREFIX: &str = "APIKEY#";
/// `sk` of the by-hash API key items.
pub const API_KEY_SK: &str = "APIKEY";
/// Usage bucket: `pk = USAGE#<connection id>`, `sk = H#<hour start, 12 digits>#<model>`
/// ([`crate::dynamo_usage`]).
pub const USAGE_PK_PREFIX: &str = "USAGE#";
/// `sk` prefix of the hourly usage buckets.
pub const USAGE_HOUR_SK_PREFIX: &str = "H#";
/// Discovered-capacity history: `pk = DISCH#<connection id>`, `sk =
/// DiscoveredChange::key()` (`<epoch ns, 20 digits>#<model>#<period>#<metric>`), with
/// `expiresAt` ([`crate::dynamo_store`]).
pub const DISCH_PK_PREFIX: &str = "DISCH#";
/// Limit refresh cursor: `pk = REFRESH`, `sk = CURSOR` ([`crate::refresh_cursor`]).
pub const REFRESH_PK: &str = "REFRESH";
/// `sk` of the refresh cursor.
pub const REFRESH_SK: &str = "CURSOR";
/// The prioritization pool definition: `pk = PRIO`, `sk = POOLS`
/// ([`crate::dynamo_prioritization`]).
pub const PRIO_PK: &str = "PRIO";
/// `sk` of the prioritization pool definition.
pub const PRIO_SK: &str = "POOLS";

/// `pk` of the name claim of `name`.
pub fn name_pk(name: &str) -> String {
    format!("{NAME_PK_PREFIX}{name}")
}

/// `pk` of the counter items of a connection.
pub fn cap_pk(connection_id: &str) -> String {
    format!("{CAP_PK_PREFIX}{connection_id}")
}

/// `sk` of the counter item of one source IP.
pub fn ip_sk(ip: impl std::fmt::Display) -> String {
    format!("{IP_SK_PREFIX}{ip}")
}

/// `pk` of the by-hash item of an API key.
pub fn api_key_pk(hash: &str) -> String {
    format!("{API_KEY_PK_PREFIX}{hash}")
}

/// `pk` of a connection's usage buckets.
pub fn usage_pk(connection_id: &str) -> String {
    format!("{USAGE_PK_PREFIX}{connection_id}")
}

/// `pk` of a connection's discovered-capacity history.
pub fn disch_pk(connection_id: &str) -> String {
    format!("{DISCH_PK_PREFIX}{connection_id}")
}

/// `sk` of the usage bucket of `hour` (epoch seconds, zero-padded to 12 digits so that `sk`
/// order is time order) and `model`; `usage_hour_sk(hour, "")` sorts before every bucket of
/// that hour.
pub fn usage_hour_sk(hour: i64, model: &str) -> String {
    format!("{USAGE_HOUR_SK_PREFIX}{hour:012}#{model}")
}

/// `sk` of the usage bucket of `hour`, API key `key_id` and `model`: `H#<hour>@<key>#<model>`,
/// after the hour's unkeyed buckets (`@` sorts after `#`) and before the next hour's.
pub fn usage_key_hour_sk(hour: i64, key_id: &str, model: &str) -> String {
    format!("{USAGE_HOUR_SK_PREFIX}{hour:012}@{key_id}#{model}")
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| Error::internal(format!("table schema: {e}")))
}

fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| Error::internal(format!("table schema: {e}")))
}

/// The `CreateTable` request of the vmx table named `table`: on-demand billing, string keys
/// `pk` (hash) and `sk` (range). TTL is set by a separate call, see [`ensure_table`].
pub fn create_table_request(client: &Client, table: &str) -> Result<CreateTableFluentBuilder> {
    Ok(client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(PK)?)
        .attribute_definitions(string_attribute(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?))
}

/// How long [`ensure_table`] waits for a new table to become active.
pub const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// Creates the table if it does not exist, waits until it is active, and enables TTL on
/// `expiresAt` unless it already is. Idempotent. For tests and local tooling: deployed
/// tables come from the SAM template.
pub async fn ensure_table(client: &Client, table: &str) -> Result<()> {
    match create_table_request(client, table)?.send().await {
        Ok(_) => {}
        Err(e) => match classify(&e) {
            Failure::Service { code, .. } if code == "ResourceInUseException" => {}
            failure => return Err(default_error("DynamoDB CreateTable", failure)),
        },
    }
    wait_active(client, table, TABLE_ACTIVE_WAIT).await?;

    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| default_error("DynamoDB DescribeTimeToLive", classify(&e)))?;
    let enabled = ttl.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(TTL_ATTRIBUTE)
            && matches!(
                d.time_to_live_status(),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
    });
    if !enabled {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(|e| Error::internal(format!("table schema: {e}")))?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB UpdateTimeToLive", classify(&e)))?;
    }
    Ok(())
}

async fn wait_active(client: &Client, table: &str, wait: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB DescribeTable", classify(&e)))?;
        let status = out.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::unavailable(
                None,
                format!("DynamoDB table {table} is not active after {wait:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
