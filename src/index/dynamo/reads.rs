//! The DynamoDB index's reads of many rows: consistent batch reads, pages of a partition or
//! of the table, the app-wide listing and the settler's pending rows.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::item::{
    BY_APP, BY_APP_FILE, BY_PENDING, GSI_ROW, GSI_TIME, PENDING_HASH, from_item, get_s,
    parse_position, position_key, row_key, s, time_key,
};
use super::{DynamoFileIndex, Item, corrupt, failed, pk, start_key, uploads, usage};
use crate::index::{AppPosition, AppQuery, IndexError};
use crate::model::{FileId, FileRow, Owner, Versioned};

impl DynamoFileIndex {
    /// The rows at `keys` (table keys), read consistently, by `(pk, fileId)`.
    pub(super) async fn batch_get(
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
    pub(super) async fn collect(
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

    pub(super) async fn list_app_rows(
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

    pub(super) async fn pending_rows(
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
}
