//! The command-line client (`participant-files upload` and `download`): moves a large file by
//! hand over the service's own API, resuming where an interrupted run stopped.

mod download;
mod explain;
mod progress;
mod retry;
mod state;
mod upload;

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub use download::download;
use retry::Retries;
pub use upload::{Upload, upload};

/// The smallest `--chunk-size`: every chunk is a request of its own, with its round trip, its
/// checksum and the service's write; 1 KiB chunks made a 20 MiB upload take 117 s instead of
/// 2 s. 256 KiB still passes the smallest common cap on a request body (nginx's 1 MiB).
pub const MIN_CHUNK_SIZE: u64 = 256 * 1024;

/// Where the service is and who calls it.
pub struct Connection {
    /// The service's base URL, without a trailing slash.
    pub base: String,
    /// The origin of `base`: the only one the token (and the file) are sent to.
    origin: reqwest::Url,
    /// `self`, or the participant a worker (or researcher, for downloads) acts on.
    pub user: String,
    pub token: String,
    pub http: reqwest::Client,
    /// How long failures in a row are retried once a transfer has begun.
    pub retry_for: Duration,
    /// Origins that answered once in this run: a connection refused before that is a wrong
    /// address, not an outage, and is not retried.
    reached: Mutex<HashSet<String>>,
}

impl Connection {
    /// # Errors
    /// A base URL that is not an http(s) URL.
    pub fn new(
        base: &str,
        user: &str,
        token: &str,
        retry_for: Duration,
    ) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let origin = reqwest::Url::parse(&base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "--url must be the service's http(s) base URL, like \
                     https://files.example.org, not {base}"
                ))
            })?;
        let http = reqwest::Client::builder()
            // The download URL is followed by hand: the 302's body is the file's metadata.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_mins(2))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            base,
            origin,
            user: user.to_owned(),
            token: token.to_owned(),
            http,
            retry_for,
            reached: Mutex::new(HashSet::new()),
        })
    }

    /// Whether `url` is on the service's origin (scheme, host and port of `--url`).
    fn same_origin(&self, url: &reqwest::Url) -> bool {
        url.origin() == self.origin.origin()
    }

    /// Sends a request. A network failure is worth another try, except before its origin
    /// ever answered in this run: then the address is most likely wrong, and waiting would not
    /// help.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Attempt> {
        let req = req
            .build()
            .map_err(|e| Attempt::Refused(ClientError::Usage(format!("bad request: {e}"))))?;
        let origin = req.url().origin().ascii_serialization();
        // Only the origin: a download URL's path is a credential.
        let addr = if self.same_origin(req.url()) {
            self.base.clone()
        } else {
            origin.clone()
        };
        let reached = |r: &Mutex<HashSet<String>>| {
            r.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&origin)
        };
        match self.http.execute(req).await {
            Ok(res) => {
                self.reached
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(origin);
                Ok(res)
            }
            Err(e) if (e.is_connect() || e.is_timeout()) && !reached(&self.reached) => {
                let what = explain::network(e, &addr);
                Err(Attempt::Refused(ClientError::Failed(
                    if addr == self.base {
                        format!(
                            "{what}; check --url (the service's base URL) and that the service \
                         runs there"
                        )
                    } else {
                        format!(
                            "{what}; the service sent its download there: check that this machine \
                         can reach it (the service's PF_PUBLIC_URL or S3 endpoint)"
                        )
                    },
                )))
            }
            Err(e) => Err(Attempt::Retry(explain::network(e, &addr))),
        }
    }

    /// The stored file's metadata (ParticipantFile, with its download URL), from the body
    /// of the 302 that its GET answers.
    async fn file(&self, file_id: &str) -> Result<serde_json::Value, Attempt> {
        let res = self
            .send(
                self.http
                    .get(format!(
                        "{}/v3/participants/{}/files/{file_id}",
                        self.base, self.user
                    ))
                    .bearer_auth(&self.token),
            )
            .await?;
        if res.status() != reqwest::StatusCode::FOUND {
            return Err(refusal(res).await);
        }
        res.json()
            .await
            .map_err(|e| Attempt::Retry(explain::network(e, &self.base)))
    }

    /// A refusal of the service, made to say what to do.
    fn explain(&self, e: ClientError, size: Option<u64>) -> ClientError {
        explain::refusal(e, &self.token, size)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service refused, with Bridge's message: trying again would not help. `advice` is
    /// empty or starts with a separator.
    #[error("{message} ({status}){}", if advice.is_empty() { String::new() } else { format!(": {advice}") })]
    Refused {
        status: u16,
        message: String,
        advice: String,
    },
    /// Not done after every retry (the service unreachable or failing); the next run resumes.
    #[error("{0}; run the same command again to go on where it stopped")]
    GaveUp(String),
    /// Could not be done, for a reason that the message names with what to do.
    #[error("{0}")]
    Failed(String),
    /// A problem with the command line or the local file.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// 1 for what the service refused or what could not be done, 2 for usage.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } | Self::GaveUp(_) | Self::Failed(_) => 1,
            Self::Usage(_) => 2,
        }
    }
}

/// What one try came to: done, refused for good, or worth another try.
enum Attempt {
    Refused(ClientError),
    Retry(String),
}

/// Reads a refusal: Bridge's error shape when the service gave one. 5xx and 423 (another
/// instance holds the upload for a while) are worth another try.
async fn refusal(res: reqwest::Response) -> Attempt {
    let status = res.status().as_u16();
    let origin = res.url().origin().ascii_serialization();
    let body: Option<serde_json::Value> = res.json().await.ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    if status >= 500 || status == 423 {
        let message = message.unwrap_or_else(|| format!("{origin} answered {status}"));
        return Attempt::Retry(format!("{message} ({status})"));
    }
    let (message, advice) = match message {
        Some(m) => (m, String::new()),
        None => (
            format!("{origin} answered {status} without an error of the service's shape"),
            "is --url the service's base URL?".to_owned(),
        ),
    };
    Attempt::Refused(ClientError::Refused {
        status,
        message,
        advice,
    })
}

/// The SHA-256 of a whole file, as the service writes it (standard base64).
async fn sha256_of(file: &mut tokio::fs::File) -> std::io::Result<String> {
    use base64::Engine;
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}
