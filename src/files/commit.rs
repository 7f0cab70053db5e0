//! The one commit every intake ends in (a streaming PUT, an arrived presigned upload, a
//! resumable upload's completion): claim, verdict, conditional switch, outcome.

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;

use super::arrival::Consumes;
use super::claim::ClaimGuard;
use super::{Backoff, Committed, FileService, FilesError};
use crate::index::{FileQuota, QuotaReached};
use crate::keys::{ObjectKey, UploadId};
use crate::model::{FileId, Owner, StoredFile};
use crate::pipeline::{self, BoxError, Declared, Dest, PipelineError, Rules};

impl FileService {
    /// Streams `body` into a fresh object and makes it the file. Once the last byte is in, the
    /// verdict, the commit and the switch run on their own task: a client that leaves then
    /// changes nothing, and the object is never left without its row or the other way round.
    pub(super) async fn ingest_and_commit<S, E>(
        &self,
        owner: &Owner,
        file_id: &FileId,
        body: S,
        declared: &Declared,
        consumes: Option<&Consumes>,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        self.check_and_commit(owner, file_id, body, declared, consumes, None)
            .await
    }

    /// Like [`Self::ingest_and_commit`], for a `body` that is already stored: the object
    /// `arrived.0` read at version `arrived.1` (its `ETag`). Its bytes are only checked, and the
    /// new object is a copy of that very version, made once every check has passed.
    pub(super) async fn check_and_commit<S, E>(
        &self,
        owner: &Owner,
        file_id: &FileId,
        body: S,
        declared: &Declared,
        consumes: Option<&Consumes>,
        arrived: Option<(ObjectKey, String)>,
    ) -> Result<Committed, FilesError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Into<BoxError>,
    {
        let slot = self.limits.upload_slot().ok_or(FilesError::Busy)?;
        let (rules, quota_error) = self.rules_within_quota(owner, file_id).await?;
        // A fresh key for every attempt, so two uploads of one file never write one object.
        let key = ObjectKey::new(owner, &UploadId::generate());
        let claim = self.claim(owner, file_id, &key).await?;
        let dest = match arrived {
            Some(_) => Dest::Checked,
            None => Dest::Object(&key),
        };
        let received = pipeline::receive(body, declared, &rules, self.sinks(), dest)
            .await
            .map_err(quota_error)?;
        let (this, owner, file_id, consumes) = (
            self.clone(),
            owner.clone(),
            file_id.clone(),
            consumes.cloned(),
        );
        let finishing = async move {
            let _slot = slot;
            let ingested = match &arrived {
                None => received.finish().await.map_err(quota_error)?,
                Some((from, etag)) => {
                    // The store copies the checked version while clamd scans what it was sent:
                    // clamd scans only after the last byte, on one core, and the copy takes the
                    // other. The copy is claimed, so never served, and goes if the verdict fails.
                    let sha256 = received.sha256().to_owned();
                    let copy = this.store.copy_checked(from, &key, etag, &sha256);
                    let (ingested, copied) = tokio::join!(received.finish(), copy);
                    match (ingested, copied) {
                        (Ok(ingested), Ok(())) => ingested,
                        (Ok(_), Err(e)) => return Err(e.into()),
                        (Err(e), copied) => {
                            if copied.is_ok() {
                                this.discard(&key).await;
                            }
                            return Err(quota_error(e));
                        }
                    }
                }
            };
            this.commit_ingested(&owner, &file_id, key, ingested, consumes.as_ref(), claim)
                .await
        };
        crate::detached::run(&self.tasks, finishing).await?
    }

