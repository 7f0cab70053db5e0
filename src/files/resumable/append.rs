//! Appending one request's bytes to a resumable upload: one writer at a time (a lease in the
//! row, with a fence that grows with every writer), the offset moved only over bytes the store
//! made durable, and the whole request undone when its checksum or length is wrong.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use sha2::Digest;

use super::live::LiveScan;
use super::{Describe, Requester, Room, hashing};
use crate::files::{Committed, FileService, FilesError};
use crate::keys::UploadId;
use crate::model::{
    FileId, Owner, ResumableUpload, UploadOutcome, Versioned, WriterLease, Writing,
};
use crate::pipeline::BoxError;
use crate::pipeline::PipelineError;

/// How long a writer's lease holds without renewal; every durable point (at least every
/// `SYNC_EVERY` while bytes arrive) renews it. Short, because an instance that died leaves its
/// lease behind: another instance takes the upload (423 until then) once it ran out.
pub(super) const LEASE: Duration = Duration::from_secs(15);

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
    /// The whole file's SHA-256 (standard base64), when this request declares it: the draft
    /// allows `Repr-Digest` on any request, and the completion checks it as a creation's.
    pub sha256: Option<String>,
    /// The body is the last of the upload: with no length declared, the upload's length is
    /// where the body ends (the IETF draft's `Upload-Complete: ?1` on a body of unknown length).
    pub ends: bool,
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

/// What one appending request did, also when it failed: for its audit line.
#[derive(Debug, Default)]
pub struct Progress {
    /// The file the upload becomes, once the upload was found.
    pub file_id: Option<FileId>,
    /// Bytes of this request that are durable (kept, whatever the answer).
    pub kept: u64,
}

/// What becomes of the lease at a durable point.
#[derive(Clone, Copy)]
enum Then {
    /// More bytes come in this request: renewed.
    Append,
    /// Every byte is in: the completion's, which every other request waits for.
    Complete,
    /// The request ends here: given back.
    LetGo,
}

