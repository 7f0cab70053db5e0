//! Command line and configuration: `PF_*` environment variables and the matching flags, checked
//! before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::Role;
use crate::model::{AppId, UserId};
use crate::sniff::AllowedTypes;

/// The longest lifetime S3 allows for a presigned URL; capability URLs are held to it too.
pub const MAX_URL_TTL: Duration = Duration::from_hours(7 * 24);

#[derive(Debug, Parser)]
#[command(
    name = "participant-files",
    version,
    about = "Stores files that belong to one study participant, behind Bridge's Participant Files API.",
    args_conflicts_with_subcommands = true
)]
// Each flag's value is named after its environment variable, so that an error message names the
// variable a deployment most likely set.
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(ServeArgs),
    /// Print a JWT signed with the configured secret, for trying the API with curl.
    Token(TokenArgs),
    /// Create the bucket (private, encrypted) and the table when missing; harmless when they exist.
    Setup(ServeArgs),
    /// Remove objects that no row names, expired pending uploads and abandoned uploads; print
    /// what was removed.
    Reconcile(ReconcileArgs),
    /// Scan stored files again with the scanner's current signatures; a file now found infected
    /// is marked so, never served again, and its object deleted or quarantined.
    Rescan(RescanArgs),
    /// Upload a file as a resumable (tus) upload, in chunks, retrying; an interrupted run goes
    /// on where it stopped. Prints the stored file (ParticipantFile).
    Upload(UploadArgs),
    /// Download a file, resuming a partial one, and check its SHA-256.
    Download(DownloadArgs),
    /// Master keys of per-participant encryption (`PF_ENCRYPTION`).
    #[command(subcommand)]
    Keys(crate::encryption::KeysCommand),
}

/// Where the service is and who calls it, for the command-line client.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The service's base URL, like `https://files.example.org`.
    #[arg(long)]
    pub url: String,
    /// The participant: `self`, or a participant's user ID (a worker's token; a researcher's
    /// for downloads).
    #[arg(long, default_value = "self")]
    pub user: String,
    /// The bearer token (JWT).
    #[arg(long, env = "PF_TOKEN", hide_env_values = true)]
    pub token: String,
    /// How long to keep retrying once a transfer has begun, counted from the last byte that
    /// moved, like 10m; 0s: never retry.
    #[arg(long, default_value = "10m", value_parser = parse_age)]
    pub retry_for: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// The file to upload.
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The file's ID at the service; default: the file's name.
    #[arg(long)]
    pub file_id: Option<String>,
    /// The declared media type; default: the service detects it.
    #[arg(long)]
    pub mime_type: Option<String>,
    /// Bytes per request, like 8MiB, from 256KiB to 1GiB; smaller passes proxies that cap a
    /// request.
    #[arg(long, default_value = "8MiB", value_parser = parse_chunk_size)]
    pub chunk_size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// The file's ID at the service.
    pub file_id: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Where to write it; default: the file's ID in the current folder.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

