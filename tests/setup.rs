//! `participant-files setup` against the S3 and DynamoDB test servers: creates what is missing,
//! is harmless when run again, and refuses a table with another key schema.

mod common;

use common::{JWT_SECRET, URL_SECRET, aws_env, unique_name};

fn setup(store: &str, index: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
        .arg("setup")
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
