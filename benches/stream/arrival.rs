//! The `arrival` case: presigned uploads with a scanner, from the end of the client's PUT until
//! the settler has streamed the object to clamd and the file is listed; and 8 at once for memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;

use super::{Cpu, Ctx, MIB, Service, median, token};

/// The settler's interval in this case: a pass finds an arrival at most this long after its PUT.
/// The default (5s) would add up to 5 s to every figure.
const INTERVAL: &str = "250ms";

/// How many arrivals the memory part scans at once.
const AT_ONCE: usize = 8;

fn presigned(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    [
        ("PF_UPLOAD_MODE", "presigned"),
        ("PF_SETTLE_INTERVAL", INTERVAL),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (*k, (*v).to_owned()))
    .collect()
}

impl Ctx {
    /// clamd alone on `size` bytes: the whole time, and the part of it after the last byte was
    /// handed to the socket (INSTREAM scans once the stream has ended).
    pub(super) async fn clamd_split(&self, size: u64) -> (Duration, Duration) {
        let address = super::env("PF_TEST_CLAMD");
        let host = address.strip_prefix("tcp://").unwrap().to_owned();
        let ended = Arc::new(Mutex::new(None));
        let mark = Arc::clone(&ended);
        let stream = self
            .source
            .stream(size)
            .chain(futures::stream::poll_fn(move |_| {
                *mark.lock().unwrap() = Some(Instant::now());
                std::task::Poll::Ready(None)
            }));
        let started = Instant::now();
        let reply = clamav_client::tokio::scan_stream(
            stream,
            clamav_client::tokio::Tcp {
                host_address: host.as_str(),
            },
            Some(64 * 1024),
        )
        .await
        .unwrap();
        let done = Instant::now();
        assert!(
            reply.starts_with(b"stream: OK"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let last_byte = ended.lock().unwrap().expect("the stream ended");
        (done - started, done - last_byte)
    }

    /// Reads `key` from S3 as the settler does: ranges of a part, `READS` in flight.
    async fn ranged_read(&self, key: &str, size: u64) -> Duration {
        const PART: u64 = 8 * MIB;
        const READS: usize = 2;
        let started = Instant::now();
        let n: u64 = futures::stream::iter(0..size.div_ceil(PART))
            .map(|i| {
                let req = self
                    .s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .range(format!(
                        "bytes={}-{}",
                        i * PART,
                        ((i + 1) * PART).min(size) - 1
                    ));
                async move {
                    let out = req.send().await.unwrap();
                    out.body
                        .collect()
                        .await
                        .unwrap()
                        .into_segments()
                        .map(|b| b.len() as u64)
                        .sum::<u64>()
                }
            })
            .buffered(READS)
            .fold(0, |a, b| async move { a + b })
            .await;
        assert_eq!(n, size);
        started.elapsed()
    }

    /// Asks the service for an upload URL for `file`.
    async fn upload_url(&self, service: &Service, file: &str) -> String {
        let res = self
            .http
            .post(format!(
                "{}/v3/participants/self/files/{file}",
                service.base
            ))
            .bearer_auth(token())
            .json(&serde_json::json!({"mimeType": "application/octet-stream"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "POST an upload URL");
        let v: serde_json::Value = res.json().await.unwrap();
        v["uploadUrl"].as_str().unwrap().to_owned()
    }

    /// Sends `size` bytes straight to S3 with an upload URL.
    pub(super) async fn put_to(&self, url: &str, size: u64) {
        let res = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(self.source.stream(size)))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "presigned PUT: {}", res.status());
    }

    /// The participant's listing, by file ID and scan status.
    async fn listed(&self, service: &Service) -> Vec<(String, String)> {
        let res = self
            .http
            .get(format!(
                "{}/v3/participants/self/files?pageSize=100",
                service.base
            ))
            .bearer_auth(token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "list");
        let v: serde_json::Value = res.json().await.unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["fileId"].as_str().unwrap().to_owned(),
                    i["scanStatus"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits (asking every 20 ms) until `files` are all listed as clean; at most 10 minutes.
    async fn until_listed(&self, service: &Service, files: &[String]) -> Duration {
        let started = Instant::now();
        loop {
            let listed = self.listed(service).await;
            if files
                .iter()
                .all(|f| listed.iter().any(|(id, s)| id == f && s == "clean"))
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_mins(10),
                "arrivals not listed after 10 minutes: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the case and pushes its figures.
pub async fn arrival(
    ctx: &Ctx,
    bucket: &str,
    size: u64,
    runs: usize,
    push: &mut impl FnMut(String, String),
) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let gib = size as f64 / (1024.0 * MIB as f64);

    // The bound's parts: clamd alone on the same bytes, and the S3 server serving the object.
    let (mut alone, mut after_last) = (Vec::new(), Vec::new());
    let clamd_cpu0 = Cpu::now(None);
    for _ in 0..runs {
        let (total, after) = ctx.clamd_split(size).await;
        alone.push(total.as_secs_f64());
        after_last.push(after.as_secs_f64());
    }
    let clamd_cpu = cpu_between(&Cpu::now(None), &clamd_cpu0, "clamd") / runs as f64;
    ctx.presigned_put("direct/arrival", size).await;
    let s3_cpu0 = Cpu::now(None);
    let mut one_get = Vec::new();
    for _ in 0..runs {
        let (d, n) = ctx.presigned_get("direct/arrival").await;
        assert_eq!(n, size);
        one_get.push(d.as_secs_f64());
    }
    let s3_cpu = cpu_between(&Cpu::now(None), &s3_cpu0, "S3 server") / runs as f64;
    let mut ranged = Vec::new();
    for _ in 0..runs {
        ranged.push(ctx.ranged_read("direct/arrival", size).await.as_secs_f64());
    }
    ctx.empty().await;
    let (t_after, t_ranged) = (median(after_last), median(ranged));
    let floor = t_ranged + t_after;
    let t_clamd = median(alone);
    let bound = t_clamd.max((s3_cpu + clamd_cpu) / cores);
    push(
        format!(
            "presigned arrival {} MiB: bound max(clamd alone, (S3 serving + clamd) CPU-s / cores)",
            size / MIB
        ),
        format!(
            "{bound:.2} s (clamd alone {t_clamd:.2} s with {clamd_cpu:.2} CPU-s; S3 serving {s3_cpu:.2} CPU-s)"
        ),
    );

    let service = Service::start(bucket, true, &presigned(&[])).await;
    let cpu0 = Cpu::now(Some(&service));
    let mut times = Vec::new();
    for r in 0..runs {
        let file = format!("arrival-{r}");
        let url = ctx.upload_url(&service, &file).await;
        ctx.put_to(&url, size).await;
        times.push(ctx.until_listed(&service, &[file]).await.as_secs_f64());
    }
    let cpu = Cpu::now(Some(&service)).per_gib_since(&cpu0, gib * runs as f64);
    drop(service);
    ctx.empty().await;
    let t = median(times);
    push(
        format!(
            "presigned arrival {} MiB with clamd, settler every {INTERVAL}: end of PUT until listed",
            size / MIB
        ),
        format!("{t:.2} s"),
    );
    push(
        "  ratio time / bound (target <= 1.2)".into(),
        format!("{:.2}", t / bound),
    );
    push(
        "  clamd alone: of its time, after the last byte (INSTREAM scans once the stream ends)"
            .into(),
        format!("{t_after:.2} s"),
    );
    push(
        "  reading the object from S3: one GET / 8 MiB ranges, 2 in flight (as the settler)".into(),
        format!("{:.2} s / {t_ranged:.2} s", median(one_get)),
    );
    push(
        "  ratio time / (ranged read + clamd after the last byte), the two steps that cannot overlap".into(),
        format!("{:.2} ({floor:.2} s)", t / floor),
    );
    push("  CPU-s per GiB (PUT not included)".into(), cpu);

    // Memory: the URLs are issued, the service stops, the objects arrive, and the restarted
    // service finds all of them in its first pass and scans them at once.
    let mut service = Service::start(bucket, true, &presigned(&[])).await;
    let files: Vec<String> = (0..AT_ONCE).map(|i| format!("at-once-{i}")).collect();
    let mut urls = Vec::new();
    for f in &files {
        urls.push(ctx.upload_url(&service, f).await);
    }
    let data = std::mem::replace(&mut service.data, tempfile::tempdir().unwrap());
    drop(service);
    join_all(urls.iter().map(|u| ctx.put_to(u, size))).await;
    let concurrency = AT_ONCE.to_string();
    let service = Service::start_in(
        data,
        bucket,
        true,
        &presigned(&[("PF_SETTLE_CONCURRENCY", &concurrency)]),
    )
    .await;
    let took = ctx.until_listed(&service, &files).await;
    ctx.empty().await;
    push(
        format!(
            "{AT_ONCE} presigned arrivals of {} MiB scanned at once: until all listed",
            size / MIB
        ),
        format!("{:.1} s", took.as_secs_f64()),
    );
    push(
        "  service peak RSS (VmHWM), budget 256 MiB (target <= 320 MiB)".into(),
        format!("{:.0} MiB", service.peak_rss_mib()),
    );
}

/// One process's CPU-seconds between two readings.
fn cpu_between(now: &Cpu, before: &Cpu, name: &str) -> f64 {
    let pick = |c: &Cpu| {
        c.0.iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, s)| *s)
    };
    pick(now) - pick(before)
}