fn parse_chunk_size(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if (crate::client::MIN_CHUNK_SIZE..=(1 << 30)).contains(&size) {
        Ok(size)
    } else {
        Err(
            "expected a chunk size from 256KiB to 1GiB, like 8MiB: every chunk is a request \
             of its own, and below 256KiB the requests, not the bytes, take the time (1KiB \
             chunks made a 20 MiB upload take 117 s instead of 2 s); 256KiB still passes \
             nginx's default 1MiB cap on a request body"
                .to_owned(),
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct RescanArgs {
    /// Files scanned longer ago than this are scanned again, and so is every file scanned with
    /// older signatures than the scanner has now; 0s: every file.
    #[arg(long, default_value = "7d", value_parser = parse_age)]
    pub older_than: Duration,
    /// Files scanned at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Start over, forgetting a stopped run that would otherwise be continued.
    #[arg(long)]
    pub restart: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    /// Uploads through the service that began longer ago than this are taken to be abandoned:
    /// their claim is revoked (they can no longer commit) and their object removed. Younger
    /// uploads, and every object a row names, are left alone.
    #[arg(long, default_value = "1h", value_parser = parse_age)]
    pub min_age: Duration,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// Folder for the embedded index, local blobs and generated secrets.
    #[arg(
        long,
        env = "PF_DATA_DIR",
        value_name = "PF_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Shared HS256 secret for bearer tokens; a random one is generated into the data dir when unset.
    #[arg(
        long,
        env = "PF_JWT_SECRET",
        value_name = "PF_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public keys (RSA for RS256, P-256 for ES256), a comma list of files; a token's `kid`
    /// names the file without its extension. Replaces the shared secret.
    #[arg(
        long,
        env = "PF_JWT_PUBLIC_KEY_FILE",
        value_name = "PF_JWT_PUBLIC_KEY_FILE",
        value_delimiter = ','
    )]
    pub jwt_public_key_file: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The participant (the token's `sub`).
    #[arg(long, value_parser = parse_user)]
    pub user: UserId,
    /// The app (study) ID.
    #[arg(long, value_parser = parse_app)]
    pub app: AppId,
    /// A role to grant (participant, researcher, worker); repeat for several. Default: participant.
    #[arg(long = "role", value_parser = parse_role)]
    pub roles: Vec<Role>,
    /// How long the token is valid, like 30m, 1h or 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub secrets: SecretArgs,
}

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

/// The checked configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub jwt_secret: Option<String>,
    pub jwt_public_keys: Vec<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub url_secret: Option<String>,
    pub store: StoreLocation,
    pub index: IndexLocation,
    pub clamd: Vec<ClamdAddress>,
    pub upload_mode: Mode,
    pub download_mode: Mode,
    pub url_ttl: Duration,
    pub resumable: crate::files::resumable::ResumableSettings,
    pub max_file_size: u64,
    pub allowed_types: AllowedTypes,
    pub scan_timeout: Duration,
    pub settle_interval: Duration,
    pub settle_concurrency: usize,
    pub quarantine: Quarantine,
    /// The master key `PF_ENCRYPTION` names, read and checked.
    pub master_key: Option<crate::encryption::MasterKey>,
    pub audit_log: AuditTarget,
    pub log_format: LogFormat,
    pub max_buffer_memory: u64,
    pub buffer_wait: Duration,
    pub client_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub limits: crate::limits::LimitSettings,
    pub connections: crate::server::ConnectionLimits,
    /// Browser origins CORS answers for; empty: none.
    pub cors_origins: Vec<String>,
    pub s3: S3Options,
}

/// How the S3 store is reached and written.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub force_path_style: bool,
    pub part_size: u64,
    pub parts_in_flight: u16,
    pub single_put_max: u64,
    pub encryption: crate::store::Encryption,
}

/// A configuration that parsed but does not hold together; the message names the variables.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

