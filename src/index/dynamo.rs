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
//! Usage counters (see `usage`): an item per participant (range key `#usage` in its partition)
//! and per app (`{app}#`), changed by `ADD` in the same `TransactWriteItems` as the row. A write
//! that changes no counter (claims, upload URLs, scans) stays one conditional `PutItem` or
//! `DeleteItem` (see `writes`): it lands only when the stored row counts as the new one.
//!
//! IAM actions it needs on the table: `dynamodb:GetItem`, `dynamodb:BatchGetItem` (the listing's
//! check), `dynamodb:PutItem`, `dynamodb:DeleteItem`, `dynamodb:UpdateItem` (the counters, and
//! `setup`'s index keys on rows written before them),
//! `dynamodb:Query` (on the table and on `table/NAME/index/*`), `dynamodb:Scan` (`reconcile`,
//! `setup`'s backfill), `dynamodb:DescribeTable` (ready check, `setup`), and for `setup`
//! `dynamodb:CreateTable` and `dynamodb:UpdateTable` (adds the indexes to an older table). Writes
//! go through `TransactWriteItems`, which is authorised by the actions of its parts.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::usage::{Counters, FileCount, FileQuota, QuotaReached, Recount};
use super::{AppQuery, FileIndex, IndexError, Usage};
use crate::model::{FileId, FileRow, Owner, Versioned};
use usage::build;

mod import;
mod item;
mod reads;
mod setup;
mod uploads;
mod usage;
mod writes;

use item::{from_item, get_n, get_s, n, s, to_item};
pub use setup::TableSetup;
use writes::Plain;

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
        self.list_app_rows(query, limit).await
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
        self.pending_rows(after, limit).await
    }

    async fn put_within(
        &self,
        row: &FileRow,
        expected: Option<u64>,
        quota: FileQuota,
    ) -> Result<Result<u64, QuotaReached>, IndexError> {
        let version = expected.map_or(1, |v| v + 1);
        // Most writes (claims, upload URLs, scans) leave the counters as they are: those cost one
        // conditional write (no quota holds them back), and only a write whose row counts
        // otherwise reads the old row (from the refusal) and changes the counters in a
        // transaction, conditional on the quota.
        let old = match expected {
            None => None,
            Some(v) => match self.put_plain(row, v).await? {
                Plain::Landed => return Ok(Ok(version)),
                Plain::CountsOtherwise(old) => Some(*old),
            },
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
        Ok(self
            .write_within(&row.owner, write, change, 0, quota)
            .await?
            .map(|()| version))
    }

    async fn delete(&self, owner: &Owner, file: &FileId, expected: u64) -> Result<(), IndexError> {
        let old = match self.delete_plain(owner, file, expected).await? {
            Plain::Landed => return Ok(()),
            Plain::CountsOtherwise(old) => *old,
        };
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

    async fn owners_with_usage(&self) -> Result<Vec<Owner>, IndexError> {
        self.usage_owners().await
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
