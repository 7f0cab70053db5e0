//! `DynamoFileIndex`: the index as one DynamoDB table, written with single-item conditional
//! writes and read with consistent reads.
//!
//! Table schema: hash key `pk` (S) = `{app}#{participant}`, range key `fileId` (S).
//! Attributes: `app`, `participant`, `version` (N, the optimistic-concurrency counter),
//! `objectKey`, `mimeType`, `size` (N), `sha256`, `scanStatus`, `createdOn` (ISO 8601), and for
//! an outstanding upload `pendingKey`, `pendingMimeType`, `pendingSize` (N), `pendingSha256`,
//! `pendingCreatedOn`, `pendingExpiresOn` (ISO 8601), `pendingIssuer` (`actor:role`, for the
//! audit line of an arrival), and `claims` (`objectKey@millis,...`: uploads through the service
//! that are writing the file, which `reconcile` must not touch), `pendingLease`
//! (`instance@millis`: the instance scanning an arrived upload, until when), and for a scanned
//! file `scannedOn` (ISO 8601), `scanEngine` (the scanner's version string) and, for a file a
//! rescan found infected, `scanSignature`; `fileName` and `pendingFileName`, the names clients
//! sent with the file and with its upload URL.
//!
//! The app-wide listing reads two global secondary indexes, both `KEYS_ONLY` and sparse: only
//! rows with committed bytes carry their keys, so rows holding only an upload URL or claims are
//! in neither.
//! - `byApp`: hash `gsiApp` (S) = `{app}`, range `gsiTime` (S);
//! - `byAppFile`: hash `gsiAppFile` (S) = `{app}#{fileId}`, range `gsiTime` (S);
//!
//! - `byPending`: hash `gsiPending` (S) = `pending`, range `gsiRow` (S) =
//!   `{app}#{participant}#{fileId}`, only on rows holding an upload URL: the settler's poll
//!   reads it (one partition, so it holds as many pending uploads as one partition's write
//!   rate allows, 1,000 row writes a second; sharding the hash value would lift that).
//!
//! where `gsiTime` = `{createdOn as 15-digit zero-padded epoch millis}#{participant}#{fileId}`:
//! its byte order is the listing's order (`#` sorts before every identifier character). An
//! index is eventually consistent, so every entry read is checked against its row with a
//! consistent `BatchGetItem`, and served only when the row still holds a file at that very
//! position, with the row's metadata; a deleted or replaced file's stale entry is skipped.
//!
//! IAM actions it needs on the table: `dynamodb:GetItem`, `dynamodb:BatchGetItem` (the listing's
//! check), `dynamodb:PutItem`, `dynamodb:DeleteItem`, `dynamodb:Query` (on the table and on
//! `table/NAME/index/*`), `dynamodb:Scan` (`reconcile`, `setup`'s backfill),
//! `dynamodb:DescribeTable` (ready check, `setup`), and for `setup` `dynamodb:CreateTable`,
//! `dynamodb:UpdateTable` (adds the indexes to an older table) and `dynamodb:UpdateItem` (writes
//! the index keys onto rows written before them).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, TableStatus,
};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{AppPosition, AppQuery, FileIndex, IndexError, Usage};
use crate::keys::ObjectKey;
use crate::model::{
    AppId, Claim, FileId, FileRow, Issuer, Lease, Owner, PendingUpload, ScanEvidence, ScanStatus,
    StoredFile, UserId, Versioned,
};

mod uploads;

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

/// The app-wide listing's indexes: name, hash key attribute.
const BY_APP: (&str, &str) = ("byApp", "gsiApp");
const BY_APP_FILE: (&str, &str) = ("byAppFile", "gsiAppFile");
/// The range key of both.
const GSI_TIME: &str = "gsiTime";
/// The settler's index of rows holding an upload URL: one hash value, the row as range key.
const BY_PENDING: (&str, &str) = ("byPending", "gsiPending");
const PENDING_HASH: &str = "pending";
const GSI_ROW: &str = "gsiRow";

/// Every index: name, hash key attribute, range key attribute.
const INDEXES: [(&str, &str, &str); 3] = [
    (BY_APP.0, BY_APP.1, GSI_TIME),
    (BY_APP_FILE.0, BY_APP_FILE.1, GSI_TIME),
    (BY_PENDING.0, BY_PENDING.1, GSI_ROW),
];

/// The largest `createdOn` the sort key can carry (15 digits of milliseconds: year 33658).
const MAX_TIME_KEY: i64 = 999_999_999_999_999;

