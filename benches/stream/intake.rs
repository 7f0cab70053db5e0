//! The `intake` case: one file on disk sent as a new user would, with tus-js-client in 8 MiB
//! chunks and as one streaming PUT, to the same service and store in the same run, on the local
//! store and on s3s-fs: the speed ratio and the service's CPU-seconds per GiB (issue #22's
//! "one intake should also cost like one").

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use super::{Ctx, MIB, Service, cpu_of, env, mbps, median, token};

/// tus-js-client's chunk size here: one PATCH request per 8 MiB.
pub(super) const CHUNK_MIB: u64 = 8;

/// One upload by bench/tus/intake.mjs (`tus`, `put` or `draft`) in `chunk_mib` pieces (for
/// `draft`, 0 is one append); its wall time as the client saw it.
fn send(
    (mode, chunk_mib): (&str, u64),
    service: &Service,
    file: &std::path::Path,
    name: &str,
) -> Duration {
    let out = Command::new("node")
        .args([
            "bench/tus/intake.mjs",
            mode,
            &service.base,
            &file.to_string_lossy(),
            &token(),
            &chunk_mib.to_string(),
            name,
        ])
        .output()
        .expect("node runs bench/tus/intake.mjs (scripts/bench installs its packages)");
    assert!(
        out.status.success(),
        "intake.mjs {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the client prints JSON");
    Duration::from_secs_f64(v["seconds"].as_f64().unwrap())
}

/// Per way of sending: MB/s, and CPU-seconds per GiB of the service and of the S3 server.
#[derive(Default)]
pub(super) struct Figures {
    pub(super) rates: Vec<f64>,
    pub(super) service: Vec<f64>,
    pub(super) s3: Vec<f64>,
}

impl Figures {
    pub(super) fn measure(
        &mut self,
        mode: (&str, u64),
        service: &Service,
        file: &std::path::Path,
        name: &str,
    ) {
        let size = std::fs::metadata(file).unwrap().len();
        let gib = size as f64 / (1024.0 * MIB as f64);
        let s3_pid = env("PF_TEST_S3_PID");
        let (cpu0, s30) = (service.cpu_seconds(), cpu_of(&s3_pid));
        let took = send(mode, service, file, name);
        self.rates.push(mbps(size, took));
        self.service.push((service.cpu_seconds() - cpu0) / gib);
        self.s3.push((cpu_of(&s3_pid) - s30) / gib);
    }
}

/// The file a user would pick: `size` random bytes, written once (then in the page cache).
pub(super) fn user_file(ctx: &Ctx, size: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intake.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    let mut left = size;
    let mut i = 0;
    while left > 0 {
        let n = MIB.min(left);
        f.write_all(&ctx.source.part(i, n)).unwrap();
        left -= n;
        i += 1;
    }
    f.flush().unwrap();
    (dir, file)
}

pub async fn intake(
    ctx: &Ctx,
    bucket: &str,
    size: u64,
    runs: usize,
    push: &mut impl FnMut(String, String),
) {
    let (_dir, file) = user_file(ctx, size);
    for (store, value) in [
        ("local store", "local".to_owned()),
        ("S3 (s3s-fs)", format!("s3://{bucket}/intake")),
    ] {
        let service = Service::start(bucket, false, &[("PF_STORE", value)]).await;
        let (mut put, mut tus) = (Figures::default(), Figures::default());
        tokio::task::block_in_place(|| {
            // Alternated, so that a slower minute of the shared machine falls on both.
            for r in 0..runs {
                put.measure(("put", 0), &service, &file, &format!("put-{r}.bin"));
                tus.measure(("tus", CHUNK_MIB), &service, &file, &format!("tus-{r}.bin"));
            }
        });
        drop(service);
        ctx.empty().await;
        let (put_rate, tus_rate) = (median(put.rates), median(tus.rates));
        let (put_cpu, tus_cpu) = (median(put.service), median(tus.service));
        push(
            format!(
                "intake {} MiB file, {store}: one streaming PUT (node, fs.createReadStream)",
                size / MIB
            ),
            format!(
                "{put_rate:.0} MB/s; service {put_cpu:.2} CPU-s per GiB (S3 server {:.2})",
                median(put.s3)
            ),
        );
        push(
            format!("  tus-js-client, {CHUNK_MIB} MiB chunks (one PATCH each)"),
            format!(
                "{tus_rate:.0} MB/s; service {tus_cpu:.2} CPU-s per GiB (S3 server {:.2})",
                median(tus.s3)
            ),
        );
        push(
            "  tus / PUT: speed (target >= 0.90), service CPU per GiB (target <= 1.15)".into(),
            format!("{:.2}, {:.2}", tus_rate / put_rate, tus_cpu / put_cpu),
        );
    }
}
