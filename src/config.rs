//! Command line and configuration: `PF_*` environment variables and the matching flags, checked
//! before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::sniff::AllowedTypes;

mod commands;
pub(crate) mod parse;
mod serve;
#[cfg(test)]
mod tests;

pub use commands::*;
pub use serve::*;

/// The longest lifetime S3 allows for a presigned URL; capability URLs are held to it too.
pub const MAX_URL_TTL: Duration = Duration::from_hours(7 * 24);

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
    /// The master key a rotation moves away from (`PF_ENCRYPTION_PREVIOUS`).
    pub previous_master_key: Option<crate::encryption::MasterKey>,
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

pub(super) const MIB: u64 = 1024 * 1024;

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
        let encrypting = args.encryption.is_some();
        let default_mode = if s3 && args.clamd.is_empty() && !encrypting {
            Mode::Presigned
        } else {
            Mode::Streaming
        };
        let upload_mode = args.upload_mode.unwrap_or(default_mode);
        let download_mode = args.download_mode.unwrap_or(default_mode);
        if encrypting && download_mode == Mode::Presigned {
            return err(
                "PF_DOWNLOAD_MODE=presigned cannot be used with PF_ENCRYPTION: a presigned URL \
                 would hand out the ciphertext; downloads must stream through the service \
                 (PF_DOWNLOAD_MODE=streaming, the default with encryption)",
            );
        }
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
                max_open_per_app: args.max_resumable_per_app,
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
            previous_master_key: match &args.encryption_previous {
                Some(setting) => Some(
                    setting
                        .load()
                        .map_err(|e| ConfigError(format!("PF_ENCRYPTION_PREVIOUS: {e}")))?,
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
