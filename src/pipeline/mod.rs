//! The upload pipeline: one pass over a body that sniffs, counts, hashes, scans and stores it,
//! and commits the object only when every check has passed. [`receive`] reads the body; what
//! follows the last byte ([`Received::finish`]: the verdict and the commit) needs nothing from
//! the request, so it can run to its end after the client has gone.

mod resumed;

pub use resumed::{Resumed, resume};

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::budget::{BudgetExhausted, MemoryBudget, Reservation};
use crate::keys::ObjectKey;
use crate::model::{ScanEvidence, ScanStatus};
use crate::scan::{ScanError, ScanSession, Scanner, Verdict};
use crate::sniff::{self, AllowedTypes, SNIFF_LEN, TypeError};
use crate::store::{BlobStore, BlobWriter, StoreError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the client said about the body before sending it.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub mime_type: Option<String>,
    pub size: Option<u64>,
    /// The body's Content-Length, when the request has one (HTTP holds the body to it).
    pub length: Option<u64>,
    /// Standard padded base64 of the SHA-256.
    pub sha256: Option<String>,
    /// The file's name as the client sent it (NFC, no path part), kept with the bytes.
    pub file_name: Option<String>,
}

/// The limits an upload is held to.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_size: u64,
    pub allowed: AllowedTypes,
    /// How long the client may send nothing before its upload is given up (slowloris).
    pub client_timeout: std::time::Duration,
}

