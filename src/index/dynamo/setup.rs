//! `setup` of the DynamoDB index: the table, its indexes, and the index keys of older rows.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus,
};

use super::item::{
    BY_APP, BY_APP_FILE, BY_PENDING, GSI_ROW, GSI_TIME, INDEXES, from_item, index_keys, n, s,
};
use super::{DynamoFileIndex, NAME, failed, start_key};
use crate::index::IndexError;

/// What `setup` found or did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSetup {
    /// The table was created (with its indexes).
    pub created: bool,
    /// Listing indexes added to an existing table.
    pub indexes_added: Vec<&'static str>,
    /// Rows written before the indexes that were given their index keys.
    pub backfilled: u64,
}

fn attr(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set")
}

fn key(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .expect("name and type are set")
}

fn keys_only() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::KeysOnly)
        .build()
}

fn gsi((name, hash, range): (&str, &str, &str)) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(range, KeyType::Range))
        .projection(keys_only())
        .build()
        .expect("name, keys and projection are set")
}

/// How often `setup` looks whether the table and its indexes are active.
const SETUP_POLL: std::time::Duration = std::time::Duration::from_secs(2);

impl DynamoFileIndex {
    /// Creates the table (on-demand billing) with the listing's indexes when missing; refuses
    /// an existing table whose key schema is not this one, naming the difference; adds the
    /// indexes an older table lacks (`UpdateTable`, one at a time) and gives its rows their
    /// index keys. Returns once the table and both indexes are `ACTIVE`.
    pub async fn setup(&self) -> Result<TableSetup, IndexError> {
        let mut report = TableSetup::default();
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => {
                let schema: Vec<(String, String)> = out
                    .table()
                    .map(|t| {
                        t.key_schema()
                            .iter()
                            .map(|k| {
                                (
                                    k.attribute_name().to_owned(),
                                    k.key_type().as_str().to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let wanted = vec![
                    ("pk".to_owned(), "HASH".to_owned()),
                    ("fileId".to_owned(), "RANGE".to_owned()),
                ];
                if schema != wanted {
                    return Err(IndexError::Backend {
                        backend: NAME,
                        definite: true,
                        message: format!(
                            "table {} exists with key schema {schema:?}, not hash key pk and range key fileId",
                            self.table
                        ),
                        source: None,
                    });
                }
                let have: Vec<String> = out
                    .table()
                    .map(|t| {
                        t.global_secondary_indexes()
                            .iter()
                            .filter_map(|g| g.index_name().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                for index in INDEXES {
                    if have.iter().any(|h| h == index.0) {
                        continue;
                    }
                    self.wait_active().await?;
                    tracing::info!(index = index.0, "adding a global secondary index");
                    self.client
                        .update_table()
                        .table_name(&self.table)
                        .attribute_definitions(attr(index.1))
                        .attribute_definitions(attr(index.2))
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder()
                                .create(
                                    CreateGlobalSecondaryIndexAction::builder()
                                        .index_name(index.0)
                                        .key_schema(key(index.1, KeyType::Hash))
                                        .key_schema(key(index.2, KeyType::Range))
                                        .projection(keys_only())
                                        .build()
                                        .expect("name, keys and projection are set"),
                                )
                                .build(),
                        )
                        .send()
                        .await
                        .map_err(|e| failed("UpdateTable failed", e))?;
                    report.indexes_added.push(index.0);
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                self.client
                    .create_table()
                    .table_name(&self.table)
                    .attribute_definitions(attr("pk"))
                    .attribute_definitions(attr("fileId"))
                    .attribute_definitions(attr(BY_APP.1))
                    .attribute_definitions(attr(BY_APP_FILE.1))
                    .attribute_definitions(attr(GSI_TIME))
                    .attribute_definitions(attr(BY_PENDING.1))
                    .attribute_definitions(attr(GSI_ROW))
                    .key_schema(key("pk", KeyType::Hash))
                    .key_schema(key("fileId", KeyType::Range))
                    .global_secondary_indexes(gsi(INDEXES[0]))
                    .global_secondary_indexes(gsi(INDEXES[1]))
                    .global_secondary_indexes(gsi(INDEXES[2]))
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                    .map_err(|e| failed("CreateTable failed", e))?;
                report.created = true;
            }
            Err(e) => return Err(failed("DescribeTable failed", e)),
        }
        self.wait_active().await?;
        if !report.created {
            report.backfilled = self.backfill().await?;
        }
        Ok(report)
    }

    /// Waits until the table and every index on it are `ACTIVE` (an index added to a big table
    /// may take long: it is built from every row).
    async fn wait_active(&self) -> Result<(), IndexError> {
        loop {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| failed("DescribeTable failed", e))?;
            let table = out.table();
            let table_ready = table.and_then(|t| t.table_status()) == Some(&TableStatus::Active);
            let pending: Vec<String> = table
                .map(|t| {
                    t.global_secondary_indexes()
                        .iter()
                        .filter(|g| {
                            g.index_status() != Some(&IndexStatus::Active)
                                || g.backfilling() == Some(true)
                        })
                        .filter_map(|g| g.index_name().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if table_ready && pending.is_empty() {
                return Ok(());
            }
            tracing::info!(
                ?pending,
                table_ready,
                "waiting for the table and its indexes to be active"
            );
            tokio::time::sleep(SETUP_POLL).await;
        }
    }

    /// Gives every row with committed bytes that lacks them its index keys (rows written before
    /// the indexes existed), each with a write conditional on the version read: a row written
    /// since carries them already.
    async fn backfill(&self) -> Result<u64, IndexError> {
        let mut done = 0;
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression(
                    "(attribute_exists(objectKey) AND attribute_not_exists(#t)) \
                     OR (attribute_exists(pendingKey) AND attribute_not_exists(#r))",
                )
                .expression_attribute_names("#t", GSI_TIME)
                .expression_attribute_names("#r", GSI_ROW)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Scan failed", e))?;
            for item in out.items() {
                let row = from_item(item)?;
                let mut update = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(start_key(&row.value.owner, &row.value.file_id)))
                    .condition_expression("#version = :expected")
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":expected", n(row.version));
                let mut sets = Vec::new();
                for (i, (name, value)) in index_keys(&row.value).into_iter().enumerate() {
                    sets.push(format!("#k{i} = :v{i}"));
                    update = update
                        .expression_attribute_names(format!("#k{i}"), name)
                        .expression_attribute_values(format!(":v{i}"), s(&value));
                }
                match update
                    .update_expression(format!("SET {}", sets.join(", ")))
                    .send()
                    .await
                {
                    Ok(_) => done += 1,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                    Err(e) => return Err(failed("UpdateItem failed", e)),
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(done),
            }
        }
    }
}
