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
//! No secondary index. Items (see `dynamo_store` for the connection items): every item has a
//! string `pk` and `sk`; items that should expire carry `expiresAt` (Number, epoch seconds).
//! Connection and name items never carry it.

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
    ensure_table_with_wait(client, table, TABLE_ACTIVE_WAIT).await
}

/// [`ensure_table`], waiting at most `wait` for the table to become active.
pub async fn ensure_table_with_wait(client: &Client, table: &str, wait: Duration) -> Result<()> {
    match create_table_request(client, table)?.send().await {
        Ok(_) => {}
        Err(e) => match classify(&e) {
            Failure::Service { code, .. } if code == "ResourceInUseException" => {}
            failure => return Err(default_error("DynamoDB CreateTable", failure)),
        },
    }
    wait_active(client, table, wait).await?;

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