/// What was stored, once committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub mime_type: String,
    pub size: u64,
    pub sha256: String,
    pub scan_status: ScanStatus,
    /// How long the scanner took to answer after the last byte.
    pub scan_time: Option<std::time::Duration>,
    /// When and with what a clean verdict was given.
    pub scan: Option<ScanEvidence>,
    /// The name declared with the bytes.
    pub file_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Type(#[from] TypeError),
    #[error("the body has {actual} bytes, not the declared {declared}")]
    SizeMismatch { declared: u64, actual: u64 },
    #[error("the body's SHA-256 is not the declared one")]
    ChecksumMismatch,
    #[error("the request body could not be read")]
    Body(#[source] BoxError),
    #[error("the client sent nothing for too long")]
    ClientTooSlow,
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the file is infected: {0}")]
    Infected(String),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Busy(#[from] BudgetExhausted),
}

/// Where an upload's bytes go, and what stops it.
#[derive(Clone, Copy)]
pub struct Sinks<'a> {
    pub scanner: Option<&'a Arc<dyn Scanner>>,
    pub store: &'a dyn BlobStore,
    pub budget: &'a MemoryBudget,
    /// Cancelled when a shutdown's deadline has passed.
    pub cancel: &'a CancellationToken,
}

/// Where the bytes an upload reads go.
#[derive(Clone, Copy)]
pub enum Dest<'a> {
    /// Into a new object under this key.
    Object(&'a ObjectKey),
    /// Nowhere: the bytes are already stored (an arrived upload URL's object) and are only
    /// checked.
    Checked,
}

/// A body that was read whole and passed every check that needs only its bytes; the object is
/// not committed yet. Dropping it leaves nothing in the store.
pub struct Received {
    writer: Option<Box<dyn BlobWriter>>,
    scan: Option<Box<dyn ScanSession>>,
    mime_type: String,
    size: u64,
    sha256: String,
    file_name: Option<String>,
    /// The memory the upload holds outside the store's own reservations.
    _memory: Reservation,
}

impl Received {
    /// The SHA-256 of every byte received (standard base64).
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Waits for the scanner's verdict and, when clean, commits the object.
    pub async fn finish(self) -> Result<Ingested, PipelineError> {
        let (scan_status, scan_time, scan) = match self.scan {
            None => (ScanStatus::Unscanned, None, None),
            Some(mut session) => {
                let started = std::time::Instant::now();
                match session.finish().await? {
                    Verdict::Clean => {
                        let scan_time = started.elapsed();
                        // The version right after the verdict: a reload in between would at
                        // worst name newer signatures than the scan used, never older ones.
                        let evidence = ScanEvidence {
                            scanned_on: chrono::Utc::now(),
                            engine: session.version().await?,
                            signature: None,
                        };
                        (ScanStatus::Clean, Some(scan_time), Some(evidence))
                    }
                    Verdict::Infected(signature) => {
                        return Err(PipelineError::Infected(signature));
                    }
                }
            }
        };
        if let Some(writer) = self.writer {
            writer.commit().await?;
        }
        Ok(Ingested {
            mime_type: self.mime_type,
            size: self.size,
            sha256: self.sha256,
            scan_status,
            scan_time,
            scan,
            file_name: self.file_name,
        })
    }
}

/// Counts and hashes every byte and enforces the size limit as the bytes arrive.
struct Meter {
    count: u64,
    limit: u64,
    hash: Sha256,
}

impl Meter {
    fn take(&mut self, chunk: &[u8]) -> Result<(), PipelineError> {
        self.count += chunk.len() as u64;
        if self.count > self.limit {
            return Err(PipelineError::TooLarge { limit: self.limit });
        }
        self.hash.update(chunk);
        Ok(())
    }
}

/// The next chunk of the body, counted; `None` at its end. A client that sends nothing for
/// `rules.client_timeout` is given up on: only time spent waiting for the client counts, not
/// time the service itself holds the upload back (that is spent in the store or the scanner).
async fn next_chunk<S, E>(
    body: &mut S,
    meter: &mut Meter,
    rules: &Rules,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>, PipelineError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: Into<BoxError>,
{
    let next = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(PipelineError::ShuttingDown),
        next = tokio::time::timeout(rules.client_timeout, body.next()) => next,
    };
    match next {
        Err(_) => Err(PipelineError::ClientTooSlow),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(PipelineError::Body(e.into())),
        Ok(Some(Ok(chunk))) => {
            meter.take(&chunk)?;
            Ok(Some(chunk))
        }
    }
}

/// Reads `body` to its end and stores it under `key`, then waits for the verdict and commits
/// (see [`receive`] and [`Received::finish`]).
pub async fn ingest<S, E>(
    body: S,
    declared: &Declared,
    rules: &Rules,
    sinks: Sinks<'_>,
    key: &ObjectKey,
) -> Result<Ingested, PipelineError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: Into<BoxError>,
{
    receive(body, declared, rules, sinks, Dest::Object(key))
        .await?
        .finish()
        .await
}

/// Reads `body` to its end and writes it to `dest` without committing it. Nothing is
/// committed unless the body is complete, within the rules and matches what was declared; on
/// any error, or when the returned future is dropped, the store keeps nothing.
pub async fn receive<S, E>(
    mut body: S,
    declared: &Declared,
    rules: &Rules,
    sinks: Sinks<'_>,
    dest: Dest<'_>,
) -> Result<Received, PipelineError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
    E: Into<BoxError>,
{
    let Sinks {
        scanner,
        store,
        budget,
        cancel,
    } = sinks;
    if let (Some(declared), Some(actual)) = (declared.size, declared.length)
        && declared != actual
    {
        return Err(PipelineError::SizeMismatch { declared, actual });
    }
    if let Some(length) = declared.length
        && length > rules.max_size
    {
        return Err(PipelineError::TooLarge {
            limit: rules.max_size,
        });
    }
    // The sniff head, the store's own write buffer and the scanner's queue are memory too.
    let write_buffer = match dest {
        Dest::Object(_) => store.write_buffer(),
        Dest::Checked => 0,
    };
    let memory = budget
        .reserve(SNIFF_LEN + write_buffer + scanner.map_or(0, |s| s.buffer_memory()))
        .await?;
    let mut meter = Meter {
        count: 0,
        limit: rules.max_size,
        hash: Sha256::new(),
    };

    // The type is decided on the first bytes, before anything is stored or scanned.
    let mut head = BytesMut::new();
    let mut ended = false;
    while head.len() < SNIFF_LEN {
        let Some(chunk) = next_chunk(&mut body, &mut meter, rules, cancel).await? else {
            ended = true;
            break;
        };
        head.extend_from_slice(&chunk);
    }
    let head = head.freeze();
    let mime_type = sniff::decide(
        declared.mime_type.as_deref(),
        sniff::detect(&head),
        &rules.allowed,
    )?;

    let mut scan = match scanner {
        Some(s) => Some(s.session().await?),
        None => None,
    };
    let mut writer = match dest {
        Dest::Object(key) => Some(store.create(key, declared.length).await?),
        Dest::Checked => None,
    };
    let streamed = async {
        let mut next = Some(head);
        loop {
            let chunk = match next.take() {
                Some(chunk) => chunk,
                None if ended => break,
                None => match next_chunk(&mut body, &mut meter, rules, cancel).await? {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            if chunk.is_empty() {
                continue;
            }
            // The scanner and the store take each chunk at the same time; the slower of the
            // two sets the pace, and with it the client's.
            match (scan.as_mut(), writer.as_mut()) {
                (Some(scan), Some(writer)) => {
                    let (fed, written) =
                        tokio::join!(scan.feed(chunk.clone()), writer.write(chunk));
                    fed?;
                    written?;
                }
                (Some(scan), None) => scan.feed(chunk).await?,
                (None, Some(writer)) => writer.write(chunk).await?,
                (None, None) => {}
            }
        }
        Ok::<_, PipelineError>(())
    };
    // A shutdown stops an upload that is still receiving, also while it waits on the store or
    // the scanner; one that has all its bytes goes on to its verdict and commit.
    tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(PipelineError::ShuttingDown),
        r = streamed => r?,
    }

    let size = meter.count;
    let sha256 = STANDARD.encode(meter.hash.finalize());
    check_whole(declared, size, &sha256)?;
    Ok(Received {
        writer,
        scan,
        mime_type,
        size,
        sha256,
        file_name: declared.file_name.clone(),
        _memory: memory,
    })
}

/// What every upload must match once all of it is in: the declared size and SHA-256.
fn check_whole(declared: &Declared, size: u64, sha256: &str) -> Result<(), PipelineError> {
    if let Some(declared) = declared.size.or(declared.length)
        && declared != size
    {
        return Err(PipelineError::SizeMismatch {
            declared,
            actual: size,
        });
    }
    if declared.sha256.as_ref().is_some_and(|d| d != sha256) {
        return Err(PipelineError::ChecksumMismatch);
    }
    Ok(())
}
