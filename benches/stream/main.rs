//! `scripts/bench`: the streaming proxy against direct S3, clamd alone, and itself under load.
//! Starts the release service as its own process against the S3 test server and clamd that
//! `scripts/backends.sh` started, runs each case several times, prints medians and ratios, and
//! writes them to BENCHMARKS.md. Loopback only.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "byte counts and timings become figures for people to read"
)]

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::StreamExt;
use participant_files::auth::{self, Role};
use participant_files::model::{AppId, UserId};

mod arrival;
mod capacity;
mod draft;
mod intake;
mod resumable;
mod usage;

const MIB: u64 = 1024 * 1024;
const JWT: &str = "bench-jwt-secret-0123456789abcdef0123456789";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/bench"))
}

/// 16 MiB of random bytes, served again and again as the body of every upload.
struct Source(Bytes);

impl Source {
    fn new() -> Self {
        let mut buf = vec![0u8; 16 * MIB as usize];
        getrandom::fill(&mut buf).unwrap();
        Self(Bytes::from(buf))
    }

    fn stream(
        &self,
        total: u64,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let data = self.0.clone();
        let chunk = MIB as usize;
        futures::stream::unfold(0u64, move |sent| {
            let data = data.clone();
            async move {
                if sent >= total {
                    return None;
                }
                let at = usize::try_from(sent % data.len() as u64).unwrap();
                let n = usize::try_from((total - sent).min(chunk as u64))
                    .unwrap()
                    .min(data.len() - at);
                Some((Ok(data.slice(at..at + n)), sent + n as u64))
            }
        })
    }

    fn part(&self, index: u64, size: u64) -> Bytes {
        let at = usize::try_from((index * size) % self.0.len() as u64).unwrap();
        self.0.slice(at..at + usize::try_from(size).unwrap())
    }
}

/// The service under test, in its own process; its /proc figures are the ones reported.
struct Service {
    child: Child,
    base: String,
    data: tempfile::TempDir,
}

impl Service {
    async fn start(bucket: &str, scanner: bool, extra: &[(&str, String)]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), bucket, scanner, extra).await
    }

    /// Starts the service on a data dir prepared beforehand (an index already filled).
    async fn start_in(
        data: tempfile::TempDir,
        bucket: &str,
        scanner: bool,
        extra: &[(&str, String)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env("PF_BENCH_BIN"));
        cmd.arg("serve")
            .env("PF_LISTEN", format!("127.0.0.1:{port}"))
            .env("PF_STORE", format!("s3://{bucket}/service"))
            .env("PF_INDEX", "sqlite")
            .env("PF_DATA_DIR", data.path())
            .env("PF_JWT_SECRET", JWT)
            .env("PF_URL_SECRET", "bench-url-secret-0123456789abcdef")
            .env("PF_S3_FORCE_PATH_STYLE", "true")
            .env("PF_UPLOAD_MODE", "streaming")
            .env("PF_DOWNLOAD_MODE", "streaming")
            .env("PF_MAX_FILE_SIZE", "1100MiB")
            .env("PF_SCAN_TIMEOUT", "600s")
            .env("PF_AUDIT_LOG", data.path().join("audit.log"))
            .env("PF_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if scanner {
            cmd.env("PF_CLAMD", env("PF_TEST_CLAMD"));
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the service binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{base}/health")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the service did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base, data }
    }

    /// Peak resident memory so far, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        peak_rss_mib(self.child.id())
    }

    /// CPU seconds (user + system) used so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_of(&self.child.id().to_string())
    }
}

/// Peak resident memory (`VmHWM`) of process `pid` so far, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// The peer: @tus/server with @tus/s3-store (bench/tus/server.mjs) in its own Node process,
/// writing to the same S3 server, driven by tus-js-client (bench/tus/client.mjs).
struct Peer {
    child: Child,
    endpoint: String,
}