const MIB: u64 = 1024 * 1024;

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        let public_url = match args.public_url {
            Some(url) => url,
            None if args.listen.ip().is_loopback() => format!("http://{}", args.listen),
            None => {
                return err(
                    "PF_PUBLIC_URL is required when PF_LISTEN is not a loopback address: \
                     capability URLs must name an address clients can reach",
                );
            }
        };
        let s3 = matches!(args.store, StoreLocation::S3 { .. });
        let default_mode = if s3 && args.clamd.is_empty() {
            Mode::Presigned
        } else {
            Mode::Streaming
        };
        let upload_mode = args.upload_mode.unwrap_or(default_mode);
        let download_mode = args.download_mode.unwrap_or(default_mode);
        if !s3 && (upload_mode == Mode::Presigned || download_mode == Mode::Presigned) {
            return err(
                "PF_UPLOAD_MODE / PF_DOWNLOAD_MODE: `presigned` needs an S3 store (PF_STORE=s3://...); \
                 the local store always streams",
            );
        }
        if s3 && args.url_secret.is_none() {
            return err(
                "PF_URL_SECRET is required with the S3 store: every instance must sign and check \
                 capability URLs with the same secret",
            );
        }
        check_secret("PF_JWT_SECRET", args.secrets.jwt_secret.as_deref())?;
        check_secret("PF_URL_SECRET", args.url_secret.as_deref())?;
        let public_keys = !args.secrets.jwt_public_key_file.is_empty();
        if public_keys && args.secrets.jwt_secret.is_some() {
            return err(
                "PF_JWT_SECRET and PF_JWT_PUBLIC_KEY_FILE are both set: choose one way to verify tokens",
            );
        }
        if s3 && args.secrets.jwt_secret.is_none() && !public_keys {
            return err(
                "PF_JWT_SECRET or PF_JWT_PUBLIC_KEY_FILE is required with the S3 store: instances \
                 share no data dir, so a generated secret would differ between them",
            );
        }
        if s3 && args.max_buffer_memory < 2 * args.s3_part_size {
            return err(
                "PF_MAX_BUFFER_MEMORY must hold at least two S3 parts (2 x PF_S3_PART_SIZE)",
            );
        }
        if args.settle_interval.is_zero() {
            return err("PF_SETTLE_INTERVAL must be above 0: arrivals would never be scanned");
        }
        if args.s3_sse_kms_key_id.is_some() && args.s3_sse != "aws:kms" {
            return err("PF_S3_SSE_KMS_KEY_ID needs PF_S3_SSE=aws:kms");
        }
        let max_file_size = args.max_file_size.unwrap_or(if args.clamd.is_empty() {
            256 * MIB
        } else {
            100 * MIB
        });
        Ok(Self {
            listen: args.listen,
            public_url,
            data_dir: args.secrets.data_dir,
            jwt_secret: args.secrets.jwt_secret,
            jwt_public_keys: args.secrets.jwt_public_key_file,
            jwt_issuer: args.jwt_issuer,
            jwt_audience: args.jwt_audience,
            url_secret: args.url_secret,
            store: args.store,
            index: args.index,
            clamd: args.clamd,
            upload_mode,
            download_mode,
            url_ttl: args.url_ttl,
            resumable: crate::files::resumable::ResumableSettings {
                ttl: args.resumable_ttl,
                max_open: args.max_resumable_per_participant,
                scan_sessions: args.resumable_scan_sessions,
            },
            max_file_size,
            allowed_types: args.allowed_types,
            scan_timeout: args.scan_timeout,
            settle_interval: args.settle_interval,
            settle_concurrency: usize::from(args.settle_concurrency),
            quarantine: args.quarantine,
            master_key: match &args.encryption {
                Some(setting) => Some(
                    setting
                        .load()
                        .map_err(|e| ConfigError(format!("PF_ENCRYPTION: {e}")))?,
                ),
                None => None,
            },
            audit_log: args.audit_log,
            log_format: args.log_format,
            max_buffer_memory: args.max_buffer_memory,
            buffer_wait: args.buffer_wait,
            client_timeout: args.client_timeout,
            shutdown_timeout: args.shutdown_timeout,
            limits: crate::limits::LimitSettings {
                max_uploads: (args.max_uploads > 0).then_some(args.max_uploads),
                max_files_per_participant: args.max_files_per_participant,
                max_bytes_per_participant: args.max_bytes_per_participant,
                max_pending_per_participant: args.max_pending_per_participant,
                download_bytes_per_hour: args.download_bytes_per_hour,
            },
            connections: crate::server::ConnectionLimits {
                header_read_timeout: args.header_read_timeout,
                idle_timeout: args.idle_timeout,
                max_connections: args.max_connections as usize,
            },
            cors_origins: args.cors_origins,
            s3: S3Options {
                force_path_style: args.s3_force_path_style,
                part_size: args.s3_part_size,
                parts_in_flight: args.s3_parts_in_flight,
                single_put_max: args.s3_single_put_max,
                encryption: if args.s3_sse == "aws:kms" {
                    crate::store::Encryption::Kms(args.s3_sse_kms_key_id)
                } else {
                    crate::store::Encryption::S3Managed
                },
            },
        })
    }
}

/// The shortest configured secret accepted: 32 bytes, an HMAC-SHA256 output's length and as
/// many random bytes as the secrets the service generates itself hold.
pub const MIN_SECRET_LEN: usize = 32;

