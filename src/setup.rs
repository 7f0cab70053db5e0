//! `participant-files setup`: creates the bucket (private, encrypted, aborting stale multipart
//! uploads) and the table when missing; leaves existing ones as they are.

use std::time::Duration;

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    PublicAccessBlockConfiguration, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};

use crate::backends::Backends;
use crate::index::TableSetup;
use crate::lifecycle;
use crate::store::{Encryption, S3BlobStore};

/// Runs setup and returns one line per thing it created, found or could not do;
/// `resumable_ttl` is how long a resumable upload (and its multipart upload) may live.
pub async fn run(backends: &Backends, resumable_ttl: Duration) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();
    match &backends.dynamo {
        Some(index) => {
            let TableSetup {
                created,
                indexes_added,
                backfilled,
            } = index.setup().await?;
            if created {
                report.push(
                    "created the DynamoDB table with its indexes byApp, byAppFile and byPending"
                        .to_owned(),
                );
            } else {
                report.push("the DynamoDB table exists with the expected key schema".to_owned());
            }
            for name in indexes_added {
                report.push(format!("added the global secondary index {name}"));
            }
            if backfilled > 0 {
                report.push(format!(
                    "gave {backfilled} rows written before the indexes their index keys"
                ));
            }
            report.push(
                "the table and its indexes byApp, byAppFile and byPending are ACTIVE".to_owned(),
            );
        }
        None => report.push("the SQLite index is ready in the data dir".to_owned()),
    }
    match &backends.s3 {
        Some(store) => {
            setup_bucket(store, resumable_ttl, &mut report).await?;
            report.push(store.versioning_report().await);
        }
        None => report.push("the local store is ready in the data dir".to_owned()),
    }
    Ok(report)
}

/// Whether an S3 error says the server does not implement the call (S3-compatible servers).
fn not_implemented<E>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 501)
}

async fn setup_bucket(
    store: &S3BlobStore,
    ttl: Duration,
    report: &mut Vec<String>,
) -> anyhow::Result<()> {
    let client = store.client();
    let bucket = &store.settings().bucket;
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        report.push(format!(
            "bucket {bucket} exists; its settings are left as they are"
        ));
        // Left as they are, but a rule that cuts resumable uploads short is worth saying.
        match lifecycle::check(store, ttl).await {
            Ok(problems) => report.extend(problems.into_iter().map(|p| format!("WARNING: {p}"))),
            Err(e) => report.push(format!(
                "WARNING: cannot read the bucket's lifecycle rules to check them: {e:#}"
            )),
        }
        return Ok(());
    }
    let mut create = client.create_bucket().bucket(bucket);
    let region = client.config().region().map(ToString::to_string);
    if let Some(region) = region.filter(|r| r != "us-east-1") {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    create.send().await?;
    report.push(format!("created bucket {bucket}"));

    let block = client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await;
    note(
        report,
        "blocked all public access",
        block
            .map(|_| ())
            .map_err(|e| (not_implemented(&e), e.into())),
    )?;

    let by_default = match &store.settings().encryption {
        Encryption::S3Managed => ServerSideEncryptionByDefault::builder()
            .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::Aes256)
            .build()?,
        Encryption::Kms(key) => ServerSideEncryptionByDefault::builder()
            .sse_algorithm(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
            .set_kms_master_key_id(key.clone())
            .build()?,
    };
    let encryption = client
        .put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .bucket_key_enabled(true)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await;
    note(
        report,
        "turned on default encryption",
        encryption
            .map(|_| ())
            .map_err(|e| (not_implemented(&e), e.into())),
    )?;

    let rule = client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(lifecycle::rule(ttl)?)
                .build()?,
        )
        .send()
        .await;
    note(
        report,
        &format!(
            "added a lifecycle rule that aborts multipart uploads after {} days \
             (PF_RESUMABLE_TTL plus a day)",
            lifecycle::abort_after_days(ttl)
        ),
        rule.map(|_| ())
            .map_err(|e| (not_implemented(&e), e.into())),
    )
}

/// Records what a bucket setting came to: done, not supported by this server (a warning), or
/// an error that stops setup.
fn note(
    report: &mut Vec<String>,
    done: &str,
    result: Result<(), (bool, anyhow::Error)>,
) -> anyhow::Result<()> {
    match result {
        Ok(()) => {
            report.push(done.to_owned());
            Ok(())
        }
        Err((true, _)) => {
            report.push(format!(
                "WARNING: this S3 server does not implement it, so setup has not {done}; do it yourself"
            ));
            Ok(())
        }
        Err((false, e)) => Err(e),
    }
}
