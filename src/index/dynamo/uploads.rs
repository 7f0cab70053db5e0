//! Resumable uploads in DynamoDB: items of the files table under a key of their own
//! (`{app}#{participant}#uploads`, the upload ID as range key), which no file query, listing
//! index or settler index ever reads. The state is JSON beside the attributes filters need.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use super::usage::{build, changes};
use super::{DynamoFileIndex, Item, corrupt, failed, get_n, get_s, n, pk, s};
use crate::index::usage::{FileCount, LimitReached, OpenLimits};
use crate::index::{IndexError, UploadIndex};
use crate::keys::UploadId;
use crate::model::{Owner, ResumableUpload, Versioned};

/// The attribute that holds an upload's state; only upload items have it.
pub(super) const STATE: &str = "uploadState";

fn upload_pk(owner: &Owner) -> String {
    format!("{}#uploads", pk(owner))
}

fn key(owner: &Owner, id: &UploadId) -> Item {
    Item::from([
        ("pk".to_owned(), s(&upload_pk(owner))),
        ("fileId".to_owned(), s(id.as_str())),
    ])
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or_default()
}

fn decode(item: &Item) -> Result<Versioned<ResumableUpload>, IndexError> {
    let state = get_s(item, STATE).ok_or_else(|| corrupt(STATE))?;
    Ok(Versioned {
        value: serde_json::from_str(state).map_err(|_| corrupt(STATE))?,
        version: get_n(item, "version")?.ok_or_else(|| corrupt("version"))?,
    })
}

/// The upload's item, written over `expected` (`None`: a new one) and, with `was_open`, only
/// over an upload that was open (or ended) as said.
fn put_item(
    table: &str,
    upload: &ResumableUpload,
    expected: Option<u64>,
    was_open: Option<bool>,
) -> Result<Put, IndexError> {
    let version = expected.map_or(1, |v| v + 1);
    let mut item = key(&upload.owner, &upload.id);
    item.insert("version".into(), n(version));
    item.insert("expiresOn".into(), n(millis(upload.expires_on)));
    item.insert(
        "open".into(),
        AttributeValue::Bool(upload.outcome.is_none()),
    );
    item.insert(
        STATE.into(),
        s(&serde_json::to_string(upload).expect("upload state serializes")),
    );
    let put = Put::builder().table_name(table).set_item(Some(item));
    build(
        match expected {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => {
                let put = put
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":expected", n(v));
                match was_open {
                    None => put.condition_expression("#version = :expected"),
                    Some(w) => put
                        .condition_expression("#version = :expected AND #open = :was")
                        .expression_attribute_names("#open", "open")
                        .expression_attribute_values(":was", AttributeValue::Bool(w)),
                }
            }
        }
        .build(),
    )
}

impl DynamoFileIndex {
    /// Whether the upload at `expected` is open; a conflict when it is gone or at another
    /// version. An upload's ID is never used again, and an ended one never opens again, so
    /// the version condition of the write that follows makes this the state it replaces.
    async fn upload_at(
        &self,
        owner: &Owner,
        id: &UploadId,
        expected: u64,
    ) -> Result<bool, IndexError> {
        match self.get_upload(owner, id).await? {
            Some(u) if u.version == expected => Ok(u.value.outcome.is_none()),
            _ => Err(IndexError::Conflict),
        }
    }
}

