//! [`PrioritizationStore`] on DynamoDB: the pool definition as one item (`pk = PRIO`,
//! `sk = POOLS`, the definition as JSON in `doc`), for the API key store.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use vmx_domain::prioritization::{Prioritization, PrioritizationStore};
use vmx_domain::{Error, Result};

use crate::DynamoApiKeyStore;
use crate::error::{classify, default_error};
use crate::table::{PK, PRIO_PK, PRIO_SK, SK};

const ATTR_DOC: &str = "doc";

fn key() -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(PRIO_PK.to_owned())),
        (SK.to_owned(), AttributeValue::S(PRIO_SK.to_owned())),
    ])
}

#[async_trait]
impl PrioritizationStore for DynamoApiKeyStore {
    async fn prioritization(&self) -> Result<Prioritization> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| default_error("DynamoDB GetItem", classify(&e)))?;
        match out.item.as_ref().and_then(|i| i.get(ATTR_DOC)) {
            None => Ok(Prioritization::default()),
            Some(AttributeValue::S(doc)) => serde_json::from_str(doc)
                .map_err(|_| Error::internal("the stored prioritization definition is corrupt")),
            Some(_) => Err(Error::internal(
                "the stored prioritization definition is corrupt",
            )),
        }
    }

    async fn put_prioritization(&self, definition: &Prioritization) -> Result<()> {
        let doc = serde_json::to_string(definition).map_err(Error::internal)?;
        let mut item = key();
        item.insert(ATTR_DOC.to_owned(), AttributeValue::S(doc));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| default_error("DynamoDB PutItem", classify(&e)))?;
        Ok(())
    }
}
