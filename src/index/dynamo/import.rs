//! Many new rows at once (`BatchWriteItem`, 25 to a request), then their owners recounted: how a
//! benchmark builds a participant of 30,000 files in seconds rather than one transaction a row.

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};

use super::DynamoFileIndex;
use super::item::to_item;
use crate::index::IndexError;
use crate::model::FileRow;

/// The most writes one `BatchWriteItem` takes.
const BATCH: usize = 25;

impl DynamoFileIndex {
    /// Writes `rows`, which the table must not hold yet, unconditionally and without touching
    /// the usage counters, then recounts each owner's counters as `reconcile` does. Not a
    /// serving path: nothing guards these writes against a concurrent one.
    pub async fn import(&self, rows: &[FileRow]) -> Result<(), IndexError> {
        for chunk in rows.chunks(BATCH) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|row| {
                    let put = PutRequest::builder()
                        .set_item(Some(to_item(row, 1)))
                        .build()
                        .expect("an item is set");
                    WriteRequest::builder().put_request(put).build()
                })
                .collect();
            // Unprocessed items are throttling: sent again after the retry policy's pause.
            let mut tries = crate::retry::Backoff::new();
            while !pending.is_empty() {
                if !tries.next().await {
                    return Err(IndexError::Backend {
                        backend: super::NAME,
                        message: "BatchWriteItem left items unprocessed after every try".into(),
                        definite: false,
                        source: None,
                    });
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(self.table.clone(), pending)
                    .send()
                    .await
                    .map_err(|e| super::failed("BatchWriteItem failed", e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        let mut owners: Vec<_> = rows.iter().map(|r| r.owner.clone()).collect();
        owners.sort_by(|a, b| (&a.app, &a.participant).cmp(&(&b.app, &b.participant)));
        owners.dedup();
        for owner in owners {
            self.recount_owner(&owner).await?;
        }
        Ok(())
    }
}