#[async_trait]
impl UploadIndex for DynamoFileIndex {
    async fn get_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
    ) -> Result<Option<Versioned<ResumableUpload>>, IndexError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem failed", e))?;
        out.item.as_ref().map(decode).transpose()
    }

    async fn put_upload(
        &self,
        upload: &ResumableUpload,
        expected: Option<u64>,
    ) -> Result<u64, IndexError> {
        let version = expected.map_or(1, |v| v + 1);
        let (owner, none) = (&upload.owner, FileCount::default());
        let tx = |put| TransactWriteItem::builder().put(put).build();
        let Some(v) = expected else {
            let put = put_item(&self.table, upload, None, None)?;
            let opened = i64::from(upload.outcome.is_none());
            return self
                .write_counted(owner, tx(put), none, opened)
                .await
                .map(|()| version);
        };
        // An ended upload never opens again: an open one written over a version was open, and
        // that write changes no counter (every PATCH).
        if upload.outcome.is_none() {
            let put = put_item(&self.table, upload, Some(v), None)?;
            return self
                .write_counted(owner, tx(put), none, 0)
                .await
                .map(|()| version);
        }
        // An ending mostly ends an open upload: that is one transaction with the counters.
        let put = put_item(&self.table, upload, Some(v), Some(true))?;
        match self.write_counted(owner, tx(put), none, -1).await {
            Err(IndexError::Conflict) => {}
            done => return done.map(|()| version),
        }
        // Refused: at another version, or it had ended already; only the latter is written.
        if self.upload_at(owner, &upload.id, v).await? {
            return Err(IndexError::Conflict);
        }
        let put = put_item(&self.table, upload, Some(v), Some(false))?;
        self.write_one(tx(put)).await.map(|()| version)
    }

    async fn create_upload(
        &self,
        upload: &ResumableUpload,
        limits: OpenLimits,
        now: DateTime<Utc>,
    ) -> Result<Result<u64, LimitReached>, IndexError> {
        // Open uploads that expired but were not swept yet hold their counter, not a slot.
        let expired = self.open_upload_items(&upload.owner, Some(now)).await?;
        let per_participant = limits.per_participant.saturating_add(expired);
        for _ in 0..3 {
            let mut items = vec![
                TransactWriteItem::builder()
                    .put(put_item(&self.table, upload, None, None)?)
                    .build(),
            ];
            items.extend(changes(
                &self.table,
                &upload.owner,
                FileCount::default(),
                1,
                Some((per_participant, limits.per_app)),
                (None, None),
            )?);
            match self.transact(items).await? {
                None => return Ok(Ok(1)),
                Some(f) if f.first() == Some(&true) => return Err(IndexError::Conflict),
                Some(f) if f.get(2) == Some(&true) => return Ok(Err(LimitReached::App)),
                Some(_) => {
                    if self.stored(&upload.owner).await?.is_some() {
                        return Ok(Err(LimitReached::Participant));
                    }
                    self.count_once(&upload.owner).await?;
                }
            }
        }
        Err(IndexError::Conflict)
    }

    async fn delete_upload(
        &self,
        owner: &Owner,
        id: &UploadId,
        expected: u64,
    ) -> Result<(), IndexError> {
        // An ended upload (most are: every completed one is swept at its expiry) counts for
        // nothing: one conditional delete. Only an open one's is a transaction with its
        // counter, and whether it was open comes back with the refusal, not from a read.
        let plain = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(owner, id)))
            .condition_expression("#version = :expected AND #open = :no")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":expected", n(expected))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match plain {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let DeleteItemError::ConditionalCheckFailedException(c) = e.err() else {
                    unreachable!("checked above");
                };
                let open_at_expected = c.item().is_some_and(|old| {
                    get_n(old, "version").ok().flatten() == Some(expected)
                        && old.get("open").and_then(|o| o.as_bool().ok()) == Some(&true)
                });
                if !open_at_expected {
                    return Err(IndexError::Conflict);
                }
            }
            Err(e) => return Err(failed("DeleteItem failed", e)),
        }
        let delete = build(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(owner, id)))
                .condition_expression("#version = :expected AND #open = :yes")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":expected", n(expected))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .build(),
        )?;
        let write = TransactWriteItem::builder().delete(delete).build();
        self.write_counted(owner, write, FileCount::default(), -1)
            .await
    }

    async fn uploads_of(
        &self,
        owner: &Owner,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError> {
        // The SDK's paginator goes on past a page that ended early (DynamoDB's 1 MB page).
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&upload_pk(owner)))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(after.map(|a| key(owner, a)))
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::with_capacity(limit);
        while found.len() < limit
            && let Some(item) = items.next().await
        {
            found.push(decode(&item.map_err(|e| failed("Query failed", e))?)?);
        }
        Ok(found)
    }

    async fn open_uploads(&self, owner: &Owner, now: DateTime<Utc>) -> Result<u64, IndexError> {
        let mut count = 0;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .filter_expression("#open = :yes AND expiresOn > :now")
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":pk", s(&upload_pk(owner)))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":now", n(millis(now)))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Query failed", e))?;
            count += u64::try_from(out.count).unwrap_or_default();
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(count),
            }
        }
    }

    /// A filtered scan of the table: `reconcile` reads the whole table anyway.
    async fn expired_uploads(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Versioned<ResumableUpload>>, IndexError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .filter_expression("attribute_exists(#state) AND expiresOn <= :now")
                .expression_attribute_names("#state", STATE)
                .expression_attribute_values(":now", n(millis(now)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Scan failed", e))?;
            for item in out.items() {
                found.push(decode(item)?);
                if found.len() == limit {
                    return Ok(found);
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(found),
            }
        }
    }
}
