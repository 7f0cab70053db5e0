//! The `draft` case (issue #24): one file through the IETF draft (interop version 8, a plain
//! Node client, no library) in one append and in 8 MiB appends, beside tus-js-client in 8 MiB
//! chunks and one streaming PUT of the same file to the same service, on the local store and on
//! s3s-fs, and a direct multipart upload to s3s-fs: all in one run.

use super::intake::{CHUNK_MIB, Figures, user_file};
use super::{Ctx, MIB, Service, cpu_of, env, mbps, median, token};

/// The ways of sending, each with its bench/tus/intake.mjs mode and chunk size.
const WAYS: [(&str, (&str, u64)); 4] = [
    ("one streaming PUT", ("put", 0)),
    (
        "tus-js-client, 8 MiB chunks (one PATCH each)",
        ("tus", CHUNK_MIB),
    ),
    ("draft, one append of the whole file", ("draft", 0)),
    ("draft, 8 MiB appends", ("draft", CHUNK_MIB)),
];

pub async fn draft(
    ctx: &Ctx,
    bucket: &str,
    size: u64,
    runs: usize,
    push: &mut impl FnMut(String, String),
) {
    let (_dir, file) = user_file(ctx, size);
    let gib = size as f64 / (1024.0 * MIB as f64);
    for (store, value) in [
        ("local store", "local".to_owned()),
        ("S3 (s3s-fs)", format!("s3://{bucket}/draft")),
    ] {
        let service = Service::start(bucket, false, &[("PF_STORE", value)]).await;
        let mut figures: Vec<Figures> = WAYS.iter().map(|_| Figures::default()).collect();
        let (mut direct, mut direct_s3) = (Vec::new(), Vec::new());
        // Alternated way by way, so that a slower minute of the shared machine falls on all.
        for r in 0..runs {
            for ((_, mode), f) in WAYS.iter().zip(&mut figures) {
                let name = format!("{}-{}-{r}.bin", mode.0, mode.1);
                tokio::task::block_in_place(|| f.measure(*mode, &service, &file, &name));
                forget(ctx, &service, &name).await;
            }
            if store.starts_with("S3") {
                let s3_pid = env("PF_TEST_S3_PID");
                let before = cpu_of(&s3_pid);
                let (took, _) = ctx.multipart("direct-draft.bin", size, 8 * MIB, 4).await;
                direct.push(mbps(size, took));
                direct_s3.push((cpu_of(&s3_pid) - before) / gib);
                ctx.empty().await;
            }
        }
        drop(service);
        ctx.empty().await;
        let mut rates = Vec::new();
        for ((way, _), f) in WAYS.iter().zip(figures) {
            let (rate, cpu) = (median(f.rates), median(f.service));
            rates.push((rate, cpu));
            push(
                format!("draft case, {} MiB file, {store}: {way}", size / MIB),
                format!(
                    "{rate:.0} MB/s; service {cpu:.2} CPU-s per GiB (S3 server {:.2})",
                    median(f.s3)
                ),
            );
        }
        let (tus, one, eight) = (rates[1], rates[2], rates[3]);
        push(
            "  draft / tus, speed and service CPU per GiB (target: within 5%): one append; 8 MiB appends".into(),
            format!(
                "{:.2}, {:.2}; {:.2}, {:.2}",
                one.0 / tus.0,
                one.1 / tus.1,
                eight.0 / tus.0,
                eight.1 / tus.1
            ),
        );
        if !direct.is_empty() {
            push(
                format!(
                    "  direct multipart upload to s3s-fs, no service (8 MiB parts, 4 in flight, from memory), {} MiB",
                    size / MIB
                ),
                format!(
                    "{:.0} MB/s; S3 server {:.2} CPU-s per GiB",
                    median(direct),
                    median(direct_s3)
                ),
            );
        }
    }
}

/// Deletes an uploaded file, so that the runs do not fill the disk.
async fn forget(ctx: &Ctx, service: &Service, name: &str) {
    let res = ctx
        .http
        .delete(format!(
            "{}/v3/participants/self/files/{name}",
            service.base
        ))
        .bearer_auth(token())
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "DELETE {name}: {}", res.status());
}
