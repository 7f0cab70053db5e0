//! The DynamoDB index's usage counters: an item per participant in its own partition (range
//! key `#usage`, which no file ID can be) and one per app (`{app}#`, which no participant's
//! partition is) for its open uploads, changed by `ADD` in one `TransactWriteItems` with the
//! row they count.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Select, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::item::{BY_PENDING, GSI_ROW, PENDING_HASH, get_n, get_s, get_time, n, s};
use super::{DynamoFileIndex, Item, NAME, failed, pk};
use crate::index::usage::{Counters, FileCount, FileQuota, QuotaReached, Recount};
use crate::index::{IndexError, Usage};
use crate::model::{AppId, Owner, UserId};

/// The counters' attributes. Only counters items have them, so scans skip those items by them.
pub(super) const UPLOADS: &str = "usageUploads";
const FILES: &str = "usageFiles";
const BYTES: &str = "usageBytes";
const RANGE: &str = "#usage";

fn key(owner: &Owner) -> Item {
    Item::from([
        ("pk".to_owned(), s(&pk(owner))),
        ("fileId".to_owned(), s(RANGE)),
    ])
}

fn app_key(owner: &Owner) -> Item {
    Item::from([
        ("pk".to_owned(), s(&format!("{}#", owner.app))),
        ("fileId".to_owned(), s(RANGE)),
    ])
}

