//! The command line: the subcommands and their flags (serving's own are in `serve`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::ServeArgs;
use super::parse::{parse_age, parse_app, parse_duration, parse_role, parse_size, parse_user};
use crate::auth::Role;
use crate::model::{AppId, UserId};

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