/// Why reading a body stopped before its end.
#[derive(Clone, Copy)]
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
    /// the upload complete, also what the completion committed. The completion runs to its
    /// end once the last byte is durable, whatever the client does, and writes the commit's
    /// audit line itself; `describe` gives the answer a refused completion is remembered by.
    pub async fn append_upload<S, E>(
        &self,
        owner: &Owner,
        id: &UploadId,
        req: Append,
        mut body: S,
        (describe, requester): (Describe, &Requester),
        progress: &mut Progress,
    ) -> Result<Appended, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        // Whose upload it is comes first: nobody stops a request of an upload not theirs.
        self.read_idle(owner, id).await?;
        let turn = self.turns.take(id.as_str()).await;
        let index = self.upload_index();
        let mut row = self.read_idle(owner, id).await?;
        progress.file_id = Some(row.value.file_id.clone());
        // The session that saw the bytes so far, if this instance wrote them last.
        let mut live = self.live.take(id.as_str(), row.value.offset, row.version);
        if req.offset != row.value.offset {
            return Err(FilesError::OffsetMismatch(row.value.offset));
        }
        if row.value.outcome.is_some() || row.value.is_full() {
            // Bytes after the last one are never taken, whatever came of the upload.
            if has_bytes(&mut body, req.content_length, self.rules.client_timeout).await {
                return Err(FilesError::PastLength);
            }
        }
        if let Some(outcome) = &row.value.outcome {
            // A client that lost the completing answer and sends the last request again.
            return match outcome {
                UploadOutcome::Committed => Ok(Appended {
                    offset: row.value.offset,
                    file_id: row.value.file_id.clone(),
                    committed: None,
                }),
                UploadOutcome::Refused(refusal) => Err(FilesError::UploadRefused(refusal.clone())),
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
        match (&row.value.sha256, req.sha256) {
            (Some(had), Some(now)) if *had != now => return Err(FilesError::DigestFixed),
            // Written with the lease below, so a completion retried later checks it too.
            (None, Some(now)) => row.value.sha256 = Some(now),
            _ => {}
        }
        let length = req.length.or(row.value.length);
        // With a deferred length, the bytes are held to the same bounds as a declared one.
        let bound = match length {
            Some(l) => Room::Size(l),
            None => self.room(owner, &row.value.file_id).await?,
        };
        let past = |n: u64| match length {
            Some(_) => FilesError::PastLength,
            None if n <= self.rules.max_size => bound.error(),
            None => FilesError::TooLarge {
                limit: self.rules.max_size,
            },
        };
        if let Some(n) = req.content_length
            && row
                .value
                .offset
                .checked_add(n)
                .is_none_or(|end| end > bound.limit())
        {
            return Err(past(row.value.offset.saturating_add(n)));
        }
        row.value.length = length;
        let completing = row.value.is_full();
        let fence = self.take_lease(&mut row, completing).await?;
        if row.value.is_full() {
            // Complete but not committed: a completion that failed for a backend, again, under
            // this request's lease.
            drop(turn);
            return self.complete_detached(row, live, describe, requester).await;
        }
        // Appending holds an upload slot and buffer memory, as a streaming upload does.
        let _slot = self.limits.upload_slot().ok_or(FilesError::Busy)?;
        let _memory = self
            .budget
            .reserve(crate::sniff::SNIFF_LEN + self.store.write_buffer())
            .await
            .map_err(PipelineError::from)?;
        let before = row.clone();
        if live.is_none() && row.value.offset == 0 {
            live = self.open_live_scan(row.version).await;
        }

        let mut writer = self.store.stage(&row.value.staged, fence).await?;
        if let Some(n) = req.content_length {
            writer.expect(n);
        }
        let mut hasher = req.checksum.as_ref().map(|c| Hasher::new(c.algorithm));
        let mut whole = hashing::resume(row.value.hash.as_deref(), row.value.offset);
        let (mut received, mut unsynced) = (0u64, 0u64);
        let mut last_sync = Instant::now();
        let mut cut = None;
        let mut over = None;
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
            let end = before
                .value
                .offset
                .saturating_add(received)
                .saturating_add(n);
            if end > bound.limit() {
                over = Some(past(end));
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
            // The request's last byte makes a durable point of its own, just after the loop.
            let at_end = req.content_length == Some(received);
            if hasher.is_none()
                && !at_end
                && (unsynced >= SYNC_BYTES || last_sync.elapsed() >= SYNC_EVERY)
            {
                row = self
                    .record(
                        row,
                        writer.sync().await?,
                        (before.value.offset + received, whole.as_ref()),
                        Then::Append,
                    )
                    .await?;
                progress.kept = received;
                unsynced = 0;
                last_sync = Instant::now();
            }
        }
        let checksum_ok = match (hasher, &req.checksum) {
            // A cut request with a checksum cannot be checked: none of it is kept.
            (Some(h), Some(c)) => cut.is_none() && over.is_none() && h.finish() == c.digest,
            _ => true,
        };
        if over.is_some() || !checksum_ok {
            // Undo every durable point of this request: the offset goes back to where it began.
            let mut undo = before.value.clone();
            undo.writer = None;
            index.put_upload(&undo, Some(row.version)).await?;
            progress.kept = 0;
            return Err(match (over, cut) {
                (Some(e), _) => e,
                (None, Some(cut)) => cut.into(),
                (None, None) => FilesError::UploadChecksum,
            });
        }
        let staged = writer.sync().await?;
        let offset = before.value.offset + received;
        // Only a body that arrived whole may end the upload: a cut one keeps what came.
        let length = match length {
            None if req.ends && cut.is_none() => {
                row.value.length = Some(offset);
                Some(offset)
            }
            l => l,
        };
        // Once the last byte is durable the upload completes, whether or not the client is
        // still there: the lease says so in the same write that records the byte.
        let full = length == Some(offset);
        row = self
            .record(
                row,
                staged,
                (offset, whole.as_ref()),
                if full { Then::Complete } else { Then::LetGo },
            )
            .await?;
        progress.kept = received;
        drop(writer);
        if let Some(l) = live.as_mut() {
            l.offset = offset;
            l.version = row.version;
        }
        if full {
            drop(turn);
            return self.complete_detached(row, live, describe, requester).await;
        }
        if let Some(l) = live {
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
    /// before it, and what becomes of the lease.
    async fn record(
        &self,
        mut row: Versioned<ResumableUpload>,
        staged: crate::model::Staged,
        (offset, whole): (u64, Option<&sha2::Sha256>),
        then: Then,
    ) -> Result<Versioned<ResumableUpload>, FilesError> {
        row.value.staged = staged;
        row.value.offset = offset;
        row.value.hash = whole.map(hashing::save);
        let fence = row.value.writer.as_ref().map_or(0, |w| w.epoch);
        row.value.writer = match then {
            Then::Append => Some(lease(&self.instance, fence, false)),
            Then::Complete => Some(lease(&self.instance, fence, true)),
            Then::LetGo => None,
        };
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
}

/// Whether a body (`length` bytes when said ahead) holds any byte.
async fn has_bytes<S, E>(body: &mut S, length: Option<u64>, wait: Duration) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
{
    if let Some(n) = length {
        return n > 0;
    }
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(wait, body.next()).await {
        if !chunk.is_empty() {
            return true;
        }
    }
    false
}

/// A lease for `holder` from now on; `completing`: for the completion of the upload.
pub(super) fn lease(holder: &str, epoch: u64, completing: bool) -> WriterLease {
    WriterLease {
        holder: holder.to_owned(),
        epoch,
        until: Utc::now() + LEASE,
        work: Writing { completing },
    }
}
