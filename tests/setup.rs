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