/// Refuses a configured secret shorter than [`MIN_SECRET_LEN`] bytes: a short HMAC key can be
/// found by trying, and with it anyone can mint tokens or capability URLs.
pub fn check_secret(variable: &str, value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(v) if v.len() < MIN_SECRET_LEN => Err(ConfigError(format!(
            "{variable} is {} bytes long; it must be at least {MIN_SECRET_LEN} (for example the \
             output of `openssl rand -hex 32`)",
            v.len()
        ))),
        _ => Ok(()),
    }
}

fn parse_user(s: &str) -> Result<UserId, String> {
    UserId::parse(s).map_err(|e| format!("a user ID {e}"))
}

fn parse_app(s: &str) -> Result<AppId, String> {
    AppId::parse(s).map_err(|e| format!("an app ID {e}"))
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected participant, researcher or worker".to_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration like 30s, 15m or 1h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// An age, where zero means "anything already started".
fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration like 0s, 15m or 1h"))
}

/// A browser origin: `http` or `https`, a host and maybe a port, nothing after.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    let host = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("an origin starts with https:// or http://")?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err("an origin is scheme://host[:port], with no path".to_owned());
    }
    Ok(s.to_owned())
}

fn parse_url_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > MAX_URL_TTL {
        return Err("must be from 1s to 7d".to_owned());
    }
    Ok(d)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let size = bytesize::ByteSize::from_str(s.trim())
        .map_err(|_| "expected a size like 1048576, 100MiB or 1GiB".to_owned())?
        .as_u64();
    if size == 0 {
        return Err("must be more than zero".to_owned());
    }
    Ok(size)
}

fn parse_part_size(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if !(crate::store::MIN_PART_SIZE..=5 * 1024 * MIB).contains(&size) {
        return Err("must be from 5MiB to 5GiB, as S3 requires".to_owned());
    }
    Ok(size)
}

fn parse_single_put_max(s: &str) -> Result<u64, String> {
    let size = bytesize::ByteSize::from_str(s.trim())
        .map_err(|_| "expected a size like 0, 100MiB or 1GiB".to_owned())?
        .as_u64();
    if size > crate::store::MAX_PUT_SIZE {
        return Err("must be at most 5GiB, the largest object one PutObject writes".to_owned());
    }
    Ok(size)
}

fn parse_public_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(
            "expected a URL like https://files.example.org or http://host:8080/base".into(),
        );
    }
    Ok(trimmed.to_owned())
}

fn parse_store(s: &str) -> Result<StoreLocation, String> {
    if s == "local" {
        return Ok(StoreLocation::Local);
    }
    let rest = s
        .strip_prefix("s3://")
        .ok_or("expected `local` or `s3://bucket[/prefix]`")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
    if !valid_bucket {
        return Err(format!("'{bucket}' is not a valid S3 bucket name"));
    }
    Ok(StoreLocation::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

fn parse_index(s: &str) -> Result<IndexLocation, String> {
    if s == "sqlite" {
        return Ok(IndexLocation::Sqlite);
    }
    let table = s
        .strip_prefix("dynamodb://")
        .ok_or("expected `sqlite` or `dynamodb://table`")?;
    let valid = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(format!("'{table}' is not a valid DynamoDB table name"));
    }
    Ok(IndexLocation::DynamoDb {
        table: table.to_owned(),
    })
}

fn parse_clamd(s: &str) -> Result<ClamdAddress, String> {
    if let Some(addr) = s.strip_prefix("tcp://") {
        if addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Ok(ClamdAddress::Tcp(addr.to_owned()));
        }
    } else if let Some(path) = s.strip_prefix("unix://")
        && path.starts_with('/')
    {
        return Ok(ClamdAddress::Unix(PathBuf::from(path)));
    }
    Err("expected tcp://host:port or unix:///path/to/clamd.sock".to_owned())
}

