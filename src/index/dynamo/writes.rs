//! The DynamoDB index's row writes that may move no counter: first one plain conditional
//! write that lands only when the counters stay as they are, and a transaction with the
//! counters' change only when the stored row counts otherwise.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::item::{from_item, n, to_item};
use super::{DynamoFileIndex, Item, failed, start_key};
use crate::index::IndexError;
use crate::model::{FileId, FileRow, Owner};

/// What a plain conditional write found.
pub(super) enum Plain {
    /// It landed: the stored row counted as the new one does, so no counter changes.
    Landed,
    /// The stored row is at `expected` but counts otherwise; the write did not land. Read
    /// from the refusal itself (`ReturnValuesOnConditionCheckFailure`), so no extra request.
    CountsOtherwise(Box<FileRow>),
}

/// The row a refused write returned, when it is at `expected`; else the writer lost a race.
fn at_expected(item: Option<&Item>, expected: u64) -> Result<FileRow, IndexError> {
    match item.map(from_item).transpose()? {
        Some(r) if r.version == expected => Ok(r.value),
        _ => Err(IndexError::Conflict),
    }
}

impl DynamoFileIndex {
    /// Writes `row` over `expected` if the stored row counts the same (a committed file of the
    /// same size, or none): such a write leaves the counters exact without touching them.
    pub(super) async fn put_plain(
        &self,
        row: &FileRow,
        expected: u64,
    ) -> Result<Plain, IndexError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(row, expected + 1)))
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        req = match &row.current {
            Some(c) => req
                .condition_expression("#version = :expected AND #size = :size")
                .expression_attribute_names("#size", "size")
                .expression_attribute_values(":size", n(c.size)),
            None => {
                req.condition_expression("#version = :expected AND attribute_not_exists(objectKey)")
            }
        };
        match req.send().await {
            Ok(_) => Ok(Plain::Landed),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let PutItemError::ConditionalCheckFailedException(c) = e.err() else {
                    unreachable!("checked above");
                };
                at_expected(c.item(), expected).map(|r| Plain::CountsOtherwise(Box::new(r)))
            }
            Err(e) => Err(failed("PutItem failed", e)),
        }
    }

    /// Deletes the row at `expected` if it holds no committed file (it counts for nothing).
    pub(super) async fn delete_plain(
        &self,
        owner: &Owner,
        file: &FileId,
        expected: u64,
    ) -> Result<Plain, IndexError> {
        let req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(start_key(owner, file)))
            .condition_expression("#version = :expected AND attribute_not_exists(objectKey)")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", n(expected))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match req.send().await {
            Ok(_) => Ok(Plain::Landed),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let DeleteItemError::ConditionalCheckFailedException(c) = e.err() else {
                    unreachable!("checked above");
                };
                at_expected(c.item(), expected).map(|r| Plain::CountsOtherwise(Box::new(r)))
            }
            Err(e) => Err(failed("DeleteItem failed", e)),
        }
    }

    /// Runs one item of a transaction as a plain conditional write (a transaction of one item
    /// costs twice the write capacity); a failed condition is a conflict.
    pub(super) async fn write_one(&self, write: TransactWriteItem) -> Result<(), IndexError> {
        if let Some(p) = write.put {
            self.client
                .put_item()
                .table_name(p.table_name)
                .set_item(Some(p.item))
                .set_condition_expression(p.condition_expression)
                .set_expression_attribute_names(p.expression_attribute_names)
                .set_expression_attribute_values(p.expression_attribute_values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| match e.as_service_error() {
                    Some(s) if s.is_conditional_check_failed_exception() => IndexError::Conflict,
                    _ => failed("PutItem failed", e),
                })
        } else if let Some(d) = write.delete {
            self.client
                .delete_item()
                .table_name(d.table_name)
                .set_key(Some(d.key))
                .set_condition_expression(d.condition_expression)
                .set_expression_attribute_names(d.expression_attribute_names)
                .set_expression_attribute_values(d.expression_attribute_values)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| match e.as_service_error() {
                    Some(s) if s.is_conditional_check_failed_exception() => IndexError::Conflict,
                    _ => failed("DeleteItem failed", e),
                })
        } else {
            Err(IndexError::Backend {
                backend: super::NAME,
                message: "a single write must be a put or a delete".to_owned(),
                definite: true,
                source: None,
            })
        }
    }
}