    /// The rules for a new version of `file_id`: the file quota checked now, and the byte
    /// quota as the size limit where it is the lower one; with the error that a body over
    /// that limit is then.
    pub(super) async fn rules_within_quota(
        &self,
        owner: &Owner,
        file_id: &FileId,
    ) -> Result<
        (
            Rules,
            impl Fn(PipelineError) -> FilesError + Copy + Send + 'static,
        ),
        FilesError,
    > {
        let mut rules = self.rules.clone();
        let mut quota_bound = false;
        let quotas = self.limits.settings;
        if quotas.max_files_per_participant.is_some() || quotas.max_bytes_per_participant.is_some()
        {
            let now = Utc::now();
            let usage = self.index.usage(owner, now).await?;
            let (row, _) = self.read_row(owner, file_id).await?;
            let this = row.current.as_ref().map(|c| c.size);
            let has_pending = row.pending.as_ref().is_some_and(|p| p.expires_on > now);
            if this.is_none()
                && !has_pending
                && quotas
                    .max_files_per_participant
                    .is_some_and(|max| usage.files + usage.pending_new >= max)
            {
                return Err(FilesError::Quota("files"));
            }
            if let Some(max) = quotas.max_bytes_per_participant {
                let remaining = max.saturating_sub(usage.bytes - this.unwrap_or(0));
                if remaining < rules.max_size {
                    rules.max_size = remaining;
                    quota_bound = true;
                }
            }
        }
        let quota_error = move |e: PipelineError| match e {
            PipelineError::TooLarge { .. } if quota_bound => FilesError::Quota("storage"),
            other => other.into(),
        };
        Ok((rules, quota_error))
    }

    /// Makes the checked object under `key` the file, by the switch; with how long its scan
    /// took.
    pub(super) async fn commit_ingested(
        &self,
        owner: &Owner,
        file_id: &FileId,
        key: ObjectKey,
        ingested: pipeline::Ingested,
        consumes: Option<&Consumes>,
        claim: ClaimGuard,
    ) -> Result<Committed, FilesError> {
        let file = StoredFile {
            key,
            mime_type: ingested.mime_type,
            size: ingested.size,
            sha256: Some(ingested.sha256),
            scan_status: ingested.scan_status,
            created_on: Utc::now(),
            scan: ingested.scan,
            file_name: ingested.file_name,
        };
        let mut committed = self.switch(owner, file_id, file, consumes, claim).await?;
        committed.scan_time = ingested.scan_time;
        Ok(committed)
    }

