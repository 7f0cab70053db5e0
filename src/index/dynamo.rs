//! `DynamoFileIndex`: the index as one DynamoDB table, written with single-item conditional
//! writes and read with consistent reads.
//!
//! Table schema: hash key `pk` (S) = `{app}#{participant}`, range key `fileId` (S); no indexes.
//! Attributes: `app`, `participant`, `version` (N, the optimistic-concurrency counter),
//! `objectKey`, `mimeType`, `size` (N), `sha256`, `scanStatus`, `createdOn` (ISO 8601), and for
//! an outstanding upload `pendingKey`, `pendingMimeType`, `pendingSize` (N), `pendingSha256`,
//! `pendingCreatedOn`, `pendingExpiresOn` (ISO 8601), `pendingIssuer` (`actor:role`, for the
//! audit line of an arrival), and `claims` (`objectKey@millis,...`: uploads through the service
//! that are writing the file, which `reconcile` must not touch), and for a scanned file
//! `scannedOn` (ISO 8601) and `scanEngine` (the scanner's version string).
//!
//! IAM actions it needs on the table: `dynamodb:GetItem`, `dynamodb:PutItem`,
//! `dynamodb:DeleteItem`, `dynamodb:Query`, `dynamodb:Scan` (`reconcile`),
//! `dynamodb:DescribeTable` (ready check, `setup`), and for `setup` `dynamodb:CreateTable`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{FileIndex, IndexError, Usage};
use crate::keys::ObjectKey;
use crate::model::{
    AppId, Claim, FileId, FileRow, Issuer, Owner, PendingUpload, ScanEvidence, ScanStatus,
    StoredFile, UserId, Versioned,
};

const NAME: &str = "dynamodb";

type Item = HashMap<String, AttributeValue>;

fn failed<E>(message: &str, e: SdkError<E, HttpResponse>) -> IndexError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let definite = match &e {
        // DynamoDB answered with a client error: it refused the request.
        SdkError::ServiceError(s) => s.raw().status().is_client_error(),
        // Never sent: the request could not be built, or no connection was made.
        SdkError::ConstructionFailure(_) => true,
        SdkError::DispatchFailure(d) => refused_connection(
            d.as_connector_error()
                .map(|c| c as &(dyn std::error::Error + 'static)),
        ),
        _ => false,
    };
    IndexError::Backend {
        backend: NAME,
        message: message.to_owned(),
        definite,
        source: Some(Box::new(e)),
    }
}

/// Whether a connection error is a refused connection, before any byte of the request left.
fn refused_connection(e: Option<&(dyn std::error::Error + 'static)>) -> bool {
    let mut cause = e;
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cause = err.source();
    }
    false
}

fn corrupt(what: &str) -> IndexError {
    IndexError::Backend {
        backend: NAME,
        message: format!("stored item has an invalid {what}"),
        definite: true,
        source: None,
    }
}

pub struct DynamoFileIndex {
    client: Client,
    table: String,
}

fn pk(owner: &Owner) -> String {
    // `#` cannot occur in an identifier, so the pair is unambiguous.
    format!("{}#{}", owner.app, owner.participant)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn time(t: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Result<Option<u64>, IndexError> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| corrupt(name))
        })
        .transpose()
}

fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, IndexError> {
    get_s(item, name)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| corrupt(name))
}

