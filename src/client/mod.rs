//! The command-line client (`participant-files upload` and `download`): moves a large file by
//! hand over the service's own API, resuming where an interrupted run stopped.

mod download;
mod progress;
mod state;
mod upload;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

pub use download::download;
pub use upload::{Upload, upload};

/// Where the service is and who calls it.
pub struct Connection {
    /// The service's base URL, without a trailing slash.
    pub base: String,
    /// `self`, or the participant a worker (or researcher, for downloads) acts on.
    pub user: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Connection {
    /// # Errors
    /// A base URL that is not an http(s) URL.
    pub fn new(base: &str, user: &str, token: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "--url must be the service's http(s) base URL, not {base}"
            )));
        }
        let http = reqwest::Client::builder()
            // The download URL is followed by hand: the 302's body is the file's metadata.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_mins(2))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            base,
            user: user.to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// The stored file's metadata (ParticipantFile, with its download URL), from the body
    /// of the 302 that its GET answers.
    async fn file(&self, file_id: &str) -> Result<serde_json::Value, Attempt> {
        let res = self
            .http
            .get(format!(
                "{}/v3/participants/{}/files/{file_id}",
                self.base, self.user
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if res.status() != reqwest::StatusCode::FOUND {
            return Err(refusal(res).await);
        }
        Ok(res.json().await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service refused, with Bridge's message: trying again would not help.
    #[error("{message} ({status})")]
    Refused { status: u16, message: String },
    /// Not done after every retry (the service unreachable or failing); the next run resumes.
    #[error("{0}; run the same command again to go on where it stopped")]
    GaveUp(String),
    /// A problem with the command line or the local file.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// 1 for what the service refused or what could not be done, 2 for usage.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Refused { .. } | Self::GaveUp(_) => 1,
            Self::Usage(_) => 2,
        }
    }
}

/// What one try came to: done, refused for good, or worth another try.
enum Attempt {
    Refused(ClientError),
    Retry(String),
}

impl From<reqwest::Error> for Attempt {
    fn from(e: reqwest::Error) -> Self {
        // Only what reqwest says, never the URL: a download URL is a credential.
        Self::Retry(format!("network: {}", e.without_url()))
    }
}

/// Reads a refusal: Bridge's error shape when the service gave one. 5xx and 423 (another
/// instance holds the upload for a while) are worth another try.
async fn refusal(res: reqwest::Response) -> Attempt {
    let status = res.status().as_u16();
    let body: Option<serde_json::Value> = res.json().await.ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| format!("the service answered {status}"), str::to_owned);
    if status >= 500 || status == 423 {
        Attempt::Retry(format!("{message} ({status})"))
    } else {
        Attempt::Refused(ClientError::Refused { status, message })
    }
}

/// Pauses between tries: from half a second, doubling to 30 s, with jitter; 10 tries after the
/// last progress, about 3 minutes of a service that does not answer.
struct Retries {
    builder: ExponentialBuilder,
    pauses: backon::ExponentialBackoff,
}

impl Retries {
    fn new() -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(10)
            .with_jitter();
        Self {
            pauses: builder.build(),
            builder,
        }
    }

    /// Waits before the next try, or gives up with `why`.
    async fn pause(
        &mut self,
        why: String,
        progress: &progress::Progress,
    ) -> Result<(), ClientError> {
        match self.pauses.next() {
            Some(pause) => {
                progress.note(&format!(
                    "{why}; trying again in {:.1} s",
                    pause.as_secs_f64()
                ));
                tokio::time::sleep(pause).await;
                Ok(())
            }
            None => Err(ClientError::GaveUp(why)),
        }
    }

    /// Progress was made: the next failure starts from the shortest pause again.
    fn reset(&mut self) {
        self.pauses = self.builder.build();
    }
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
