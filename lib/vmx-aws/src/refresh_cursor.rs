//! Where the limit refresh resumes: one item (`pk = REFRESH`, `sk = CURSOR`) holding the id
//! of the last connection a run finished before its deadline.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use vmx_domain::{Error, Result};

use crate::table::{PK, REFRESH_PK, REFRESH_SK, SK};

pub struct RefreshCursor {
    client: Client,
    table: String,
}

impl RefreshCursor {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(&self) -> [(String, AttributeValue); 2] {
        [
            (PK.to_owned(), AttributeValue::S(REFRESH_PK.into())),
            (SK.to_owned(), AttributeValue::S(REFRESH_SK.into())),
        ]
    }

    /// The connection id to resume after, if the last run stopped early.
    pub async fn load(&self) -> Result<Option<String>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key().into_iter().collect()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                Error::unavailable(
                    Some(1),
                    format!("refresh cursor read: {}", e.into_service_error()),
                )
            })?;
        Ok(out
            .item()
            .and_then(|i| i.get("after"))
            .and_then(|v| v.as_s().ok())
            .cloned())
    }

    /// Saves where to resume (`None`: the run reached the end; start over next time).
    pub async fn save(&self, after: Option<&str>) -> Result<()> {
        let result = match after {
            Some(a) => {
                let mut item: std::collections::HashMap<String, AttributeValue> =
                    self.key().into_iter().collect();
                item.insert("after".into(), AttributeValue::S(a.to_owned()));
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.into_service_error().to_string())
            }
            None => self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(self.key().into_iter().collect()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| e.into_service_error().to_string()),
        };
        result.map_err(|e| Error::unavailable(Some(1), format!("refresh cursor write: {e}")))
    }
}