fn to_item(row: &FileRow, version: u64) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(&pk(&row.owner)));
    item.insert("fileId".into(), s(row.file_id.as_str()));
    item.insert("app".into(), s(row.owner.app.as_str()));
    item.insert("participant".into(), s(row.owner.participant.as_str()));
    item.insert("version".into(), n(version));
    if let Some(c) = &row.current {
        item.insert("objectKey".into(), s(c.key.as_str()));
        item.insert("mimeType".into(), s(&c.mime_type));
        item.insert("size".into(), n(c.size));
        if let Some(sha) = &c.sha256 {
            item.insert("sha256".into(), s(sha));
        }
        item.insert("scanStatus".into(), s(c.scan_status.as_str()));
        item.insert("createdOn".into(), time(c.created_on));
        if let Some(scan) = &c.scan {
            item.insert("scannedOn".into(), time(scan.scanned_on));
            item.insert("scanEngine".into(), s(&scan.engine));
        }
    }
    if let Some(p) = &row.pending {
        item.insert("pendingKey".into(), s(p.key.as_str()));
        item.insert("pendingMimeType".into(), s(&p.mime_type));
        if let Some(size) = p.size {
            item.insert("pendingSize".into(), n(size));
        }
        if let Some(sha) = &p.sha256 {
            item.insert("pendingSha256".into(), s(sha));
        }
        item.insert("pendingCreatedOn".into(), time(p.created_on));
        item.insert("pendingExpiresOn".into(), time(p.expires_on));
        if let Some(issuer) = &p.issuer {
            item.insert("pendingIssuer".into(), s(&issuer.encode()));
        }
    }
    if let Some(claims) = Claim::encode_all(&row.claims) {
        item.insert("claims".into(), s(&claims));
    }
    item
}

fn from_item(item: &Item) -> Result<Versioned<FileRow>, IndexError> {
    let owner = Owner {
        app: get_s(item, "app")
            .and_then(|v| AppId::parse(v).ok())
            .ok_or_else(|| corrupt("app"))?,
        participant: get_s(item, "participant")
            .and_then(|v| UserId::parse(v).ok())
            .ok_or_else(|| corrupt("participant"))?,
    };
    let file_id = get_s(item, "fileId")
        .and_then(|v| FileId::parse(v).ok())
        .ok_or_else(|| corrupt("fileId"))?;
    let current = match get_s(item, "objectKey") {
        None => None,
        Some(key) => Some(StoredFile {
            key: ObjectKey::parse(key).ok_or_else(|| corrupt("objectKey"))?,
            mime_type: get_s(item, "mimeType")
                .ok_or_else(|| corrupt("mimeType"))?
                .to_owned(),
            size: get_n(item, "size")?.ok_or_else(|| corrupt("size"))?,
            sha256: get_s(item, "sha256").map(str::to_owned),
            scan_status: get_s(item, "scanStatus")
                .and_then(ScanStatus::parse)
                .ok_or_else(|| corrupt("scanStatus"))?,
            created_on: get_time(item, "createdOn")?,
            scan: match get_s(item, "scanEngine") {
                Some(engine) => Some(ScanEvidence {
                    scanned_on: get_time(item, "scannedOn")?,
                    engine: engine.to_owned(),
                }),
                None => None,
            },
        }),
    };
    let pending = match get_s(item, "pendingKey") {
        None => None,
        Some(key) => {
            let key = ObjectKey::parse(key).ok_or_else(|| corrupt("pendingKey"))?;
            Some(PendingUpload {
                upload_id: key.upload_id(),
                key,
                mime_type: get_s(item, "pendingMimeType")
                    .ok_or_else(|| corrupt("pendingMimeType"))?
                    .to_owned(),
                size: get_n(item, "pendingSize")?,
                sha256: get_s(item, "pendingSha256").map(str::to_owned),
                created_on: get_time(item, "pendingCreatedOn")?,
                expires_on: get_time(item, "pendingExpiresOn")?,
                issuer: get_s(item, "pendingIssuer").and_then(Issuer::decode),
            })
        }
    };
    let claims = match get_s(item, "claims") {
        None => Vec::new(),
        Some(c) => Claim::decode_all(c).ok_or_else(|| corrupt("claims"))?,
    };
    Ok(Versioned {
        version: get_n(item, "version")?.ok_or_else(|| corrupt("version"))?,
        value: FileRow {
            owner,
            file_id,
            current,
            pending,
            claims,
        },
    })
}

/// What `setup` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSetup {
    Created,
    Exists,
}

impl DynamoFileIndex {
    #[must_use]
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

