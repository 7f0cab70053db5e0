//! `participant-files setup` against the S3 and DynamoDB test servers: creates what is missing,
//! is harmless when run again, and refuses a table with another key schema; its lifecycle rule
//! spares resumable uploads, and `serve` warns about a bucket rule that does not.

mod common;

use common::{JWT_SECRET, URL_SECRET, aws_env, unique_name};

fn setup(store: &str, index: &str) -> (bool, String, String) {
    setup_with(store, index, &[])
}

fn setup_with(store: &str, index: &str, env: &[(&str, String)]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .arg("setup")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PF_STORE", store)
        .env("PF_INDEX", index)
        .env("PF_S3_FORCE_PATH_STYLE", "true")
        .env("PF_JWT_SECRET", JWT_SECRET)
        .env("PF_URL_SECRET", URL_SECRET)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn creates_then_leaves_alone() {
    aws_env();
    let bucket = unique_name("pf");
    let store = format!("s3://{bucket}/p");
    let index = format!("dynamodb://{}", unique_name("pf"));
    let (ok, out, err) = setup(&store, &index);
    assert!(ok, "{err}");
    assert!(out.contains("created the DynamoDB table"), "{out}");
    assert!(out.contains(&format!("created bucket {bucket}")), "{out}");
    // s3s-fs keeps no versions (moto's answer to GetBucketVersioning is one the SDK cannot
    // read, so the states that keep versions are checked in the store's unit tests).
    assert!(
        out.contains("this S3 server does not implement versioning"),
        "{out}"
    );
    assert!(aws_env().s3_dir.join(&bucket).is_dir());
    let (ok, out, err) = setup(&store, &index);
    assert!(ok, "{err}");
    assert!(
        out.contains("the DynamoDB table exists with the expected key schema"),
        "{out}"
    );
    assert!(out.contains(&format!("bucket {bucket} exists")), "{out}");
}

#[tokio::test]
async fn refuses_a_table_with_another_key_schema() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    aws_env();
    let table = unique_name("pf");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        setup(
            &format!("s3://{}", unique_name("pf")),
            &format!("dynamodb://{table}"),
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("not hash key pk and range key fileId"),
        "{err}"
    );
}

/// A table made by the version before the app-wide listing: no indexes, rows without their
/// index keys. `setup` adds both indexes, waits until they are active, says so, and gives the
/// old rows their keys, so that the listing finds them; run again, it has nothing left to do.
#[tokio::test]
async fn adds_the_listing_indexes_to_an_older_table() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        ScalarAttributeType,
    };
    use participant_files::index::AppQuery;
    use participant_files::model::AppId;
    aws_env();
    let table = unique_name("pf");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("fileId"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("fileId", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let s = |v: &str| AttributeValue::S(v.to_owned());
    // A committed file and a row holding only an upload URL, as the older version wrote them.
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("old#u1"))
        .item("fileId", s("a.txt"))
        .item("app", s("old"))
        .item("participant", s("u1"))
        .item("version", AttributeValue::N("1".into()))
        .item("objectKey", s("old/u1/0123456789abcdef0123456789abcdef"))
        .item("mimeType", s("text/plain"))
        .item("size", AttributeValue::N("3".into()))
        .item("scanStatus", s("clean"))
        .item("createdOn", s("2026-11-26T22:00:00.000Z"))
        .send()
        .await
        .unwrap();
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("old#u2"))
        .item("fileId", s("b.txt"))
        .item("app", s("old"))
        .item("participant", s("u2"))
        .item("version", AttributeValue::N("1".into()))
        .item("pendingKey", s("old/u2/0123456789abcdef0123456789abcdef"))
        .item("pendingMimeType", s("text/plain"))
        .item("pendingCreatedOn", s("2026-11-26T22:00:00.000Z"))
        .item("pendingExpiresOn", s("2026-11-26T23:00:00.000Z"))
        .send()
        .await
        .unwrap();
    let index = format!("dynamodb://{table}");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let index = index.clone();
        move || setup(&format!("s3://{}", unique_name("pf")), &index)
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    for line in [
        "the DynamoDB table exists with the expected key schema",
        "added the global secondary index byApp",
        "added the global secondary index byAppFile",
        "added the global secondary index byPending",
        "gave 2 rows written before the indexes their index keys",
        "the table and its indexes byApp, byAppFile and byPending are ACTIVE",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let mut names: Vec<&str> = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["byApp", "byAppFile", "byPending"]);
    let (_data, backends) = common::open_backends(&["--index", &index]).await;
    let rows = backends
        .index
        .list_app(
            &AppQuery {
                app: AppId::parse("old").unwrap(),
                file_id: None,
                start: None,
                end: None,
                after: None,
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].value.file_id.as_str(), "a.txt");
    // The upload URL written before the settler's index is in it now.
    let pending = backends.index.pending(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].value.file_id.as_str(), "b.txt");
    let (ok, out, err) =
        tokio::task::spawn_blocking(move || setup(&format!("s3://{}", unique_name("pf")), &index))
            .await
            .unwrap();
    assert!(ok, "{err}");
    assert!(
        !out.contains("added the global") && !out.contains("gave"),
        "{out}"
    );
}

