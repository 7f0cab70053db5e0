//! Appending one request's bytes to a resumable upload: one writer at a time (a lease in the
//! row, with a fence that grows with every writer), the offset moved only over bytes the store
//! made durable, and the whole request undone when its checksum or length is wrong.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use sha2::Digest;

use super::live::LiveScan;
use super::{Describe, hashing};
use crate::files::{Committed, FileService, FilesError};
use crate::keys::UploadId;
use crate::model::{FileId, Owner, ResumableUpload, Versioned, WriterLease};
use crate::pipeline::BoxError;

/// How long a writer's lease holds without renewal; every durable point (at least every
/// `SYNC_EVERY` while bytes arrive) renews it. Short, because an instance that died leaves its
/// lease behind: another instance takes the upload (423 until then) once it ran out.
const LEASE: Duration = Duration::from_secs(15);

/// How long a request waits for a scan session to open or take a chunk before it gives the
/// session up (the completion then scans the stored bytes): a stalled clamd must not hold the bytes back
/// while the lease runs out.
const FEED_WAIT: Duration = Duration::from_secs(5);

/// Bytes between durable points, and the longest time between two.
const SYNC_BYTES: u64 = 8 * 1024 * 1024;
const SYNC_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

/// A checksum of one request's body, as the client declared it.
#[derive(Debug, Clone)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub digest: Vec<u8>,
}

enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::default()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => sha1::Digest::update(h, bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// What one appending request says besides its body.
#[derive(Debug, Clone, Default)]
pub struct Append {
    /// Where the client believes the upload stands.
    pub offset: u64,
    /// The upload's length, when this request sets a deferred one.
    pub length: Option<u64>,
    /// The body's length, when the request says it ahead.
    pub content_length: Option<u64>,
    pub checksum: Option<Checksum>,
}

/// Where an upload stands after a request appended to it.
#[derive(Debug)]
pub struct Appended {
    pub offset: u64,
    /// The file the upload becomes.
    pub file_id: FileId,
    /// What the completion committed, when this request completed the upload.
    pub committed: Option<Committed>,
}

/// Why reading a body stopped before its end.
enum Cut {
    /// A newer request for the upload, or a shutdown.
    Stopped,
    /// The client sent nothing for too long, or its connection broke.
    Client,
}

impl From<Cut> for FilesError {
    fn from(cut: Cut) -> Self {
        match cut {
            Cut::Stopped => Self::UploadStopped,
            Cut::Client => Self::UploadCut,
        }
    }
}

impl FileService {
    /// Appends `body` to the upload at `req.offset` and returns the new offset; when that makes
    /// the upload complete, also what the completion committed. `describe` gives the answer a
    /// refused completion is remembered by.
    pub async fn append_upload<S, E>(
        &self,
        owner: &Owner,
        id: &UploadId,
        req: Append,
        mut body: S,
        describe: &Describe,
    ) -> Result<Appended, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        let turn = self.writers.take(id.as_str()).await;
        let index = self.upload_index();
        let mut row = self.read_upload(owner, id).await?;
        // The session that saw the bytes so far, if this instance wrote them last.
        let mut live = self.live.take(id.as_str(), row.value.offset, row.version);
        if req.offset != row.value.offset {
            return Err(FilesError::OffsetMismatch(row.value.offset));
        }
        if let Some(outcome) = &row.value.outcome {
            // A client that lost the completing answer and sends the last request again.
            return match outcome {
                crate::model::UploadOutcome::Committed => Ok(Appended {
                    offset: row.value.offset,
                    file_id: row.value.file_id.clone(),
                    committed: None,
                }),
                crate::model::UploadOutcome::Refused(refusal) => {
                    Err(FilesError::UploadRefused(refusal.clone()))
                }
            };
        }
        match (row.value.length, req.length) {
            (Some(a), Some(b)) if a != b => return Err(FilesError::LengthFixed),
            (None, Some(length)) => {
                if length < row.value.offset {
                    return Err(FilesError::LengthFixed);
                }
                self.check_length(owner, &row.value.file_id, length).await?;
            }
            _ => {}
        }
        let length = req.length.or(row.value.length);
        if let (Some(length), Some(n)) = (length, req.content_length)
            && row.value.offset + n > length
        {
            return Err(FilesError::PastLength);
        }
        // The lease: another instance that appends now is refused; this one's every write
        // names the version its lease wrote, so a writer that lost it cannot move the offset.
        let now = Utc::now();
        if let Some(w) = &row.value.writer
            && w.until > now
            && w.holder != self.instance
        {
            return Err(FilesError::UploadLocked);
        }
        let fence = row.value.writer.as_ref().map_or(0, |w| w.fence) + 1;
        row.value.length = length;
        row.value.writer = Some(lease(&self.instance, fence));
        row.version = match index.put_upload(&row.value, Some(row.version)).await {
            Ok(v) => v,
            Err(e) if e.is_retryable() => return Err(FilesError::UploadLocked),
            Err(e) => return Err(e.into()),
        };
        if row.value.is_full() && req.content_length.unwrap_or(0) == 0 {
            // Complete but not committed: a completion that failed for a backend, again, under
            // this request's lease.
            return self.complete_leased(row, live, describe).await;
        }
        let before = row.clone();
        if live.is_none() && row.value.offset == 0 {
            live = self.open_live_scan(row.version).await;
        }

        let mut writer = self.store.stage(&row.value.staged).await?;
        let mut hasher = req.checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let mut whole = hashing::resume(row.value.hash.as_deref(), row.value.offset);
        let (mut received, mut unsynced) = (0u64, 0u64);
        let mut last_sync = Instant::now();
        let mut cut = None;
        let mut past = false;
        loop {
            let next = tokio::select! {
                biased;
                () = turn.stop.cancelled() => { cut = Some(Cut::Stopped); break; }
                () = self.cancel.cancelled() => { cut = Some(Cut::Stopped); break; }
                next = tokio::time::timeout(self.rules.client_timeout, body.next()) => next,
            };
            let chunk = match next {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    cut = Some(Cut::Client);
                    break;
                }
            };
            let n = chunk.len() as u64;
            if length.is_some_and(|l| before.value.offset + received + n > l) {
                past = true;
                break;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            if let Some(h) = whole.as_mut() {
                sha2::Digest::update(h, &chunk);
            }
            // clamd and the store take each chunk at once, as in the pipeline. A session that
            // fails is only dropped: the completion then scans the stored bytes.
            let copy = chunk.clone();
            let fed = async {
                match live.as_mut() {
                    Some(l) => matches!(
                        tokio::time::timeout(FEED_WAIT, l.session.feed(copy)).await,
                        Ok(Ok(()))
                    ),
                    None => true,
                }
            };
            let (fed, written) = tokio::join!(fed, writer.write(chunk));
            if !fed {
                live = None;
            }
            written?;
            received += n;
            unsynced += n;
            // With a checksum, nothing of the request counts before its end: a mismatch keeps
            // none of it.
            if hasher.is_none() && (unsynced >= SYNC_BYTES || last_sync.elapsed() >= SYNC_EVERY) {
                row = self
                    .record(
                        row,
                        writer.sync().await?,
                        (before.value.offset + received, whole.as_ref()),
                        true,
                    )
                    .await?;
                unsynced = 0;
                last_sync = Instant::now();
            }
        }
        let checksum_ok = match (hasher, &req.checksum) {
            // A cut request with a checksum cannot be checked: none of it is kept.
            (Some(h), Some(c)) => cut.is_none() && !past && h.finish() == c.digest,
            _ => true,
        };
        if past || !checksum_ok {
            // Undo every durable point of this request: the offset goes back to where it began.
            let mut undo = before.value.clone();
            undo.writer = None;
            index.put_upload(&undo, Some(row.version)).await?;
            return Err(match (past, cut) {
                (true, _) => FilesError::PastLength,
                (false, Some(cut)) => cut.into(),
                (false, None) => FilesError::UploadChecksum,
            });
        }
        let staged = writer.sync().await?;
        let offset = before.value.offset + received;
        let full = length == Some(offset);
        row = self
            .record(row, staged, (offset, whole.as_ref()), full)
            .await?;
        drop(writer);
        if let Some(l) = live.as_mut() {
            l.offset = offset;
            l.version = row.version;
        }
        if full {
            if cut.is_none() {
                drop(turn);
                return self.complete_leased(row, live, describe).await;
            }
        } else if let Some(l) = live {
            self.live.keep(id.as_str(), l);
        }
        match cut {
            Some(cut) => Err(cut.into()),
            None => Ok(Appended {
                offset: row.value.offset,
                file_id: row.value.file_id.clone(),
                committed: None,
            }),
        }
    }

    /// Records a durable point: the staged state, the offset with the hash over the bytes
    /// before it, renewing the lease (`hold`) or giving it back.
    async fn record(
        &self,
        mut row: Versioned<ResumableUpload>,
        staged: crate::model::Staged,
        (offset, whole): (u64, Option<&sha2::Sha256>),
        hold: bool,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        row.value.staged = staged;
        row.value.offset = offset;
        row.value.hash = whole.map(hashing::save);
        let fence = row.value.writer.as_ref().map_or(0, |w| w.fence);
        row.value.writer = hold.then(|| lease(&self.instance, fence));
        match self
            .upload_index()
            .put_upload(&row.value, Some(row.version))
            .await
        {
            Ok(version) => {
                row.version = version;
                Ok(row)
            }
            // Terminated, or taken by a newer writer: this request stops here.
            Err(e) if e.is_retryable() => Err(FilesError::UploadLocked),
            Err(e) => Err(e.into()),
        }
    }

    /// A scan session for a new upload's bytes, when there is a scanner and room for one;
    /// without it the completion scans the stored bytes.
    async fn open_live_scan(&self, version: u64) -> Option<LiveScan> {
        let scanner = self.scanner.as_ref()?;
        if !self.live.has_room() {
            return None;
        }
        let memory = self.budget.reserve(scanner.buffer_memory()).await.ok()?;
        // A scanner slow to answer is not waited for here: the completion scans instead.
        let session = tokio::time::timeout(FEED_WAIT, scanner.session())
            .await
            .ok()?
            .ok()?;
        Some(LiveScan {
            session,
            offset: 0,
            version,
            memory,
        })
    }

    /// Completes the upload while renewing this request's lease: the scan of a large file
    /// takes longer than the lease, and another instance must not complete it beside this one.
    async fn complete_leased(
        &self,
        row: Versioned<ResumableUpload>,
        live: Option<LiveScan>,
        describe: &Describe,
    ) -> Result<Appended, FilesError> {
        let offset = row.value.offset;
        let file_id = row.value.file_id.clone();
        let (owner, id) = (row.value.owner.clone(), row.value.id.clone());
        let fence = row.value.writer.as_ref().map_or(0, |w| w.fence);
        let renew = async {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                self.renew_lease(&owner, &id, fence).await;
            }
        };
        let committed = tokio::select! {
            r = self.complete_upload(row, live, describe) => r?,
            () = renew => unreachable!("the renewal never ends"),
        };
        Ok(Appended {
            offset,
            file_id,
            committed: Some(committed),
        })
    }

    /// Extends this request's lease, if it still holds it. Best effort: a lease that is not
    /// renewed runs out by itself.
    async fn renew_lease(&self, owner: &Owner, id: &UploadId, fence: u64) {
        let index = self.upload_index();
        let Ok(Some(mut row)) = index.get_upload(owner, id).await else {
            return;
        };
        let mine = row
            .value
            .writer
            .as_ref()
            .is_some_and(|w| w.holder == self.instance && w.fence == fence);
        if mine {
            row.value.writer = Some(lease(&self.instance, fence));
            let _ = index.put_upload(&row.value, Some(row.version)).await;
        }
    }
}

fn lease(holder: &str, fence: u64) -> WriterLease {
    WriterLease {
        holder: holder.to_owned(),
        fence,
        until: Utc::now() + LEASE,
    }
}
