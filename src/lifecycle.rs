//! The bucket rule that aborts stale multipart uploads: its age, and the check that it spares resumable ones.

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
};

use crate::store::S3BlobStore;

const DAY: u64 = 24 * 60 * 60;

/// The name of the rule `setup` adds.
pub const RULE_ID: &str = "abort-incomplete-multipart-uploads";

/// Days after which `setup`'s rule aborts a multipart upload: a resumable upload keeps its
/// multipart upload for as long as it lives (up to `PF_RESUMABLE_TTL`), and a day more leaves
/// room for a completion that started just before the end.
pub fn abort_after_days(ttl: Duration) -> i32 {
    i32::try_from(ttl.as_secs().div_ceil(DAY) + 1).unwrap_or(i32::MAX)
}

/// The rule `setup` adds to a bucket it creates.
pub fn rule(ttl: Duration) -> Result<LifecycleRule, aws_sdk_s3::error::BuildError> {
    LifecycleRule::builder()
        .id(RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(abort_after_days(ttl))
                .build(),
        )
        .build()
}

/// What is wrong with each of `rules` that aborts multipart uploads under `prefix` (the
/// store's key prefix, empty or ending with `/`) sooner than `ttl`: a sentence each.
pub fn too_short(rules: &[LifecycleRule], prefix: &str, ttl: Duration) -> Vec<String> {
    rules
        .iter()
        .filter(|r| *r.status() == ExpirationStatus::Enabled)
        .filter(|r| {
            // A rule may cover only some of the service's keys; those uploads still suffer.
            // Rules written before `Filter` existed keep their prefix on the rule itself.
            #[allow(deprecated)]
            let scope = r
                .filter()
                .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
                .or(r.prefix())
                .unwrap_or("");
            scope.starts_with(prefix) || prefix.starts_with(scope)
        })
        .filter_map(|r| {
            let days = r.abort_incomplete_multipart_upload()?.days_after_initiation()?;
            (u64::try_from(days).unwrap_or(0) * DAY < ttl.as_secs()).then(|| {
                format!(
                    "the bucket's lifecycle rule {} aborts incomplete multipart uploads after {days} \
                     day{}, sooner than PF_RESUMABLE_TTL ({}): a resumable upload older than that \
                     loses its parts; make the rule at least {} days",
                    r.id().unwrap_or("(unnamed)"),
                    if days == 1 { "" } else { "s" },
                    humantime::format_duration(ttl),
                    abort_after_days(ttl),
                )
            })
        })
        .collect()
}

/// Reads the bucket's lifecycle rules and says what is wrong with them for `ttl`; an error
/// when they cannot be read (no rules at all is fine: nothing aborts).
pub async fn check(store: &S3BlobStore, ttl: Duration) -> anyhow::Result<Vec<String>> {
    let settings = store.settings();
    let read = store
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&settings.bucket)
        .send()
        .await;
    let rules = match read {
        Ok(out) => out.rules().to_vec(),
        // No rules, or a server without lifecycle rules (501): nothing aborts uploads.
        Err(e)
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 501)
                || e.code() == Some("NoSuchLifecycleConfiguration") =>
        {
            Vec::new()
        }
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let prefix = if settings.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", settings.prefix)
    };
    Ok(too_short(&rules, &prefix, ttl))
}

/// At `serve`'s start-up: warns about each rule that would abort resumable uploads before
/// their end, and goes on whatever the answer (the rule is the bucket owner's to change).
pub async fn warn_at_start(store: &S3BlobStore, ttl: Duration) {
    // A hung S3 must not hold the start-up.
    match tokio::time::timeout(Duration::from_secs(10), check(store, ttl)).await {
        Ok(Ok(problems)) => {
            for problem in problems {
                tracing::warn!("{problem}");
            }
        }
        Ok(Err(e)) => tracing::warn!(
            "cannot read the bucket's lifecycle rules (s3:GetLifecycleConfiguration) to check \
             them against PF_RESUMABLE_TTL: {e:#}"
        ),
        Err(_) => tracing::warn!(
            "the bucket's lifecycle rules did not come within 10 s; not checked against \
             PF_RESUMABLE_TTL"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abort_rule(id: &str, prefix: &str, days: i32, enabled: bool) -> LifecycleRule {
        LifecycleRule::builder()
            .id(id)
            .status(if enabled {
                ExpirationStatus::Enabled
            } else {
                ExpirationStatus::Disabled
            })
            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(days)
                    .build(),
            )
            .build()
            .unwrap()
    }

    /// Only enabled rules that reach the service's keys and abort sooner than the TTL count.
    #[test]
    fn a_rule_counts_when_enabled_over_the_keys_and_shorter_than_the_ttl() {
        let ttl = Duration::from_secs(3 * DAY);
        let rules = [
            abort_rule("all", "", 1, true),
            abort_rule("some-of-ours", "files/study/", 2, true),
            abort_rule("above-ours", "fil", 1, true),
            abort_rule("elsewhere", "logs/", 1, true),
            abort_rule("disabled", "", 1, false),
            abort_rule("long-enough", "", 3, true),
        ];
        let found = too_short(&rules, "files/", ttl);
        let named: Vec<&str> = ["all", "some-of-ours", "above-ours"]
            .into_iter()
            .filter(|id| found.iter().any(|f| f.contains(&format!("rule {id} "))))
            .collect();
        assert_eq!(named, ["all", "some-of-ours", "above-ours"], "{found:#?}");
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(abort_after_days(Duration::from_secs(DAY)), 2);
        assert_eq!(abort_after_days(Duration::from_secs(DAY + 1)), 3);
    }
}