/// Milliseconds as the fixed-width leading part of `gsiTime`, so that text order is time order.
fn time_key(ms: i64) -> String {
    format!("{:015}", ms.clamp(0, MAX_TIME_KEY))
}

fn position_key(p: &AppPosition) -> String {
    format!("{}#{}#{}", time_key(p.created_on), p.participant, p.file_id)
}

/// The position a `gsiTime` names; `None` when it is not one this index wrote.
fn parse_position(key: &str) -> Option<AppPosition> {
    let mut parts = key.splitn(3, '#');
    let ms = parts.next()?;
    if ms.len() != 15 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(AppPosition {
        created_on: ms.parse().ok()?,
        participant: UserId::parse(parts.next()?).ok()?,
        file_id: FileId::parse(parts.next()?).ok()?,
    })
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
        if let Some(name) = &c.file_name {
            item.insert("fileName".into(), s(name));
        }
        if let Some(scan) = &c.scan {
            item.insert("scannedOn".into(), time(scan.scanned_on));
            item.insert("scanEngine".into(), s(&scan.engine));
            if let Some(sig) = &scan.signature {
                item.insert("scanSignature".into(), s(sig));
            }
        }
    }
    for (name, value) in index_keys(row) {
        item.insert(name.into(), s(&value));
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
        if let Some(lease) = &p.lease {
            item.insert("pendingLease".into(), s(&lease.encode()));
        }
        if let Some(name) = &p.file_name {
            item.insert("pendingFileName".into(), s(name));
        }
    }
    if let Some(claims) = Claim::encode_all(&row.claims) {
        item.insert("claims".into(), s(&claims));
    }
    item
}

/// The attributes that put a row into the indexes: the listing's for a row with committed
/// bytes, the settler's for a row with an upload URL (the indexes are sparse).
fn index_keys(row: &FileRow) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    if let Some(pos) = AppPosition::of(row) {
        keys.push((BY_APP.1, row.owner.app.to_string()));
        keys.push((BY_APP_FILE.1, format!("{}#{}", row.owner.app, row.file_id)));
        keys.push((GSI_TIME, position_key(&pos)));
    }
    if row.pending.is_some() {
        keys.push((BY_PENDING.1, PENDING_HASH.to_owned()));
        keys.push((GSI_ROW, row_key(&row.owner, &row.file_id)));
    }
    keys
}

