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
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::usage::{Counters, FileCount, Recount};
use super::{AppPosition, AppQuery, FileIndex, IndexError, Usage};
use crate::model::{FileId, FileRow, Owner, Versioned};
use usage::build;

mod item;
mod setup;
mod uploads;
mod usage;

use item::{
    BY_APP, BY_APP_FILE, BY_PENDING, GSI_ROW, GSI_TIME, PENDING_HASH, from_item, get_n, get_s, n,
    parse_position, position_key, row_key, s, time_key, to_item,
};
pub use setup::TableSetup;

const NAME: &str = "dynamodb";

pub(super) type Item = HashMap<String, AttributeValue>;

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

impl DynamoFileIndex {
    #[must_use]
    pub fn new(client: Client, table: String) -> Self {
        Self { client, table }
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
            // A scan also meets the items of resumable uploads and the usage counters, which are not
            // file rows.
            for item in items
                .iter()
                .filter(|i| !i.contains_key(uploads::STATE) && !i.contains_key(usage::UPLOADS))
            {
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

/// A write over `old`, read at `expected`: conditional on the same version and the same
/// committed object, so that a row deleted and written again since (versions start again at
/// 1) with other bytes fails it, and the counters' change computed from `old` is exact.
fn same_row(put: PutBuilder, expected: u64, old: Option<&FileRow>) -> PutBuilder {
    let put = put
        .expression_attribute_names("#version", "version")
        .expression_attribute_values(":expected", n(expected));
    match old.and_then(|r| r.current.as_ref()) {
        Some(c) => put
            .condition_expression("#version = :expected AND objectKey = :ok")
            .expression_attribute_values(":ok", s(c.key.as_str())),
        None => {
            put.condition_expression("#version = :expected AND attribute_not_exists(objectKey)")
        }
    }
}

impl DynamoFileIndex {
    /// The row at `expected`, read consistently; a conflict when the row is gone or at
    /// another version.
    async fn row_at(
        &self,
        owner: &Owner,
        file: &FileId,
        expected: u64,
    ) -> Result<FileRow, IndexError> {
        match self.get(owner, file).await? {
            Some(r) if r.version == expected => Ok(r.value),
            _ => Err(IndexError::Conflict),
        }
    }
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
        let old = match expected {
            None => None,
            Some(v) => Some(self.row_at(&row.owner, &row.file_id, v).await?),
        };
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(row, version)));
        put = match (expected, &old) {
            (Some(v), Some(old)) => same_row(put, v, Some(old)),
            _ => put.condition_expression("attribute_not_exists(pk)"),
        };
        let change = FileCount::of(Some(row)).minus(FileCount::of(old.as_ref()));
        let write = TransactWriteItem::builder()
            .put(build(put.build())?)
            .build();
        self.write_counted(&row.owner, write, change, 0).await?;
        Ok(version)
    }

    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        let old = self.row_at(owner, file, expected).await?;
        let mut delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(start_key(owner, file)))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(expected));
        if let Some(key) = old.current.as_ref() {
            delete = delete
                .condition_expression("#version = :expected AND objectKey = :ok")
                .expression_attribute_values(":ok", s(key.key.as_str()));
        }
        let change = FileCount::default().minus(FileCount::of(Some(&old)));
        let write = TransactWriteItem::builder()
            .delete(build(delete.build())?)
            .build();
        self.write_counted(owner, write, change, 0).await
    }

    async fn usage(&self, owner: &Owner, now: DateTime<Utc>) -> Result<Usage, IndexError> {
        self.usage_of(owner, now).await
    }

    async fn counters(&self, owner: &Owner) -> Result<Option<Counters>, IndexError> {
        self.stored(owner).await
    }

    async fn recount(&self, owner: &Owner) -> Result<Vec<Recount>, IndexError> {
        self.recount_owner(owner).await
    }

    fn uploads(&self) -> &dyn super::UploadIndex {
        self
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
