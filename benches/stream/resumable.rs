//! The `resumable` case: tus uploads through the service in 32 MiB PATCH requests, with the length
//! deferred so that the completion is a request of its own (an empty PATCH that sets it), timed
//! alone: with the SHA-256 state carried in the row and with the stored bytes hashed again
//! (the state removed from the row first, as for an upload whose state is unknown); with a
//! clamd session kept across the PATCH requests and without one. Also the cost of saving and
//! restoring the hash state at one durable point.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Digest;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

use super::{Ctx, MIB, Service, median, token};

const PATCH: u64 = 32 * MIB;

/// One upload: the time of its data PATCH requests, and of the completing one.
async fn upload(
    ctx: &Ctx,
    service: &Service,
    size: u64,
    file: &str,
    forget_hash: bool,
) -> (Duration, Duration) {
    let base = &service.base;
    let res = ctx
        .http
        .post(format!("{base}/v3/participants/self/uploads"))
        .bearer_auth(token())
        .header("tus-resumable", "1.0.0")
        .header("upload-defer-length", "1")
        .header(
            "upload-metadata",
            format!("fileId {}", STANDARD.encode(file)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let started = Instant::now();
    let mut at = 0;
    while at < size {
        let n = PATCH.min(size - at);
        let res = ctx
            .http
            .patch(&location)
            .bearer_auth(token())
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", at)
            .header("content-length", n)
            .body(reqwest::Body::wrap_stream(ctx.source.stream(n)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
        at += n;
    }
    let sent = started.elapsed();
    if forget_hash {
        let db = rusqlite::Connection::open(service.data.path().join("index.sqlite")).unwrap();
        let changed = db
            .execute(
                "UPDATE uploads SET state = json_remove(state, '$.hash')",
                [],
            )
            .unwrap();
        assert!(changed >= 1);
    }
    let started = Instant::now();
    let res = ctx
        .http
        .patch(&location)
        .bearer_auth(token())
        .header("tus-resumable", "1.0.0")
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", size)
        .header("upload-length", size)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    (sent, started.elapsed())
}

/// Runs `runs` uploads on one service and returns the medians: MB/s of the data PATCH requests,
/// seconds of the completion.
async fn medians(
    ctx: &Ctx,
    service: &Service,
    size: u64,
    runs: usize,
    forget_hash: bool,
) -> (f64, f64) {
    let (mut rates, mut completions) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let (sent, completion) = upload(
            ctx,
            service,
            size,
            &format!("r-{forget_hash}-{r}.bin"),
            forget_hash,
        )
        .await;
        rates.push(super::mbps(size, sent));
        completions.push(completion.as_secs_f64());
    }
    (median(rates), median(completions))
}

pub async fn resumable(
    ctx: &Ctx,
    bucket: &str,
    size: u64,
    runs: usize,
    push: &mut impl FnMut(String, String),
) {
    // Saving and restoring the state, as every durable point does (every 8 MiB at most).
    let mut hasher = sha2::Sha256::new();
    hasher.update(ctx.source.part(0, MIB));
    let rounds = 100_000u32;
    let started = Instant::now();
    let mut len = 0;
    for _ in 0..rounds {
        let saved = STANDARD.encode(hasher.serialize());
        len = saved.len();
        let bytes = STANDARD.decode(&saved).unwrap();
        let state = SerializedState::<sha2::Sha256>::try_from(bytes.as_slice()).unwrap();
        hasher = sha2::Sha256::deserialize(&state).unwrap();
    }
    push(
        "resumable: SHA-256 state saved and restored at one durable point".into(),
        format!(
            "{:.2} µs, {len} bytes in the row",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
        ),
    );

    for (store, value) in [
        ("local store", "local".to_owned()),
        ("S3 (s3s-fs)", format!("s3://{bucket}/resumable")),
    ] {
        let service = Service::start(bucket, false, &[("PF_STORE", value)]).await;
        let (rate, carried) = medians(ctx, &service, size, runs, false).await;
        let (_, again) = medians(ctx, &service, size, runs, true).await;
        push(
            format!(
                "resumable {} MiB in 32 MiB PATCH requests, {store}: the PATCH requests",
                size / MIB
            ),
            format!("{rate:.0} MB/s"),
        );
        push(
            "  completion, SHA-256 state carried (nothing read back)".into(),
            format!("{carried:.3} s"),
        );
        push(
            "  completion, the stored bytes hashed again".into(),
            format!("{again:.3} s ({:.1}x)", again / carried),
        );
        drop(service);
        ctx.empty().await;
    }

    let live = Service::start(bucket, true, &[("PF_STORE", "local".to_owned())]).await;
    let (rate, kept) = medians(ctx, &live, size, runs, false).await;
    drop(live);
    let lost = Service::start(
        bucket,
        true,
        &[
            ("PF_STORE", "local".to_owned()),
            ("PF_RESUMABLE_SCAN_SESSIONS", "0".to_owned()),
        ],
    )
    .await;
    let (rate_lost, streamed) = medians(ctx, &lost, size, runs, false).await;
    drop(lost);
    push(
        format!(
            "resumable {} MiB with clamd, local store: the PATCH requests, session kept",
            size / MIB
        ),
        format!("{rate:.0} MB/s (without a session: {rate_lost:.0} MB/s)"),
    );
    push(
        "  completion, clamd session kept across the PATCH requests (only the verdict)".into(),
        format!("{kept:.2} s"),
    );
    push(
        "  completion, no session (PF_RESUMABLE_SCAN_SESSIONS=0): stored bytes to clamd".into(),
        format!("{streamed:.2} s ({:.2}x)", streamed / kept),
    );
}