impl Peer {
    fn start(bucket: &str) -> Self {
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("node")
            .arg("bench/tus/server.mjs")
            .env("PORT", port.to_string())
            .env("BUCKET", bucket)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs bench/tus/server.mjs (scripts/bench installs its packages)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the tus server did not start");
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}/files"),
        }
    }

    /// Runs `count` uploads of `size` bytes at once with tus-js-client; the wall time of all.
    fn upload(&self, size: u64, count: usize) -> Duration {
        let out = Command::new("node")
            .args([
                "bench/tus/client.mjs",
                &self.endpoint,
                &(size / MIB).to_string(),
                &count.to_string(),
            ])
            .output()
            .expect("node runs bench/tus/client.mjs");
        assert!(
            out.status.success(),
            "tus client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the client prints JSON");
        assert_eq!(v["bytes"].as_u64(), Some(size * count as u64));
        Duration::from_secs_f64(v["seconds"].as_f64().unwrap())
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_of(&self.child.id().to_string())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same uploads through the peer: 1 GiB `runs` times, then `concurrent` at once.
fn peer(
    bucket: &str,
    size: u64,
    runs: usize,
    concurrent: usize,
    concurrent_size: u64,
    direct_put: f64,
    push: &mut impl FnMut(String, String),
) {
    let gib = size as f64 / (1024.0 * MIB as f64);
    let server = Peer::start(bucket);
    let cpu0 = server.cpu_seconds();
    let mut through = Vec::new();
    for _ in 0..runs {
        through.push(mbps(size, server.upload(size, 1)));
    }
    let cpu = (server.cpu_seconds() - cpu0) / (gib * runs as f64);
    let m = median(through);
    push(
        format!(
            "peer: upload {} MiB through @tus/server + @tus/s3-store (tus-js-client, one PATCH)",
            size / MIB
        ),
        format!("{m:.0} MB/s (ratio to direct PUT {:.2})", m / direct_put),
    );
    push(
        "  peer server: CPU-s per GiB, peak RSS".into(),
        format!("{cpu:.2} CPU-s, {:.0} MiB", peak_rss_mib(server.child.id())),
    );
    drop(server);
    let server = Peer::start(bucket);
    let cpu0 = server.cpu_seconds();
    let total = concurrent_size * concurrent as u64;
    let took = server.upload(concurrent_size, concurrent);
    let cpu = (server.cpu_seconds() - cpu0) / (total as f64 / (1024.0 * MIB as f64));
    push(
        format!(
            "peer: {concurrent} x {} MiB uploads at once: aggregate",
            concurrent_size / MIB
        ),
        format!("{:.0} MB/s", mbps(total, took)),
    );
    push(
        "  peer server: CPU-s per GiB, peak RSS".into(),
        format!("{cpu:.2} CPU-s, {:.0} MiB", peak_rss_mib(server.child.id())),
    );
}

/// CPU seconds (user + system) that process `pid` (or `self`) has used so far.
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after_name = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The CPU time of every process on a case's path: the service, the S3 server, clamd, and this
/// bench (the client). They share the machine's cores, so together they bound the wall time.
struct Cpu(Vec<(&'static str, f64)>);

impl Cpu {
    fn now(service: Option<&Service>) -> Self {
        let clamd = std::fs::read_to_string(env("PF_TEST_CLAMD_PIDFILE")).unwrap_or_default();
        let mut v = vec![
            ("S3 server", cpu_of(&env("PF_TEST_S3_PID"))),
            ("clamd", cpu_of(clamd.trim())),
            ("client", cpu_of("self")),
        ];
        if let Some(s) = service {
            v.insert(0, ("service", s.cpu_seconds()));
        }
        Self(v)
    }

    /// Each process's CPU-seconds per GiB since `before`, their sum, and the shortest time per
    /// GiB that sum allows on this machine's cores.
    fn per_gib_since(&self, before: &Self, gib: f64) -> String {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
        let mut out = String::new();
        let mut total = 0.0;
        for ((name, now), (_, then)) in self.0.iter().zip(&before.0) {
            let per = (now - then) / gib;
            total += per;
            let _ = write!(out, "{name} {per:.2}, ");
        }
        let _ = write!(
            out,
            "together {total:.2}: at least {:.2} s per GiB on {cores:.0} cores",
            total / cores
        );
        out
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The two ways the service can write an upload of known length to S3, each measured.
const PATHS: [(&str, &[(&str, &str)]); 2] = [
    ("multipart (the default)", &[]),
    (
        "one streaming PUT (PF_S3_SINGLE_PUT_MAX=5GiB)",
        &[("PF_S3_SINGLE_PUT_MAX", "5GiB")],
    ),
];

fn owned(env: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn token() -> String {
    auth::mint(
        JWT.as_bytes(),
        &UserId::parse("bench").unwrap(),
        &AppId::parse("bench").unwrap(),
        &[Role::Participant],
        Duration::from_hours(24),
    )
    .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

struct Ctx {
    s3: aws_sdk_s3::Client,
    http: reqwest::Client,
    bucket: String,
    source: Source,
}

impl Ctx {
    /// Deletes every object of the bench's bucket: the runs write tens of GiB, more than the
    /// disk under the S3 server may hold at once.
    async fn empty(&self) {
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        for key in keys {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .unwrap();
        }
    }

    async fn presigned_put(&self, key: &str, size: u64) -> Duration {
        let url = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .presigned(PresigningConfig::expires_in(Duration::from_hours(1)).unwrap())
            .await
            .unwrap()
            .uri()
            .to_owned();
        let started = Instant::now();
        self.put_to(&url, size).await;
        started.elapsed()
    }

    /// The whole upload's time, and that of its `CompleteMultipartUpload` alone.
    async fn multipart(
        &self,
        key: &str,
        size: u64,
        part: u64,
        in_flight: usize,
    ) -> (Duration, Duration) {
        let started = Instant::now();
        let upload = self
            .s3
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap().to_owned();
        let parts = size.div_ceil(part);
        let done: Vec<CompletedPart> = futures::stream::iter(0..parts)
            .map(|i| {
                let len = part.min(size - i * part);
                let body = self.source.part(i, len);
                let req = self
                    .s3
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&id)
                    .part_number(i32::try_from(i + 1).unwrap())
                    .body(ByteStream::from(body));
                async move {
                    let out = req.send().await.unwrap();
                    CompletedPart::builder()
                        .part_number(i32::try_from(i + 1).unwrap())
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .build()
                }
            })
            .buffered(in_flight)
            .collect()
            .await;
        let completing = Instant::now();
        self.s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (started.elapsed(), completing.elapsed())
    }

    async fn service_put(&self, service: &Service, file: &str, size: u64) -> Duration {
        let started = Instant::now();
        let res = self
            .http
            .put(format!(
                "{}/v3/participants/self/files/{file}",
                service.base
            ))
            .bearer_auth(token())
            .header("content-type", "application/octet-stream")
            .header("content-length", size)
            .body(reqwest::Body::wrap_stream(self.source.stream(size)))
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert_eq!(
            status,
            201,
            "service PUT: {}",
            res.text().await.unwrap_or_default()
        );
        started.elapsed()
    }

    async fn clamd_alone(&self, size: u64) -> Duration {
        self.clamd_split(size).await.0
    }

    async fn get_all(&self, url: &str) -> (Duration, u64) {
        let started = Instant::now();
        let res = self.http.get(url).send().await.unwrap();
        assert!(res.status().is_success(), "GET: {}", res.status());
        let mut body = res.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            n += chunk.unwrap().len() as u64;
        }
        (started.elapsed(), n)
    }

    async fn presigned_get(&self, key: &str) -> (Duration, u64) {
        let url = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(PresigningConfig::expires_in(Duration::from_hours(1)).unwrap())
            .await
            .unwrap()
            .uri()
            .to_owned();
        self.get_all(&url).await
    }

    async fn service_get(&self, service: &Service, file: &str) -> (Duration, u64) {
        let started = Instant::now();
        let res = self
            .http
            .get(format!(
                "{}/v3/participants/self/files/{file}",
                service.base
            ))
            .bearer_auth(token())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let (_, n) = self.get_all(&location).await;
        (started.elapsed(), n)
    }
}

/// One oha run: requests per second and the p50 / p99 latencies in milliseconds.
fn oha(
    url: &str,
    token: Option<&str>,
    method: &str,
    body: Option<&str>,
    rate: Option<u32>,
) -> (f64, f64, f64) {
    let mut cmd = Command::new("oha");
    cmd.args([
        "-z",
        "5s",
        "-c",
        "8",
        "--no-tui",
        "--output-format",
        "json",
        "--redirect",
        "0",
        "-m",
        method,
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-d", b, "-T", "application/json"]);
    }
    if let Some(q) = rate {
        cmd.args(["-q", &q.to_string()]);
    }
    // `[0-9]{2}` in a URL: one of 100 paths, drawn for each request.
    if url.contains("[0-9]") {
        cmd.arg("--rand-regex-url");
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("oha runs (scripts/bench installs it)");
    assert!(
        out.status.success(),
        "oha: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha prints JSON");
    let rps = v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0);
    let p = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = &v["statusCodeDistribution"];
    let good = codes
        .as_object()
        .is_some_and(|m| m.keys().all(|c| c.starts_with('2') || c.starts_with('3')));
    assert!(good, "{url}: unexpected statuses {codes}");
    (rps, p("p50"), p("p99"))
}

/// Metadata requests on the embedded default, with the service's own /health as the ceiling.
async fn metadata(ctx: &Ctx, bucket: &str, push: &mut impl FnMut(String, String)) {
    let service = Service::start(
        bucket,
        false,
        &[
            ("PF_STORE", "local".to_owned()),
            ("PF_MAX_PENDING_PER_PARTICIPANT", "1000".to_owned()),
        ],
    )
    .await;
    for i in 0..60 {
        let res = ctx
            .http
            .put(format!(
                "{}/v3/participants/self/files/f{i:02}",
                service.base
            ))
            .bearer_auth(token())
            .body(vec![b'x'; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let t = token();
    let files = format!("{}/v3/participants/self/files", service.base);
    let (health, h50, h99) = tokio::task::block_in_place(|| {
        oha(&format!("{}/health", service.base), None, "GET", None, None)
    });
    push(
        "metadata: GET /health (the ceiling)".into(),
        format!("{health:.0} req/s, p50 {h50:.2} ms, p99 {h99:.2} ms"),
    );
    // The targets: list and GET keep their share of /health (about 17% and 30% when the POST
    // work began); POSTs of many files reach 10,000 a second.
    let cases: [(&str, String, &str, Option<&str>, &str); 4] = [
        (
            "list (50 items)",
            files.clone(),
            "GET",
            None,
            "keep about 17% of /health",
        ),
        (
            "GET a file (302 to a download URL)",
            format!("{files}/f07"),
            "GET",
            None,
            "keep about 30% of /health",
        ),
        (
            "POST an upload URL, one file (8 clients contend for its row)",
            format!("{files}/new.txt"),
            "POST",
            Some(r#"{"mimeType":"text/plain"}"#),
            "no target",
        ),
        (
            "POST upload URLs of 100 files",
            format!("{files}/n[0-9]{{2}}"),
            "POST",
            Some(r#"{"mimeType":"text/plain"}"#),
            "target >= 10,000 req/s",
        ),
    ];
    for (name, url, method, body, target) in cases {
        let (rps, p50, p99) =
            tokio::task::block_in_place(|| oha(&url, Some(&t), method, body, None));
        push(
            format!("metadata: {name}"),
            format!(
                "{rps:.0} req/s ({:.0}% of /health; {target}), p50 {p50:.2} ms, p99 {p99:.2} ms",
                rps / health * 100.0
            ),
        );
        let (_, _, p99_rated) =
            tokio::task::block_in_place(|| oha(&url, Some(&t), method, body, Some(1000)));
        push(
            format!("  {name} at 1,000 req/s: p99 (target < 5 ms)"),
            format!("{p99_rated:.2} ms"),
        );
    }
}

/// The app-wide listing on the embedded default: 100,000 files of 1,000 participants, one
/// 100-item page by time range and by file ID, at 200 requests a second.
async fn listing(bucket: &str, push: &mut impl FnMut(String, String)) {
    const PARTICIPANTS: u32 = 1_000;
    const PER_PARTICIPANT: u32 = 100;
    // 2026-11-01T00:00:00Z; one file every 86.4 s spreads 100,000 files over 100 days.
    const T0: i64 = 1_793_491_200_000;
    const STEP: i64 = 86_400;
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("index.sqlite");
    // The service's own open creates the schema and the listing indexes; the rows then go in
    // as one transaction (one put per row would be 100,000 fsyncs).
    drop(
        participant_files::index::SqliteFileIndex::open(&path)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO files (app, participant, file_id, version, object_key, \
                     mime_type, size, sha256, scan_status, created_on) \
                     VALUES ('bench', ?1, ?2, 1, ?3, 'image/jpeg', 1234, \
                     '47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=', 'clean', ?4)",
                )
                .unwrap();
            for i in 0..PARTICIPANTS * PER_PARTICIPANT {
                let owner = participant_files::model::Owner {
                    app: AppId::parse("bench").unwrap(),
                    participant: UserId::parse(&format!("p{:04}", i % PARTICIPANTS)).unwrap(),
                };
                let key = participant_files::keys::ObjectKey::new(
                    &owner,
                    &participant_files::keys::UploadId::generate(),
                );
                insert
                    .execute(rusqlite::params![
                        owner.participant.as_str(),
                        format!("f{:03}.jpg", i / PARTICIPANTS),
                        key.as_str(),
                        // A permutation of the slots (7,919 is prime to 100,000): each file ID's
                        // 1,000 files are spread over the 100 days.
                        T0 + i64::from((i * 7_919) % (PARTICIPANTS * PER_PARTICIPANT)) * STEP,
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    });
    let fill = started.elapsed();
    let service = Service::start_in(data, bucket, false, &[("PF_STORE", "local".to_owned())]).await;
    let researcher = auth::mint(
        JWT.as_bytes(),
        &UserId::parse("rita").unwrap(),
        &AppId::parse("bench").unwrap(),
        &[Role::Researcher],
        Duration::from_hours(24),
    )
    .unwrap();
    let list = format!("{}/v3/participants/files", service.base);
    // A week in the middle (about 7,000 files), and one file ID (1,000 files, one a participant).
    let cases = [
        (
            "by time range (one week of ~7,000 files)",
            format!(
                "{list}?startTime=2026-12-20T00:00:00Z&endTime=2026-12-27T00:00:00Z&pageSize=100"
            ),
        ),
        (
            "by file ID (1,000 files)",
            format!("{list}?fileId=f042.jpg&pageSize=100"),
        ),
        (
            "by file ID and time range (~70 files)",
            format!(
                "{list}?fileId=f042.jpg&startTime=2026-12-20T00:00:00Z&endTime=2026-12-27T00:00:00Z&pageSize=100"
            ),
        ),
    ];
    let http = reqwest::Client::new();
    for (name, url) in &cases {
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(&researcher)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = page["items"].as_array().map_or(0, Vec::len);
        assert!(n > 0, "{name}: {page}");
        let (rps, p50, p99) =
            tokio::task::block_in_place(|| oha(url, Some(&researcher), "GET", None, Some(200)));
        push(
            format!(
                "listing: 100,000 files of 1,000 participants, {name}, {n} items a page, at 200 req/s: p99 (target < 10 ms)"
            ),
            format!("{p99:.2} ms (p50 {p50:.2} ms, {rps:.0} req/s)"),
        );
        // A deeper page: the offsetKey of the first.
        if let Some(key) = page["nextPageOffsetKey"].as_str() {
            let deeper = format!("{url}&offsetKey={key}");
            let (_, _, p99) = tokio::task::block_in_place(|| {
                oha(&deeper, Some(&researcher), "GET", None, Some(200))
            });
            push(
                format!("  {name}, second page (with offsetKey), at 200 req/s: p99"),
                format!("{p99:.2} ms"),
            );
        }
    }
    push(
        "  listing: filling the index (one SQLite transaction)".into(),
        format!("{:.1} s", fill.as_secs_f64()),
    );
}

struct Row {
    case: String,
    figure: String,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    let size = arg("--size-mib", "1024").parse::<u64>().unwrap() * MIB;
    let runs: usize = arg("--runs", "3").parse().unwrap();
    let concurrent: usize = arg("--concurrent", "16").parse().unwrap();
    let concurrent_size = arg("--concurrent-size-mib", "256").parse::<u64>().unwrap() * MIB;
    let intake_size = arg("--intake-size-mib", "512").parse::<u64>().unwrap() * MIB;
    let draft_size = arg("--draft-size-mib", "1024").parse::<u64>().unwrap() * MIB;
    let out = arg("--out", "BENCHMARKS.md");
    let cases = arg(
        "--cases",
        "upload,scan,download,concurrent,peer,metadata,listing,arrival,resumable,usage,capacity,intake,draft",
    );

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build(),
    );
    let bucket = format!("bench-{}", uuid::Uuid::new_v4().simple());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let ctx = Arc::new(Ctx {
        s3,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        bucket: bucket.clone(),
        source: Source::new(),
    });
    let gib = size as f64 / (1024.0 * MIB as f64);
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |case: String, figure: String| {
        println!("{case:<70} {figure}");
        rows.push(Row { case, figure });
    };

    let mut direct_put = Vec::new();
    let all_runs = gib * runs as f64;
    if cases.contains("upload") || cases.contains("scan") {
        let cpu = Cpu::now(None);
        for r in 0..runs {
            direct_put.push(mbps(
                size,
                ctx.presigned_put(&format!("direct/put-{r}"), size).await,
            ));
        }
        ctx.empty().await;
        push(
            format!("upload {} MiB: direct presigned PUT to S3", size / MIB),
            format!("{:.0} MB/s", median(direct_put.clone())),
        );
        push(
            "  CPU-s per GiB".into(),
            Cpu::now(None).per_gib_since(&cpu, all_runs),
        );
    }
    if cases.contains("upload") {
        let mut multipart = Vec::new();
        let mut completes = Vec::new();
        let cpu = Cpu::now(None);
        for r in 0..runs {
            let (total, complete) = ctx
                .multipart(&format!("direct/mp-{r}"), size, 8 * MIB, 4)
                .await;
            multipart.push(mbps(size, total));
            completes.push(complete.as_secs_f64());
        }
        let cpu = Cpu::now(None).per_gib_since(&cpu, all_runs);
        ctx.empty().await;
        push(
            format!(
                "upload {} MiB: direct multipart (8 MiB parts, 4 in flight)",
                size / MIB
            ),
            format!("{:.0} MB/s", median(multipart)),
        );
        push(
            "  of which CompleteMultipartUpload (s3s-fs joins the parts by copying)".into(),
            format!("{:.2} s", median(completes)),
        );
        push("  CPU-s per GiB".into(), cpu);
        for (path, env) in PATHS {
            let service = Service::start(&bucket, false, &owned(env)).await;
            let cpu0 = Cpu::now(Some(&service));
            let mut through = Vec::new();
            for r in 0..runs {
                through.push(mbps(
                    size,
                    ctx.service_put(&service, &format!("up-{r}"), size).await,
                ));
            }
            let cpu = Cpu::now(Some(&service)).per_gib_since(&cpu0, all_runs);
            ctx.empty().await;
            let m = median(through);
            push(
                format!(
                    "upload {} MiB through the service, no scanner, {path}",
                    size / MIB
                ),
                format!("{m:.0} MB/s"),
            );
            push(
                "  ratio service / direct presigned PUT (target >= 0.90)".into(),
                format!("{:.2}", m / median(direct_put.clone())),
            );
            push(
                "  CPU-s per GiB (target for the service <= 1.0)".into(),
                cpu,
            );
            push(
                "  service peak RSS".into(),
                format!("{:.0} MiB", service.peak_rss_mib()),
            );
        }
    }
    if cases.contains("scan") {
        let mut alone = Vec::new();
        let cpu = Cpu::now(None);
        for _ in 0..runs {
            alone.push(size as f64 / 1e6 / ctx.clamd_alone(size).await.as_secs_f64());
        }
        let cpu = Cpu::now(None).per_gib_since(&cpu, all_runs);
        let t_put = size as f64 / 1e6 / median(direct_put.clone());
        let t_clamd = size as f64 / 1e6 / median(alone.clone());
        push(
            format!("upload {} MiB: clamd INSTREAM alone", size / MIB),
            format!("{:.0} MB/s ({t_clamd:.2} s)", median(alone)),
        );
        push("  CPU-s per GiB".into(), cpu);
        for (path, env) in PATHS {
            let service = Service::start(&bucket, true, &owned(env)).await;
            let cpu0 = Cpu::now(Some(&service));
            let mut times = Vec::new();
            for r in 0..runs {
                times.push(
                    ctx.service_put(&service, &format!("scan-{r}"), size)
                        .await
                        .as_secs_f64(),
                );
            }
            let cpu = Cpu::now(Some(&service)).per_gib_since(&cpu0, all_runs);
            ctx.empty().await;
            let t_scan = median(times);
            push(
                format!(
                    "upload {} MiB through the service with clamd, {path}",
                    size / MIB
                ),
                format!("{:.0} MB/s ({t_scan:.2} s)", size as f64 / 1e6 / t_scan),
            );
            push(
                "  ratio time / max(direct PUT, clamd alone) (target <= 1.15)".into(),
                format!("{:.2}", t_scan / t_put.max(t_clamd)),
            );
            push("  CPU-s per GiB".into(), cpu);
        }
    }
    if cases.contains("download") {
        // One object written through the service serves both: the direct GET reads the same key.
        let service = Service::start(&bucket, false, &[]).await;
        ctx.service_put(&service, "down", size).await;
        let key = {
            let list = ctx
                .s3
                .list_objects_v2()
                .bucket(&bucket)
                .prefix("service/bench/bench/")
                .send()
                .await
                .unwrap();
            list.contents()
                .iter()
                .filter_map(|o| o.key())
                .next_back()
                .unwrap()
                .to_owned()
        };
        let cpu0 = service.cpu_seconds();
        let (mut direct, mut through) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (d, n) = ctx.presigned_get(&key).await;
            assert_eq!(n, size);
            direct.push(mbps(n, d));
            let (d, n) = ctx.service_get(&service, "down").await;
            assert_eq!(n, size);
            through.push(mbps(n, d));
        }
        let cpu = (service.cpu_seconds() - cpu0) / all_runs;
        ctx.empty().await;
        let (d, t) = (median(direct), median(through));
        push(
            format!("download {} MiB: direct presigned GET from S3", size / MIB),
            format!("{d:.0} MB/s"),
        );
        push(
            format!(
                "download {} MiB: streaming GET through the service",
                size / MIB
            ),
            format!("{t:.0} MB/s"),
        );
        push(
            "  ratio service / direct (target >= 0.90)".into(),
            format!("{:.2}", t / d),
        );
        push(
            "  service CPU per GiB downloaded (target <= 0.5)".into(),
            format!("{cpu:.2} CPU-s"),
        );
    }
    if cases.contains("concurrent") {
        for ((path, env), scanner) in PATHS.into_iter().flat_map(|p| [(p, false), (p, true)]) {
            let service = Arc::new(Service::start(&bucket, scanner, &owned(env)).await);
            let cpu0 = service.cpu_seconds();
            let started = Instant::now();
            let tasks: Vec<_> = (0..concurrent)
                .map(|i| {
                    let (ctx, service) = (Arc::clone(&ctx), Arc::clone(&service));
                    tokio::spawn(async move {
                        ctx.service_put(&service, &format!("c-{i}"), concurrent_size)
                            .await
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let took = started.elapsed();
            ctx.empty().await;
            let total = concurrent_size * concurrent as u64;
            let what = if scanner { "with clamd" } else { "no scanner" };
            push(
                format!(
                    "{concurrent} x {} MiB uploads at once, {what}, {path}: aggregate",
                    concurrent_size / MIB
                ),
                format!("{:.0} MB/s", mbps(total, took)),
            );
            push(
                format!("  service peak RSS (VmHWM), budget 256 MiB, {what} (target <= 320 MiB)"),
                format!("{:.0} MiB", service.peak_rss_mib()),
            );
            push(
                "  service CPU-s per GiB".into(),
                format!(
                    "{:.2}",
                    (service.cpu_seconds() - cpu0) / (total as f64 / (1024.0 * MIB as f64))
                ),
            );
        }
    }

    if cases.contains("peer") {
        if direct_put.is_empty() {
            for r in 0..runs {
                direct_put.push(mbps(
                    size,
                    ctx.presigned_put(&format!("direct/put-{r}"), size).await,
                ));
            }
        }
        ctx.empty().await;
        let direct = median(direct_put.clone());
        tokio::task::block_in_place(|| {
            peer(
                &bucket,
                size,
                runs,
                concurrent,
                concurrent_size,
                direct,
                &mut push,
            );
        });
    }

    if cases.contains("metadata") {
        metadata(&ctx, &bucket, &mut push).await;
    }

    if cases.contains("listing") {
        listing(&bucket, &mut push).await;
    }

    if cases.contains("arrival") {
        arrival::arrival(&ctx, &bucket, size, runs, &mut push).await;
    }

    if cases.contains("resumable") {
        resumable::resumable(&ctx, &bucket, size, runs, &mut push).await;
    }

    if cases.contains("usage") {
        usage::usage(&bucket, &mut push).await;
    }

    if cases.contains("capacity") {
        capacity::capacity(&mut push).await;
    }

    if cases.contains("intake") {
        intake::intake(&ctx, &bucket, intake_size, runs, &mut push).await;
    }

    if cases.contains("draft") {
        draft::draft(&ctx, &bucket, draft_size, runs, &mut push).await;
    }

    let machine = format!(
        "{} cores, {:.1} GiB memory",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok()))
            .unwrap_or(0.0)
            / 1024.0
            / 1024.0
    );
    let mut md = String::from("# Benchmarks\n\nProduced by `scripts/bench");
    let passed: Vec<&String> = args.iter().skip(1).filter(|a| *a != "--bench").collect();
    for a in passed {
        md.push(' ');
        md.push_str(a);
    }
    let _ = write!(
        md,
        "` on {machine}; S3 is s3s-fs 0.14.1 and clamd is Debian's, all on loopback, sharing the machine with the clients. Each figure is the median of {runs} runs.\n\n| case | figure |\n|---|---|\n"
    );
    for r in &rows {
        let _ = writeln!(md, "| {} | {} |", r.case.trim(), r.figure);
    }
    std::fs::write(&out, md).unwrap();
    println!("\nwrote {out}");
}
