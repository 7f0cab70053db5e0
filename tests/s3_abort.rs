//! A multipart upload whose `CreateMultipartUpload` is still on its way when the upload is
//! dropped (the client went away) is aborted once S3 answers, so S3 keeps none of it. The S3
//! server (s3s-fs) is reached through a loopback proxy that holds its answers back, so that the
//! drop falls inside the request.

mod common;

use std::time::Duration;

use common::{aws_env, noise, open_backends, s3_multipart_leftovers, unique_name};
use participant_files::keys::{ObjectKey, UploadId};
use participant_files::model::{AppId, Owner, UserId};
use participant_files::store::BlobStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `upstream` that passes requests at once and every chunk of an answer after
/// `delay`; returns its address.
async fn slow_answers(upstream: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn an_upload_dropped_while_its_multipart_upload_is_created_leaves_nothing() {
    let env = aws_env();
    let bucket = unique_name("pf");
    // The bucket, made through the service's own setup.
    let _ = open_backends(&[
        "--store",
        &format!("s3://{bucket}"),
        "--s3-force-path-style",
        "true",
    ])
    .await;
    let s3 = std::env::var("AWS_ENDPOINT_URL_S3").unwrap();
    let proxy = slow_answers(
        s3.trim_start_matches("http://").to_owned(),
        Duration::from_millis(800),
    )
    .await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let tasks = tokio_util::task::TaskTracker::new();
    let store = participant_files::store::S3BlobStore::new(
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .endpoint_url(&proxy)
                .force_path_style(true)
                .build(),
        ),
        participant_files::store::S3Settings {
            bucket: bucket.clone(),
            prefix: String::new(),
            part_size: 5 * 1024 * 1024,
            parts_in_flight: 2,
            single_put_max: 0,
            encryption: participant_files::store::Encryption::S3Managed,
        },
        participant_files::budget::MemoryBudget::new(64 * 1024 * 1024, Duration::from_secs(30)),
        tasks.clone(),
    );
    let owner = Owner {
        app: AppId::parse("app").unwrap(),
        participant: UserId::parse("u").unwrap(),
    };
    let key = ObjectKey::new(&owner, &UploadId::generate());
    let mut writer = store.create(&key, None).await.unwrap();
    // A full part starts the multipart upload; its CreateMultipartUpload now waits on the proxy.
    let wrote = tokio::time::timeout(
        Duration::from_millis(300),
        writer.write(noise(5 * 1024 * 1024 + 1, 1).into()),
    )
    .await;
    assert!(wrote.is_err(), "the write should still be waiting for S3");
    drop(writer);
    // The clean-up runs once S3 has answered; then nothing of the upload is left.
    tasks.close();
    tokio::time::timeout(Duration::from_secs(30), tasks.wait())
        .await
        .unwrap();
    let left = s3_multipart_leftovers(&env.s3_dir, &bucket);
    assert!(left.is_empty(), "left behind: {left:?}");
}