    /// Makes a committed object the file's current version with a conditional write that also
    /// takes the upload's claim away, then deletes the object it replaced. The new object is
    /// deleted when it cannot become current. A write whose answer was lost is recognised by
    /// the row naming the new object. A switch that loses to a newer commit is superseded, not
    /// retried: a replace under contention lands or is replaced by a newer one, and either way
    /// it is committed (an upload that must consume an upload URL still has to land).
    async fn switch(
        &self,
        owner: &Owner,
        file_id: &FileId,
        mut file: StoredFile,
        consumes: Option<&Consumes>,
        mut claim: ClaimGuard,
    ) -> Result<Committed, FilesError> {
        let quota = FileQuota {
            files: self.limits.settings.max_files_per_participant,
            bytes: self.limits.settings.max_bytes_per_participant,
        };
        let mut tries = Backoff::new();
        // What the previous try replaced, had it landed: its answer may have been lost.
        let mut replaced_by_last_try: Option<Option<StoredFile>> = None;
        // The current object when the switch began.
        let mut began_at: Option<Option<ObjectKey>> = None;
        while tries.next().await {
            let (mut row, version) = match self.read_row(owner, file_id).await {
                Ok(r) => r,
                Err(e) => {
                    if replaced_by_last_try.is_none() {
                        self.discard(&file.key).await;
                    }
                    // Else an earlier try may have landed: the object stays for `reconcile`,
                    // which keeps it when a row names it.
                    return Err(e);
                }
            };
            if row.current.as_ref().is_some_and(|c| c.key == file.key) {
                claim.disarm();
                return Ok(self.switched(file, replaced_by_last_try.flatten()).await);
            }
            if !row.claimed(&file.key) {
                claim.disarm();
                if let Some(old) = &replaced_by_last_try
                    && row.current.as_ref().map(|c| &c.key) != old.as_ref().map(|o| &o.key)
                {
                    // An earlier try whose answer was lost did land, and another upload has
                    // replaced this one since (and deleted its object): it was committed.
                    // A revocation would have left the row at what that try replaced.
                    let old = replaced_by_last_try.flatten();
                    self.discard_unnamed(&row, old.clone()).await;
                    return Ok(Committed {
                        file,
                        replaced: old.is_some(),
                        scan_time: None,
                    });
                }
                // Revoked by an erase or by `reconcile`: this object is not to be kept.
                self.discard(&file.key).await;
                self.discard_unnamed(&row, replaced_by_last_try.flatten())
                    .await;
                return Err(FilesError::ClaimRevoked);
            }
            // Still claimed: no try of this switch landed.
            let current = row.current.as_ref().map(|c| c.key.clone());
            match &began_at {
                None => began_at = Some(current),
                Some(began) if *began != current && consumes.is_none() => {
                    return Ok(superseded(file, began.is_some(), claim).await);
                }
                Some(_) => {}
            }
            if let Some(consumes) = consumes {
                let Some(pending) = row
                    .pending
                    .take()
                    .filter(|p| p.upload_id == consumes.upload)
                else {
                    claim.discard_object().await;
                    self.discard_unnamed(&row, replaced_by_last_try.flatten())
                        .await;
                    return Err(FilesError::UploadConsumed);
                };
                if !consumes.holds(&pending) {
                    // Taken over while this settle stalled: the new holder settles it.
                    claim.discard_object().await;
                    self.discard_unnamed(&row, replaced_by_last_try.flatten())
                        .await;
                    return Err(FilesError::LeaseLost);
                }
                // An upload URL's bytes carry the name given when the URL was asked for.
                file.file_name = file.file_name.or(pending.file_name);
            }
            if row
                .pending
                .as_ref()
                .is_some_and(|p| p.expires_on <= Utc::now())
            {
                row.pending = None;
            }
            row.claims.retain(|c| c.key != file.key);
            let old = row.current.replace(file.clone());
            // The quotas are held by this write itself: the early checks only refuse sooner.
            match self.index.put_within(&row, version, quota).await {
                Ok(Ok(_)) => {
                    claim.disarm();
                    return Ok(self.switched(file, old).await);
                }
                Ok(Err(reached)) => {
                    claim.discard_object().await;
                    return Err(FilesError::Quota(match reached {
                        QuotaReached::Files => "files",
                        QuotaReached::Bytes => "storage",
                    }));
                }
                Err(e) if !e.is_retryable() => {
                    claim.discard_object().await;
                    return Err(e.into());
                }
                // Another writer's progress: a newer commit supersedes this one (above).
                Err(crate::index::IndexError::Conflict) => {
                    tries.lost_race();
                    replaced_by_last_try = Some(old);
                }
                // An answer that got lost: the next try reads the row and sees whether this
                // write landed.
                Err(_) => replaced_by_last_try = Some(old),
            }
        }
        let (row, _) = self.read_row(owner, file_id).await?;
        if row.current.as_ref().is_some_and(|c| c.key == file.key) {
            claim.disarm();
            return Ok(self.switched(file, replaced_by_last_try.flatten()).await);
        }
        if row.claimed(&file.key) {
            claim.discard_object().await;
        } else {
            claim.disarm();
            self.discard(&file.key).await;
        }
        self.discard_unnamed(&row, replaced_by_last_try.flatten())
            .await;
        Err(FilesError::Contended)
    }

    /// The object an earlier try would have replaced, when that try may have landed: if the row
    /// no longer names it, whoever replaced it (that try, or another upload) left it to go. An
    /// object key is never made current twice, so one the row does not name is never needed.
    async fn discard_unnamed(
        &self,
        row: &crate::model::FileRow,
        replaced_by_last_try: Option<StoredFile>,
    ) {
        if let Some(old) = replaced_by_last_try
            && row.current.as_ref().is_none_or(|c| c.key != old.key)
        {
            self.discard(&old.key).await;
        }
    }

    /// After a switch landed: the replaced object goes.
    async fn switched(&self, file: StoredFile, old: Option<StoredFile>) -> Committed {
        if let Some(old) = &old
            && old.key != file.key
        {
            self.discard(&old.key).await;
        }
        Committed {
            file,
            replaced: old.is_some(),
            scan_time: None,
        }
    }
}

/// A switch that lost to a newer commit made while it ran. The upload stands as committed and
/// at once replaced by that newer one, which a reader could not tell apart from two switches in
/// a row: it answers as committed. Its object was never current, and goes before the answer.
async fn superseded(file: StoredFile, replaced: bool, claim: ClaimGuard) -> Committed {
    claim.discard_object().await;
    Committed {
        file,
        replaced,
        scan_time: None,
    }
}
