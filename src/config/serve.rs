//! `serve`'s settings: each `PF_*` variable, its flag, default and parser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::SecretArgs;
use super::parse::{
    parse_audit, parse_clamd, parse_duration, parse_index, parse_origin, parse_part_size,
    parse_public_url, parse_single_put_max, parse_size, parse_store, parse_url_ttl,
};
use crate::sniff::AllowedTypes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Bytes go straight to and from S3 through presigned URLs.
    Presigned,
    /// Bytes pass through the service's pipeline.
    Streaming,
}

/// What `rescan` does with the object of a file it found infected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Quarantine {
    /// Delete it.
    Delete,
    /// Move it under `quarantine/`, for analysis; it goes when the file is deleted.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Local,
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLocation {
    Sqlite,
    DynamoDb { table: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(host) => write!(f, "tcp://{host}"),
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PF_LISTEN",
        value_name = "PF_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Base of capability URLs, like `https://files.example.org`; required when not on loopback.
    #[arg(long, env = "PF_PUBLIC_URL", value_name = "PF_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub secrets: SecretArgs,
    /// Blob store: `local` (a folder in the data dir) or `s3://bucket[/prefix]`.
    #[arg(long, env = "PF_STORE", value_name = "PF_STORE", default_value = "local", value_parser = parse_store)]
    pub store: StoreLocation,
    /// Index: `sqlite` (a file in the data dir) or `dynamodb://table`.
    #[arg(long, env = "PF_INDEX", value_name = "PF_INDEX", default_value = "sqlite", value_parser = parse_index)]
    pub index: IndexLocation,
    /// The `ClamAV` daemons, a comma list of `tcp://host:port` or `unix:///path`; each upload
    /// goes to the least busy one that answers. Unset: no scanning.
    #[arg(long, env = "PF_CLAMD", value_name = "PF_CLAMD", value_parser = parse_clamd, value_delimiter = ',')]
    pub clamd: Vec<ClamdAddress>,
    /// Where upload bytes go (default: presigned with S3 and no scanner, else streaming).
    #[arg(
        long,
        env = "PF_UPLOAD_MODE",
        value_name = "PF_UPLOAD_MODE",
        value_enum
    )]
    pub upload_mode: Option<Mode>,
    /// Where download bytes come from (default as for uploads).
    #[arg(
        long,
        env = "PF_DOWNLOAD_MODE",
        value_name = "PF_DOWNLOAD_MODE",
        value_enum
    )]
    pub download_mode: Option<Mode>,
    /// Lifetime of upload and download URLs, like 15m or 1h; at most 7d.
    #[arg(long, env = "PF_URL_TTL", value_name = "PF_URL_TTL", default_value = "1h", value_parser = parse_url_ttl)]
    pub url_ttl: Duration,
    /// How long a resumable upload may take from its creation, like 24h; at most 7d.
    #[arg(long, env = "PF_RESUMABLE_TTL", value_name = "PF_RESUMABLE_TTL", default_value = "24h", value_parser = parse_url_ttl)]
    pub resumable_ttl: Duration,
    /// Origins allowed to call the service from a browser (CORS), a comma list like
    /// `https://app.example.org`; unset: no CORS headers at all.
    #[arg(long, env = "PF_CORS_ORIGINS", value_name = "PF_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// Resumable uploads one participant may have open at once.
    #[arg(
        long,
        env = "PF_MAX_RESUMABLE_PER_PARTICIPANT",
        value_name = "PF_MAX_RESUMABLE_PER_PARTICIPANT",
        default_value_t = 10
    )]
    pub max_resumable_per_participant: u64,
    /// Resumable uploads one app may have open at once, all its participants together.
    #[arg(
        long,
        env = "PF_MAX_RESUMABLE_PER_APP",
        value_name = "PF_MAX_RESUMABLE_PER_APP",
        default_value_t = 1000
    )]
    pub max_resumable_per_app: u64,
    /// Scan sessions an instance keeps open between the requests of resumable uploads, so
    /// that clamd gets each byte once; past it, an upload is scanned from the store at its
    /// completion. Each holds a connection to clamd.
    #[arg(
        long,
        env = "PF_RESUMABLE_SCAN_SESSIONS",
        value_name = "PF_RESUMABLE_SCAN_SESSIONS",
        default_value_t = 16
    )]
    pub resumable_scan_sessions: usize,
    /// Largest accepted file, like 256MiB (default 256MiB, or 100MiB with a scanner).
    #[arg(long, env = "PF_MAX_FILE_SIZE", value_name = "PF_MAX_FILE_SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
    /// Accepted media types, a comma list like `image/*,application/pdf`.
    #[arg(
        long,
        env = "PF_ALLOWED_TYPES",
        value_name = "PF_ALLOWED_TYPES",
        default_value = "*/*"
    )]
    pub allowed_types: AllowedTypes,
    /// With presigned uploads and a scanner: how often each instance looks for uploads that
    /// arrived, to scan them, like 5s (without a scanner the next request settles them).
    #[arg(long, env = "PF_SETTLE_INTERVAL", value_name = "PF_SETTLE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub settle_interval: Duration,
    /// Arrived presigned uploads one instance settles (streams through the pipeline) at once.
    #[arg(long, env = "PF_SETTLE_CONCURRENCY", value_name = "PF_SETTLE_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub settle_concurrency: u16,
    /// What `rescan` does with the object of a file it finds infected: `delete` it, or `keep`
    /// it under the `quarantine/` prefix (never served, removed with the file).
    #[arg(
        long,
        env = "PF_QUARANTINE",
        value_name = "PF_QUARANTINE",
        value_enum,
        default_value = "delete"
    )]
    pub quarantine: Quarantine,
    /// Per-participant encryption: `file:///path/to/master.key` (see `keys new`). Unset: none.
    #[arg(long, env = "PF_ENCRYPTION", value_name = "PF_ENCRYPTION", value_parser = crate::encryption::EncryptionSetting::parse)]
    pub encryption: Option<crate::encryption::EncryptionSetting>,
    /// During `keys rotate`: the master key being rotated away from, which still unwraps the
    /// keys not rewrapped yet (`file://...`). Never wraps a new key.
    #[arg(long, env = "PF_ENCRYPTION_PREVIOUS", value_name = "PF_ENCRYPTION_PREVIOUS", value_parser = crate::encryption::EncryptionSetting::parse, requires = "encryption")]
    pub encryption_previous: Option<crate::encryption::EncryptionSetting>,
    /// How long a scan may take before the upload fails with 503, like 60s.
    #[arg(long, env = "PF_SCAN_TIMEOUT", value_name = "PF_SCAN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub scan_timeout: Duration,
    /// HMAC secret for capability URLs; a random one is generated into the data dir when unset.
    #[arg(
        long,
        env = "PF_URL_SECRET",
        value_name = "PF_URL_SECRET",
        hide_env_values = true
    )]
    pub url_secret: Option<String>,
    /// Address S3 by path (`http://host/bucket/key`), as S3-compatible servers need.
    #[arg(long, env = "PF_S3_FORCE_PATH_STYLE", value_name = "PF_S3_FORCE_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_force_path_style: bool,
    /// Size of each part of a multipart upload to S3, at least 5MiB.
    #[arg(long, env = "PF_S3_PART_SIZE", value_name = "PF_S3_PART_SIZE", default_value = "8MiB", value_parser = parse_part_size)]
    pub s3_part_size: u64,
    /// How many parts of one upload may travel to S3 at once.
    #[arg(long, env = "PF_S3_PARTS_IN_FLIGHT", value_name = "PF_S3_PARTS_IN_FLIGHT", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub s3_parts_in_flight: u16,
    /// Bodies of known length (a Content-Length) from one part up to this size go to S3 as one
    /// streaming `PutObject` instead of a multipart upload; 0: never. One PUT is cheaper where
    /// the S3 server copies parts again to join them, but it is idle while the client pauses
    /// or the scanner decides, and S3 ends a request idle for about 20 seconds.
    #[arg(long, env = "PF_S3_SINGLE_PUT_MAX", value_name = "PF_S3_SINGLE_PUT_MAX", default_value = "0", value_parser = parse_single_put_max)]
    pub s3_single_put_max: u64,
    /// Encryption at rest the service asks for on every object it writes: `AES256` (SSE-S3)
    /// or `aws:kms` (SSE-KMS).
    #[arg(long, env = "PF_S3_SSE", value_name = "PF_S3_SSE", default_value = "AES256", value_parser = ["AES256", "aws:kms"])]
    pub s3_sse: String,
    /// The KMS key (ID or ARN) for `aws:kms`; unset: the account's default key for S3.
    #[arg(
        long,
        env = "PF_S3_SSE_KMS_KEY_ID",
        value_name = "PF_S3_SSE_KMS_KEY_ID"
    )]
    pub s3_sse_kms_key_id: Option<String>,
    /// The `iss` every token must carry; unset: not checked.
    #[arg(long, env = "PF_JWT_ISSUER", value_name = "PF_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The `aud` every token must carry; unset: not checked.
    #[arg(long, env = "PF_JWT_AUDIENCE", value_name = "PF_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Where audit lines go: `stdout`, `stderr` or a file path (appended).
    #[arg(long, env = "PF_AUDIT_LOG", value_name = "PF_AUDIT_LOG", default_value = "stdout", value_parser = parse_audit)]
    pub audit_log: AuditTarget,
    /// How long a client may send nothing in the middle of an upload before it is given up
    /// (408); time the service holds the upload back itself does not count.
    #[arg(long, env = "PF_CLIENT_TIMEOUT", value_name = "PF_CLIENT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub client_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take to finish before uploads
    /// still receiving are stopped.
    #[arg(long, env = "PF_SHUTDOWN_TIMEOUT", value_name = "PF_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Uploads through the service that may run at once; beyond it 503 with Retry-After.
    /// 0: no limit.
    #[arg(
        long,
        env = "PF_MAX_UPLOADS",
        value_name = "PF_MAX_UPLOADS",
        default_value_t = 64
    )]
    pub max_uploads: usize,
    /// Unexpired upload URLs one participant may hold at once; beyond it a POST gets 429.
    #[arg(
        long,
        env = "PF_MAX_PENDING_PER_PARTICIPANT",
        value_name = "PF_MAX_PENDING_PER_PARTICIPANT",
        default_value_t = 100
    )]
    pub max_pending_per_participant: u64,
    /// Files one participant may have; unset: no limit.
    #[arg(
        long,
        env = "PF_MAX_FILES_PER_PARTICIPANT",
        value_name = "PF_MAX_FILES_PER_PARTICIPANT"
    )]
    pub max_files_per_participant: Option<u64>,
    /// Bytes one participant may store, like 1GiB; unset: no limit.
    #[arg(long, env = "PF_MAX_BYTES_PER_PARTICIPANT", value_name = "PF_MAX_BYTES_PER_PARTICIPANT", value_parser = parse_size)]
    pub max_bytes_per_participant: Option<u64>,
    /// Bytes of one participant's files that may be downloaded per hour (per instance), like
    /// 1GiB; beyond it 429. Streaming downloads are charged the bytes each request serves (a
    /// replayed URL, a range: what goes out; a HEAD: nothing). Presigned downloads are served by
    /// S3: each issued URL is charged the file's size once, however often it is used before
    /// it expires (`PF_URL_TTL`). Unset: no limit.
    #[arg(long, env = "PF_DOWNLOAD_BYTES_PER_HOUR", value_name = "PF_DOWNLOAD_BYTES_PER_HOUR", value_parser = parse_size)]
    pub download_bytes_per_hour: Option<u64>,
    /// Memory that all uploads together may hold in buffers, like 256MiB; beyond it uploads wait.
    #[arg(long, env = "PF_MAX_BUFFER_MEMORY", value_name = "PF_MAX_BUFFER_MEMORY", default_value = "256MiB", value_parser = parse_size)]
    pub max_buffer_memory: u64,
    /// How long an upload may wait for buffer memory when the budget is spent; then 503 with
    /// Retry-After.
    #[arg(long, env = "PF_BUFFER_WAIT", value_name = "PF_BUFFER_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub buffer_wait: Duration,
    /// How long a client has to send a request's head (method, path, headers): from its
    /// connection, or on a kept-alive connection from the first byte of the next request.
    #[arg(long, env = "PF_HEADER_READ_TIMEOUT", value_name = "PF_HEADER_READ_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    /// Behind a load balancer, set it above the balancer's own idle timeout.
    #[arg(long, env = "PF_IDLE_TIMEOUT", value_name = "PF_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Connections held at once; beyond it a connection is answered 503 and closed. Keep it
    /// below the process's file descriptor limit (`ulimit -n`) less what backends use.
    #[arg(long, env = "PF_MAX_CONNECTIONS", value_name = "PF_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Diagnostic log format on stderr.
    #[arg(
        long,
        env = "PF_LOG_FORMAT",
        value_name = "PF_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}