/// moto's S3, for bucket settings: s3s-fs has no lifecycle rules. moto serves S3 on the port it
/// serves DynamoDB on.
fn moto_s3() -> String {
    aws_env();
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap()
}

async fn moto_s3_client() -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(moto_s3())
            .force_path_style(true)
            .build(),
    )
}

/// Days after which each rule of `bucket` aborts incomplete multipart uploads.
async fn abort_days(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<i32> {
    client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .iter()
        .filter_map(|r| {
            r.abort_incomplete_multipart_upload()?
                .days_after_initiation()
        })
        .collect()
}

/// A resumable upload keeps its multipart upload for up to `PF_RESUMABLE_TTL`: the rule
/// `setup` adds waits that long and a day more, for the default TTL and the longest.
#[tokio::test]
async fn the_lifecycle_rule_waits_the_resumable_ttl_and_a_day() {
    let client = moto_s3_client().await;
    for (ttl, days) in [(None, 2), (Some("7d"), 8), (Some("36h"), 3)] {
        let bucket = unique_name("pf");
        let data = tempfile::tempdir().unwrap();
        let mut env = vec![
            ("AWS_ENDPOINT_URL_S3", moto_s3()),
            ("PF_DATA_DIR", data.path().display().to_string()),
        ];
        if let Some(ttl) = ttl {
            env.push(("PF_RESUMABLE_TTL", ttl.to_owned()));
        }
        let store = format!("s3://{bucket}");
        let (ok, out, err) =
            tokio::task::spawn_blocking(move || setup_with(&store, "sqlite", &env))
                .await
                .unwrap();
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!(
                "added a lifecycle rule that aborts multipart uploads after {days} days"
            )),
            "{ttl:?}: {out}"
        );
        assert_eq!(abort_days(&client, &bucket).await, [days], "{ttl:?}");
    }
}

/// Starts `serve` on the bucket with `PF_RESUMABLE_TTL=3d` and gives the log lines written
/// before it serves; the service must come up.
async fn start_up_log(bucket: &str) -> Vec<String> {
    use std::io::BufRead;
    let data = tempfile::tempdir().unwrap();
    let port = common::closed_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .env("PF_LISTEN", format!("127.0.0.1:{port}"))
        .env("PF_STORE", format!("s3://{bucket}"))
        .env("PF_S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ENDPOINT_URL_S3", moto_s3())
        .env("PF_RESUMABLE_TTL", "3d")
        .env("PF_DATA_DIR", data.path())
        .env("PF_JWT_SECRET", JWT_SECRET)
        .env("PF_URL_SECRET", URL_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read to the end, also after the start-up: a closed pipe would fail the service's logging.
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_mins(1)) {
            Ok(line) => {
                let serving = line.contains("participant-files is serving");
                lines.push(line);
                if serving {
                    break;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the service did not start ({e}): {lines:#?}");
            }
        }
    }
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.unwrap().status(), 200, "{lines:#?}");
    lines
}

/// A bucket whose rule aborts multipart uploads after a day, sooner than the resumable
/// uploads' 3 days: `serve` warns, naming both, and serves; with a rule long enough it does
/// not warn.
#[tokio::test]
async fn serve_warns_about_a_lifecycle_rule_shorter_than_the_resumable_ttl() {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleRule, LifecycleRuleFilter,
    };
    let client = moto_s3_client().await;
    let bucket = unique_name("pf");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let put_rule = |days: i32| {
        client
            .put_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(
                        LifecycleRule::builder()
                            .id("old-abort")
                            .status(ExpirationStatus::Enabled)
                            .filter(LifecycleRuleFilter::builder().prefix("").build())
                            .abort_incomplete_multipart_upload(
                                AbortIncompleteMultipartUpload::builder()
                                    .days_after_initiation(days)
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
    };
    put_rule(1).await.unwrap();
    let lines = start_up_log(&bucket).await;
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("lifecycle"))
        .collect();
    assert_eq!(warned.len(), 1, "{lines:#?}");
    for part in ["old-abort", "after 1 day,", "PF_RESUMABLE_TTL (3days)"] {
        assert!(warned[0].contains(part), "{part}: {}", warned[0]);
    }

    put_rule(4).await.unwrap();
    let lines = start_up_log(&bucket).await;
    assert!(!lines.iter().any(|l| l.contains("lifecycle")), "{lines:#?}");
}