fn parse_audit(s: &str) -> Result<AuditTarget, String> {
    match s {
        "" => Err("expected stdout, stderr or a file path".to_owned()),
        "stdout" | "-" => Ok(AuditTarget::Stdout),
        "stderr" => Ok(AuditTarget::Stderr),
        path => Ok(AuditTarget::File(PathBuf::from(path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB"), Ok(256 * MIB));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(
            parse_origin("https://app.example.org:8443"),
            Ok("https://app.example.org:8443".to_owned())
        );
        assert!(parse_origin("ftp://app.example.org").is_err());
        assert!(parse_origin("https://app.example.org/path").is_err());
        assert!(parse_origin("https://").is_err());
        assert_eq!(parse_url_ttl("1h"), Ok(Duration::from_hours(1)));
        assert!(parse_url_ttl("8d").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_store("s3://my-bucket/a/b/"),
            Ok(StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert!(parse_store("s3://UPPER").is_err());
        assert!(parse_store("gs://b").is_err());
        assert!(parse_index("dynamodb://files").is_ok());
        assert!(parse_index("postgres").is_err());
        assert_eq!(
            parse_clamd("tcp://127.0.0.1:3310"),
            Ok(ClamdAddress::Tcp("127.0.0.1:3310".into()))
        );
        assert!(parse_clamd("tcp://nohost").is_err());
        assert!(parse_clamd("unix://relative").is_err());
    }

    #[test]
    fn a_scanner_means_streaming_uploads_and_a_smaller_default_limit() {
        let cli = Cli::parse_from(["participant-files", "--clamd", "tcp://127.0.0.1:3310"]);
        let config = Config::from_args(cli.serve).unwrap();
        assert_eq!(config.max_file_size, 100 * MIB);
        assert_eq!(config.upload_mode, Mode::Streaming);
        let cli = Cli::parse_from([
            "participant-files",
            "--clamd",
            "tcp://127.0.0.1:3310",
            "--upload-mode",
            "presigned",
        ]);
        let e = Config::from_args(cli.serve).unwrap_err().to_string();
        assert!(e.contains("needs an S3 store"), "{e}");
        // With S3, a scanner also turns the default to streaming.
        let cli = Cli::parse_from([
            "participant-files",
            "--store",
            "s3://bucket",
            "--jwt-secret",
            "jwt-secret-of-the-test-0123456789abcdef",
            "--url-secret",
            "url-secret-of-the-test-0123456789abcdef",
            "--clamd",
            "unix:///run/clamd.sock",
        ]);
        let config = Config::from_args(cli.serve.clone()).unwrap();
        assert_eq!(
            (config.upload_mode, config.download_mode),
            (Mode::Streaming, Mode::Streaming)
        );
        // Presigned uploads with a scanner are asked for explicitly; the settler scans them.
        let mut args = cli.serve;
        args.upload_mode = Some(Mode::Presigned);
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.upload_mode, Mode::Presigned);
        let cli = Cli::parse_from([
            "participant-files",
            "--store",
            "s3://bucket",
            "--jwt-secret",
            "jwt-secret-of-the-test-0123456789abcdef",
            "--url-secret",
            "url-secret-of-the-test-0123456789abcdef",
        ]);
        let config = Config::from_args(cli.serve).unwrap();
        assert_eq!(
            (config.upload_mode, config.download_mode),
            (Mode::Presigned, Mode::Presigned)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        for (flag, var) in [
            ("--jwt-secret", "PF_JWT_SECRET"),
            ("--url-secret", "PF_URL_SECRET"),
        ] {
            let short = "x".repeat(MIN_SECRET_LEN - 1);
            let cli = Cli::parse_from(["participant-files", flag, &short]);
            let e = Config::from_args(cli.serve).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains("31 bytes"), "{e}");
            let enough = "x".repeat(MIN_SECRET_LEN);
            let cli = Cli::parse_from(["participant-files", flag, &enough]);
            assert!(Config::from_args(cli.serve).is_ok());
        }
    }

    #[test]
    fn public_url_is_required_off_loopback() {
        let cli = Cli::parse_from(["participant-files", "--listen", "0.0.0.0:8080"]);
        assert!(Config::from_args(cli.serve).is_err());
        let cli = Cli::parse_from(["participant-files", "--listen", "127.0.0.1:9000"]);
        let config = Config::from_args(cli.serve).unwrap();
        assert_eq!(config.public_url, "http://127.0.0.1:9000");
        assert_eq!(config.max_file_size, 256 * MIB);
        assert_eq!(config.upload_mode, Mode::Streaming);
    }
}
