//! Wrapped keys in a DynamoDB table of their own (`{index table}-keys`), which `setup` creates
//! with point-in-time recovery off: a restorable copy of it would hold the keys erase destroyed.
//!
//! Items: `pk` (S) = `{app}#{participant}`, `masterId` (S), `wrapped` (B).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    PointInTimeRecoveryStatus, ReturnValue, ScalarAttributeType, TableStatus,
};

use super::keystore::{KeyPage, KeyStoreError, StoredKey, WrappedKeys};
use crate::model::{AppId, Owner, UserId};

pub struct DynamoKeys {
    client: Client,
    table: String,
}

fn failed<E>(what: &str) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E>) -> KeyStoreError + '_
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| KeyStoreError::Backend {
        message: format!(
            "{what}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        ),
        source: Box::new(e),
    }
}

fn pk(owner: &Owner) -> AttributeValue {
    AttributeValue::S(format!("{}#{}", owner.app, owner.participant))
}

fn stored(item: &std::collections::HashMap<String, AttributeValue>) -> Option<StoredKey> {
    Some(StoredKey {
        master_id: item.get("masterId")?.as_s().ok()?.clone(),
        wrapped: item.get("wrapped")?.as_b().ok()?.as_ref().to_vec(),
    })
}

impl DynamoKeys {
    #[must_use]
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// The key table's name for the index table `index_table`.
    #[must_use]
    pub fn table_for(index_table: &str) -> String {
        format!("{index_table}-keys")
    }

    /// Creates the table when missing, and says whether point-in-time recovery is off, as
    /// `setup` reports it. An existing table's settings are left as they are.
    pub async fn setup(&self) -> Result<Vec<String>, KeyStoreError> {
        let mut report = Vec::new();
        let exists = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                false
            }
            Err(e) => return Err(failed("DescribeTable failed")(e)),
        };
        if exists {
            report.push(format!("the key table {} exists", self.table));
        } else {
            self.client
                .create_table()
                .table_name(&self.table)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("pk")
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| KeyStoreError::backend("bad table definition", e))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name("pk")
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| KeyStoreError::backend("bad table definition", e))?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await
                .map_err(failed("CreateTable failed"))?;
            report.push(format!(
                "created the key table {} (point-in-time recovery off: never back it up)",
                self.table
            ));
        }
        self.wait_active().await?;
        let backups = self
            .client
            .describe_continuous_backups()
            .table_name(&self.table)
            .send()
            .await
            .map_err(failed("DescribeContinuousBackups failed"))?;
        let pitr = backups
            .continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status());
        if pitr == Some(&PointInTimeRecoveryStatus::Enabled) {
            report.push(format!(
                "WARNING: the key table {} has point-in-time recovery on: its backups keep the \
                 keys that erase destroys; turn it off",
                self.table
            ));
        } else {
            report.push(format!(
                "the key table {} has point-in-time recovery off",
                self.table
            ));
        }
        Ok(report)
    }

    async fn wait_active(&self) -> Result<(), KeyStoreError> {
        for _ in 0..600 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(failed("DescribeTable failed"))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(KeyStoreError::backend(
            "the key table did not become ACTIVE in 10 minutes",
            std::io::Error::other("timeout"),
        ))
    }
}

#[async_trait]
impl WrappedKeys for DynamoKeys {
    async fn get(&self, owner: &Owner) -> Result<Option<StoredKey>, KeyStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .consistent_read(true)
            .send()
            .await
            .map_err(failed("GetItem failed"))?;
        Ok(out.item().and_then(stored))
    }

    async fn put_if_absent(
        &self,
        owner: &Owner,
        key: &StoredKey,
    ) -> Result<StoredKey, KeyStoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(owner))
            .item("masterId", AttributeValue::S(key.master_id.clone()))
            .item("wrapped", AttributeValue::B(Blob::new(key.wrapped.clone())))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(key.clone()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                self.get(owner).await?.ok_or_else(|| {
                    KeyStoreError::backend(
                        "the key that won the race is gone",
                        std::io::Error::other("missing"),
                    )
                })
            }
            Err(e) => Err(failed("PutItem failed")(e)),
        }
    }

    async fn page(&self, after: Option<String>, limit: usize) -> Result<KeyPage, KeyStoreError> {
        // The cursor is the last item's `pk`. Scan is eventually consistent: a key made during
        // the scan may be missed, and is made under the current master key anyway.
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(
                after.map(|pk| std::iter::once(("pk".to_owned(), AttributeValue::S(pk))).collect()),
            )
            .send()
            .await
            .map_err(failed("Scan failed"))?;
        let mut entries = Vec::new();
        for item in out.items() {
            let (Some(pk), Some(key)) = (item.get("pk").and_then(|v| v.as_s().ok()), stored(item))
            else {
                continue;
            };
            let Some((app, user)) = pk.split_once('#') else {
                continue;
            };
            let owner = Owner {
                app: AppId::parse(app).map_err(|e| KeyStoreError::backend("a bad app", e))?,
                participant: UserId::parse(user)
                    .map_err(|e| KeyStoreError::backend("a bad participant", e))?,
            };
            entries.push((owner, key));
        }
        let next = out
            .last_evaluated_key()
            .and_then(|k| k.get("pk"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(KeyPage { entries, next })
    }

    async fn replace(
        &self,
        owner: &Owner,
        old: &StoredKey,
        new: &StoredKey,
    ) -> Result<bool, KeyStoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(owner))
            .item("masterId", AttributeValue::S(new.master_id.clone()))
            .item("wrapped", AttributeValue::B(Blob::new(new.wrapped.clone())))
            // `wrapped` is one of DynamoDB's reserved words.
            .condition_expression("#wrapped = :old")
            .expression_attribute_names("#wrapped", "wrapped")
            .expression_attribute_values(":old", AttributeValue::B(Blob::new(old.wrapped.clone())))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(failed("PutItem failed")(e)),
        }
    }

    async fn delete(&self, owner: &Owner) -> Result<bool, KeyStoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(owner))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(failed("DeleteItem failed"))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }
}