    /// Creates the table (on-demand billing) when missing; refuses an existing table whose
    /// key schema is not this one, naming the difference.
    pub async fn setup(&self) -> Result<TableSetup, IndexError> {
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
                Ok(TableSetup::Exists)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                let attr = |name: &str| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .expect("name and type are set")
                };
                let key = |name: &str, t: KeyType| {
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(t)
                        .build()
                        .expect("name and type are set")
                };
                self.client
                    .create_table()
                    .table_name(&self.table)
                    .attribute_definitions(attr("pk"))
                    .attribute_definitions(attr("fileId"))
                    .key_schema(key("pk", KeyType::Hash))
                    .key_schema(key("fileId", KeyType::Range))
                    .billing_mode(BillingMode::PayPerRequest)
                    .send()
                    .await
                    .map_err(|e| failed("CreateTable failed", e))?;
                Ok(TableSetup::Created)
            }
            Err(e) => Err(failed("DescribeTable failed", e)),
        }
    }

    /// Reads items until `limit` are collected or the table runs out; DynamoDB may stop a page
    /// early (1 MB), so one request is not enough.
    async fn collect(
        &self,
        query: Option<&Owner>,
        mut start: Option<Item>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let mut rows = Vec::new();
        loop {
            let want = i32::try_from(limit - rows.len()).unwrap_or(i32::MAX);
            let (items, last) = if let Some(owner) = query {
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk(owner)))
                    .scan_index_forward(true)
                    .limit(want)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| failed("Query failed", e))?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            } else {
                let out = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .limit(want)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| failed("Scan failed", e))?;
                (out.items.unwrap_or_default(), out.last_evaluated_key)
            };
            for item in &items {
                rows.push(from_item(item)?);
            }
            match last {
                Some(key) if rows.len() < limit => start = Some(key),
                _ => return Ok(rows),
            }
        }
    }
}

fn start_key(owner: &Owner, file: &FileId) -> Item {
    HashMap::from([
        ("pk".to_owned(), s(&pk(owner))),
        ("fileId".to_owned(), s(file.as_str())),
    ])
}

#[async_trait]
impl FileIndex for DynamoFileIndex {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(
        &self,
        owner: &Owner,
        file: &FileId,
    ) -> Result<Option<Versioned<FileRow>>, IndexError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(start_key(owner, file)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem failed", e))?;
        out.item.as_ref().map(from_item).transpose()
    }

    async fn list(
        &self,
        owner: &Owner,
        after: Option<&FileId>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        // ExclusiveStartKey need not name an existing item, which is Bridge's offsetKey rule.
        let start = after.map(|f| start_key(owner, f));
        self.collect(Some(owner), start, limit).await
    }

    async fn scan(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let start = after.map(|(o, f)| start_key(o, f));
        self.collect(None, start, limit).await
    }

    async fn put(&self, row: &FileRow, expected: Option<u64>) -> Result<u64, IndexError> {
        let version = expected.map_or(1, |v| v + 1);
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(row, version)));
        req = match expected {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(v) => req
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(v)),
        };
        match req.send().await {
            Ok(_) => Ok(version),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(IndexError::Conflict)
            }
            Err(e) => Err(failed("PutItem failed", e)),
        }
    }

    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        match self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(start_key(owner, file)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(expected))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(IndexError::Conflict)
            }
            Err(e) => Err(failed("DeleteItem failed", e)),
        }
    }

    async fn usage(&self, owner: &Owner, now: DateTime<Utc>) -> Result<Usage, IndexError> {
        // Only the attributes usage needs: a participant with many files is one or a few pages.
        let mut usage = Usage::default();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk(owner)))
                .projection_expression("objectKey, #size, pendingExpiresOn")
                .expression_attribute_names("#size", "size")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Query failed", e))?;
            for item in out.items() {
                let file = get_s(item, "objectKey").is_some();
                if file {
                    usage.files += 1;
                    usage.bytes += get_n(item, "size")?.unwrap_or_default();
                }
                if get_s(item, "pendingExpiresOn").is_some()
                    && get_time(item, "pendingExpiresOn")? > now
                {
                    usage.pending += 1;
                    if !file {
                        usage.pending_new += 1;
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(usage),
            }
        }
    }

    async fn check(&self) -> Result<(), IndexError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("DescribeTable failed", e))
    }
}