/// `{app}#{participant}#{fileId}`: the settler index's range key, unique per row.
fn row_key(owner: &Owner, file: &FileId) -> String {
    format!("{}#{file}", pk(owner))
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
                    signature: get_s(item, "scanSignature").map(str::to_owned),
                }),
                None => None,
            },
            file_name: get_s(item, "fileName").map(str::to_owned),
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
                lease: get_s(item, "pendingLease").and_then(Lease::decode),
                file_name: get_s(item, "pendingFileName").map(str::to_owned),
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
    #[must_use]
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
    }

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

    /// The rows at `keys` (table keys), read consistently, by `(pk, fileId)`.
    async fn batch_get(
        &self,
        keys: Vec<Item>,
    ) -> Result<HashMap<(String, String), Item>, IndexError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut want = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .expect("keys are set"),
            );
            let mut backoff = std::time::Duration::from_millis(20);
            while let Some(request) = want.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| failed("BatchGetItem failed", e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.table)
                    .unwrap_or_default()
                {
                    let pk = get_s(&item, "pk").unwrap_or_default().to_owned();
                    let file = get_s(&item, "fileId").unwrap_or_default().to_owned();
                    found.insert((pk, file), item);
                }
                // Keys DynamoDB did not get to (throttling, size): asked again after a pause.
                want = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
                if want.is_some() {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
            }
        }
        Ok(found)
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
            // A scan also meets the items of resumable uploads, which are not file rows.
            for item in items.iter().filter(|i| !i.contains_key(uploads::STATE)) {
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

    async fn list_app(
        &self,
        query: &AppQuery,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let (index, hash) = if query.file_id.is_some() {
            BY_APP_FILE
        } else {
            BY_APP
        };
        let hash_value = match &query.file_id {
            None => query.app.to_string(),
            Some(f) => format!("{}#{f}", query.app),
        };
        // Every key of a file created at or after `start` is at or above the bare time; every
        // key of one created before `end` is below it (keys go on with `#...`).
        let lower = time_key(query.start.unwrap_or(0));
        let mut upper = match (
            query.end.map(time_key),
            query.after.as_ref().map(position_key),
        ) {
            (Some(e), Some(a)) => e.min(a),
            (e, a) => e.or(a).unwrap_or_else(|| "~".to_owned()),
        };
        let mut rows = Vec::new();
        while rows.len() < limit && lower <= upper {
            let want = limit - rows.len();
            // BETWEEN is inclusive: one more, in case the upper bound itself is an entry.
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#h = :h AND #t BETWEEN :lo AND :hi")
                .expression_attribute_names("#h", hash)
                .expression_attribute_names("#t", GSI_TIME)
                .expression_attribute_values(":h", s(&hash_value))
                .expression_attribute_values(":lo", s(&lower))
                .expression_attribute_values(":hi", s(&upper))
                .scan_index_forward(false)
                .limit(i32::try_from(want + 1).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| failed("Query failed", e))?;
            let more = out.last_evaluated_key.is_some();
            let mut entries: Vec<(String, AppPosition)> = Vec::new();
            let mut all_taken = true;
            for item in out.items() {
                let Some(k) = get_s(item, GSI_TIME) else {
                    continue;
                };
                if k >= upper.as_str() {
                    continue;
                }
                if entries.len() == want {
                    all_taken = false;
                    break;
                }
                let pos = parse_position(k).ok_or_else(|| corrupt(GSI_TIME))?;
                entries.push((k.to_owned(), pos));
            }
            let Some((last, _)) = entries.last() else {
                break;
            };
            upper = last.clone();
            let keys = entries
                .iter()
                .map(|(_, p)| {
                    start_key(
                        &Owner {
                            app: query.app.clone(),
                            participant: p.participant.clone(),
                        },
                        &p.file_id,
                    )
                })
                .collect();
            let mut found = self.batch_get(keys).await?;
            for (_, pos) in &entries {
                let pk = format!("{}#{}", query.app, pos.participant);
                let Some(item) = found.remove(&(pk, pos.file_id.to_string())) else {
                    // Deleted since the index was written: the entry is stale.
                    continue;
                };
                let row = from_item(&item)?;
                // Served only when the row still holds a file at this very position: an entry
                // of a replaced file is skipped (its new entry sorts by its new time).
                if AppPosition::of(&row.value).as_ref() == Some(pos) && query.matches(&row.value) {
                    rows.push(row);
                }
            }
            if all_taken && !more {
                break;
            }
        }
        Ok(rows)
    }

    async fn scan(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let start = after.map(|(o, f)| start_key(o, f));
        self.collect(None, start, limit).await
    }

    async fn pending(
        &self,
        after: Option<(&Owner, &FileId)>,
        limit: usize,
    ) -> Result<Vec<Versioned<FileRow>>, IndexError> {
        let mut lower = after.map(|(o, f)| row_key(o, f));
        let mut rows = Vec::new();
        loop {
            let want = limit - rows.len();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_PENDING.0)
                .expression_attribute_names("#h", BY_PENDING.1)
                .expression_attribute_values(":h", s(PENDING_HASH))
                .scan_index_forward(true)
                .limit(i32::try_from(want).unwrap_or(i32::MAX));
            query = match &lower {
                None => query.key_condition_expression("#h = :h"),
                Some(after) => query
                    .key_condition_expression("#h = :h AND #r > :after")
                    .expression_attribute_names("#r", GSI_ROW)
                    .expression_attribute_values(":after", s(after)),
            };
            let out = query.send().await.map_err(|e| failed("Query failed", e))?;
            let entries: Vec<(String, Item)> = out
                .items()
                .iter()
                .filter_map(|item| {
                    let row = get_s(item, GSI_ROW)?.to_owned();
                    let key = HashMap::from([
                        ("pk".to_owned(), item.get("pk")?.clone()),
                        ("fileId".to_owned(), item.get("fileId")?.clone()),
                    ]);
                    Some((row, key))
                })
                .collect();
            let Some((last, _)) = entries.last() else {
                return Ok(rows);
            };
            lower = Some(last.clone());
            let got = entries.len();
            let mut found = self
                .batch_get(entries.iter().map(|(_, k)| k.clone()).collect())
                .await?;
            for (_, key) in &entries {
                let id = (
                    key["pk"].as_s().cloned().unwrap_or_default(),
                    key["fileId"].as_s().cloned().unwrap_or_default(),
                );
                // The index lags its table: a row settled since is skipped.
                if let Some(item) = found.remove(&id) {
                    let row = from_item(&item)?;
                    if row.value.pending.is_some() {
                        rows.push(row);
                    }
                }
            }
            if (got < want && out.last_evaluated_key.is_none()) || rows.len() >= limit {
                return Ok(rows);
            }
        }
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

    fn uploads(&self) -> &dyn super::UploadIndex {
        self
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