fn signed(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A stored counter; one taken below zero by drift reads as zero until `reconcile` repairs it.
fn counter(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .map_or(0, |v| u64::try_from(v).unwrap_or(0))
}

fn decode(item: &Item) -> Counters {
    Counters {
        files: counter(item, FILES),
        bytes: counter(item, BYTES),
        uploads: counter(item, UPLOADS),
    }
}

pub(super) fn build<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, IndexError> {
    r.map_err(|e| IndexError::Backend {
        backend: NAME,
        message: "cannot build a transaction".to_owned(),
        definite: true,
        source: Some(Box::new(e)),
    })
}

/// The counters' change in a transaction: `ADD` on the participant's item, which must exist
/// (else the participant is counted first), and on the app's for open uploads. With
/// `upload_limits` (participant, app) the open uploads stay below them; with `ceilings`
/// (files, bytes, from [`FileQuota::ceilings`]) the stored counts must be at most those.
pub(super) fn changes(
    table: &str,
    owner: &Owner,
    files: FileCount,
    uploads: i64,
    upload_limits: Option<(u64, u64)>,
    ceilings: (Option<u64>, Option<u64>),
) -> Result<Vec<TransactWriteItem>, IndexError> {
    let mut out = Vec::new();
    if files.is_zero() && uploads == 0 {
        return Ok(out);
    }
    let mut mine = Update::builder()
        .table_name(table)
        .set_key(Some(key(owner)))
        .update_expression("ADD #f :f, #b :b, #u :u")
        .expression_attribute_names("#f", FILES)
        .expression_attribute_names("#b", BYTES)
        .expression_attribute_names("#u", UPLOADS)
        .expression_attribute_values(":f", signed(files.files))
        .expression_attribute_values(":b", signed(files.bytes))
        .expression_attribute_values(":u", signed(uploads));
    let mut condition = String::from("attribute_exists(#f)");
    if let Some((participant, _)) = upload_limits {
        condition.push_str(" AND #u < :max");
        mine = mine.expression_attribute_values(":max", n(participant));
    }
    if let Some(files) = ceilings.0 {
        condition.push_str(" AND #f <= :maxFiles");
        mine = mine.expression_attribute_values(":maxFiles", n(files));
    }
    if let Some(bytes) = ceilings.1 {
        condition.push_str(" AND #b <= :maxBytes");
        mine = mine.expression_attribute_values(":maxBytes", n(bytes));
    }
    mine = mine.condition_expression(condition);
    out.push(
        TransactWriteItem::builder()
            .update(build(mine.build())?)
            .build(),
    );
    if uploads != 0 {
        let mut app = Update::builder()
            .table_name(table)
            .set_key(Some(app_key(owner)))
            .update_expression("ADD #u :u")
            .expression_attribute_names("#u", UPLOADS)
            .expression_attribute_values(":u", signed(uploads));
        if let Some((_, per_app)) = upload_limits {
            app = app
                .condition_expression("attribute_not_exists(#u) OR #u < :max")
                .expression_attribute_values(":max", n(per_app));
        }
        out.push(
            TransactWriteItem::builder()
                .update(build(app.build())?)
                .build(),
        );
    }
    Ok(out)
}

/// Which items of a transaction failed their condition, or `None` when it committed.
pub(super) type Refused = Option<Vec<bool>>;

impl DynamoFileIndex {
    /// Runs a transaction; a cancelled one answers which items' conditions failed.
    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Refused, IndexError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(None),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) = e.err() else {
                    unreachable!("checked above");
                };
                let failed: Vec<bool> = c
                    .cancellation_reasons()
                    .iter()
                    .map(|r| r.code() == Some("ConditionalCheckFailed"))
                    .collect();
                if failed.iter().any(|f| *f) {
                    Ok(Some(failed))
                } else {
                    // Cancelled for another reason (a conflict with another transaction on the
                    // same items): nothing was written, and reading again decides.
                    Err(IndexError::Conflict)
                }
            }
            Err(e) => Err(failed("TransactWriteItems failed", e)),
        }
    }

    /// Runs a row's write with the counters' change in one transaction; counts the participant
    /// first if it has no counters yet. A failed condition of the row is a conflict.
    pub(super) async fn write_counted(
        &self,
        owner: &Owner,
        write: TransactWriteItem,
        files: FileCount,
        uploads: i64,
    ) -> Result<(), IndexError> {
        match self
            .write_within(owner, write, files, uploads, FileQuota::default())
            .await?
        {
            Ok(()) => Ok(()),
            Err(reached) => unreachable!("{reached:?} without a quota"),
        }
    }

    /// [`Self::write_counted`], landing only if the counters stay within `quota`: the quota
    /// is a condition on the counters item in the same transaction as the row's write.
    pub(super) async fn write_within(
        &self,
        owner: &Owner,
        write: TransactWriteItem,
        files: FileCount,
        uploads: i64,
        quota: FileQuota,
    ) -> Result<Result<(), QuotaReached>, IndexError> {
        let ceilings = match quota.ceilings(files) {
            Ok(c) => c,
            Err(reached) => return Ok(Err(reached)),
        };
        let counters = changes(&self.table, owner, files, uploads, None, ceilings)?;
        if counters.is_empty() {
            return self.write_one(write).await.map(Ok);
        }
        for _ in 0..3 {
            let mut items = vec![write.clone()];
            items.extend(counters.iter().cloned());
            match self.transact(items).await? {
                None => return Ok(Ok(())),
                Some(f) if f.first() == Some(&true) => return Err(IndexError::Conflict),
                // The counters' condition failed: they are missing, or a quota is reached (the
                // rare path, which pays a read to tell which).
                Some(_) => match self.stored(owner).await? {
                    None => self.count_once(owner).await?,
                    Some(held) => {
                        if let Some(reached) = quota.refuses(held, files) {
                            return Ok(Err(reached));
                        }
                        // They moved since the refusal: try again.
                    }
                },
            }
        }
        Err(IndexError::Conflict)
    }

    /// Gives a participant without counters its counters, from its rows. While it has none,
    /// no write of its rows can land (each needs the counters to exist), so the count holds.
    pub(super) async fn count_once(&self, owner: &Owner) -> Result<(), IndexError> {
        let c = self.counted(owner).await?;
        let mut item = key(owner);
        item.insert(FILES.into(), n(c.files));
        item.insert(BYTES.into(), n(c.bytes));
        item.insert(UPLOADS.into(), n(c.uploads));
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build(),
        )?;
        // Another writer that counted it first wrote the same count.
        self.transact(vec![TransactWriteItem::builder().put(put).build()])
            .await
            .map(|_| ())
    }

    /// The participant's counters as its rows say, from a consistent read of its partitions.
    async fn counted(&self, owner: &Owner) -> Result<Counters, IndexError> {
        let mut c = Counters::default();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk(owner)))
                .projection_expression("objectKey, #size")
                .expression_attribute_names("#size", "size")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Query failed", e))?;
            for item in out.items() {
                if get_s(item, "objectKey").is_some() {
                    c.files += 1;
                    c.bytes += get_n(item, "size")?.unwrap_or_default();
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        c.uploads = self.open_upload_items(owner, None).await?;
        Ok(c)
    }

    /// Upload items of the owner that are open (and, with `expired_by`, expired by then).
    pub(super) async fn open_upload_items(
        &self,
        owner: &Owner,
        expired_by: Option<DateTime<Utc>>,
    ) -> Result<u64, IndexError> {
        let mut count = 0;
        let mut start = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":pk", s(&format!("{}#uploads", pk(owner))))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .select(Select::Count)
                .set_exclusive_start_key(start.take());
            q = match expired_by {
                None => q.filter_expression("#open = :yes"),
                Some(now) => q
                    .filter_expression("#open = :yes AND expiresOn <= :now")
                    .expression_attribute_values(
                        ":now",
                        n(u64::try_from(now.timestamp_millis()).unwrap_or_default()),
                    ),
            };
            let out = q.send().await.map_err(|e| failed("Query failed", e))?;
            count += u64::try_from(out.count).unwrap_or_default();
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(count),
            }
        }
    }

    /// The participant's stored counters, read consistently.
    pub(super) async fn stored(&self, owner: &Owner) -> Result<Option<Counters>, IndexError> {
        Ok(self.stored_item(owner).await?.as_ref().map(decode))
    }

    async fn stored_item(&self, owner: &Owner) -> Result<Option<Item>, IndexError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(owner)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| failed("GetItem failed", e))?;
        Ok(out.item)
    }

    /// The counters, and the owner's unexpired upload URLs from the settler's sparse index
    /// (its key range of this participant: at most `PF_MAX_PENDING_PER_PARTICIPANT` live
    /// entries plus the expired ones not yet cleared), each checked against its row.
    pub(super) async fn usage_of(
        &self,
        owner: &Owner,
        now: DateTime<Utc>,
    ) -> Result<Usage, IndexError> {
        let c = match self.stored(owner).await? {
            Some(c) => c,
            None => self.counted(owner).await?,
        };
        let mut usage = Usage {
            files: c.files,
            bytes: c.bytes,
            ..Usage::default()
        };
        let prefix = format!("{}#", pk(owner));
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_PENDING.0)
                .key_condition_expression("#h = :h AND begins_with(#r, :p)")
                .expression_attribute_names("#h", BY_PENDING.1)
                .expression_attribute_names("#r", GSI_ROW)
                .expression_attribute_values(":h", s(PENDING_HASH))
                .expression_attribute_values(":p", s(&prefix))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| failed("Query failed", e))?;
            let keys: Vec<Item> = out
                .items()
                .iter()
                .filter_map(|i| {
                    Some(Item::from([
                        ("pk".to_owned(), i.get("pk")?.clone()),
                        ("fileId".to_owned(), i.get("fileId")?.clone()),
                    ]))
                })
                .collect();
            for chunk in keys.chunks(100) {
                for item in self.batch_get(chunk.to_vec()).await?.values() {
                    if item.contains_key("pendingExpiresOn")
                        && get_time(item, "pendingExpiresOn")? > now
                    {
                        usage.pending += 1;
                        if !item.contains_key("objectKey") {
                            usage.pending_new += 1;
                        }
                    }
                }
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(usage),
            }
        }
    }

    /// Every participant whose counters item is not all zero: a scan of the table (as
    /// `reconcile`'s own), keeping only counters items of participants.
    pub(super) async fn usage_owners(&self) -> Result<Vec<Owner>, IndexError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .filter_expression("fileId = :usage AND (#f <> :zero OR #b <> :zero OR #u <> :zero)")
            .projection_expression("pk")
            .expression_attribute_names("#f", FILES)
            .expression_attribute_names("#b", BYTES)
            .expression_attribute_names("#u", UPLOADS)
            .expression_attribute_values(":usage", s(RANGE))
            .expression_attribute_values(":zero", n(0))
            .into_paginator()
            .items()
            .send();
        let mut owners = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| failed("Scan failed", e))?;
            let Some((app, participant)) = get_s(&item, "pk").and_then(|pk| pk.split_once('#'))
            else {
                continue;
            };
            // The app's item (`{app}#`) counts no participant.
            if let (Ok(app), Ok(participant)) = (AppId::parse(app), UserId::parse(participant)) {
                owners.push(Owner { app, participant });
            }
        }
        Ok(owners)
    }

    /// Counts the participant again and stores the count where it differs, conditional on the
    /// counters being as read before the count: a write that changed them meanwhile makes it
    /// count again.
    pub(super) async fn recount_owner(&self, owner: &Owner) -> Result<Vec<Recount>, IndexError> {
        for _ in 0..5 {
            let raw = self.stored_item(owner).await?;
            let was = raw.as_ref().map(decode);
            let now = self.counted(owner).await?;
            if was == Some(now) {
                return Ok(Vec::new());
            }
            let mut item = key(owner);
            item.insert(FILES.into(), n(now.files));
            item.insert(BYTES.into(), n(now.bytes));
            item.insert(UPLOADS.into(), n(now.uploads));
            let mut put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .expression_attribute_names("#f", FILES);
            // On the stored values as they are (below zero, too), not as they read.
            let raw_of = |r: &Item, name: &str| r.get(name).cloned().unwrap_or_else(|| n(0));
            put = match &raw {
                None => put.condition_expression("attribute_not_exists(#f)"),
                Some(r) => put
                    .condition_expression("#f = :f AND #b = :b AND #u = :u")
                    .expression_attribute_names("#b", BYTES)
                    .expression_attribute_names("#u", UPLOADS)
                    .expression_attribute_values(":f", raw_of(r, FILES))
                    .expression_attribute_values(":b", raw_of(r, BYTES))
                    .expression_attribute_values(":u", raw_of(r, UPLOADS)),
            };
            let put = build(put.build())?;
            if self
                .transact(vec![TransactWriteItem::builder().put(put).build()])
                .await?
                .is_none()
            {
                return Ok(vec![Recount {
                    owner: owner.clone(),
                    stored: was,
                    counted: now,
                }]);
            }
        }
        Err(IndexError::Conflict)
    }
}
