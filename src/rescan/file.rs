//! One file's rescan: read it back through the upload pipeline, scan it, mark the verdict in
//! its row, and quarantine what is now found infected.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::quarantine::quarantine;
use super::{STORE_STALL, Tally, current_engine};
use crate::audit::{Action, AuditEvent, AuditLog};
use crate::auth::Role;
use crate::budget::MemoryBudget;
use crate::config::Quarantine;
use crate::index::{FileIndex, IndexError};
use crate::keys::ObjectKey;
use crate::model::{FileId, FileRow, Owner, ScanEvidence, ScanStatus, StoredFile, UserId};
use crate::pipeline::{self, Declared, Dest, PipelineError, Rules, Sinks};
use crate::retry::Backoff;
use crate::scan::{ScanError, Scanner};
use crate::sniff::AllowedTypes;
use crate::store::{BlobStore, StoreError};

/// One run's shared parts.
pub(super) struct Run<'a> {
    pub(super) index: &'a dyn FileIndex,
    pub(super) store: &'a dyn BlobStore,
    pub(super) scanner: &'a Arc<dyn Scanner>,
    pub(super) budget: &'a MemoryBudget,
    /// Never cancelled: a run is stopped by stopping the process, and starts again where it was.
    pub(super) cancel: CancellationToken,
    pub(super) audit: &'a AuditLog,
    pub(super) quarantine: Quarantine,
    pub(super) cutoff: DateTime<Utc>,
    pub(super) signatures: Option<u64>,
    pub(super) tally: &'a Tally,
    pub(super) bar: Option<&'a indicatif::ProgressBar>,
}

impl Run<'_> {
    /// Whether the file's last verdict is older than the run wants.
    fn due(&self, file: &StoredFile) -> bool {
        match file.scan_status {
            // A stopped run may not have got to its object yet: the row names the
            // `quarantine/` key once it has.
            ScanStatus::Infected => !file.key.is_quarantined(),
            ScanStatus::Clean | ScanStatus::Unscanned => file.scan.as_ref().is_none_or(|s| {
                s.scanned_on < self.cutoff
                    || matches!(
                        (ScanEvidence::signature_version(&s.engine), self.signatures),
                        (Some(had), Some(now)) if had < now
                    )
            }),
        }
    }

    pub(super) async fn one(&self, row: FileRow) -> anyhow::Result<()> {
        let Some(file) = row.current.clone() else {
            return Ok(());
        };
        if !self.due(&file) {
            return Ok(());
        }
        if file.scan_status == ScanStatus::Infected {
            let signature = file.scan.as_ref().and_then(|s| s.signature.clone());
            return quarantine(
                self.index,
                self.store,
                self.quarantine,
                &row.owner,
                &row.file_id,
                &file,
                signature.as_deref(),
            )
            .await;
        }
        let verdict = match self.scan(&file).await {
            Ok(v) => v,
            Err(Failure::Gone) => {
                self.tally.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(Failure::Scan(e)) => {
                return Err(anyhow::Error::new(e).context("the scanner failed; run again later"));
            }
            Err(Failure::Changed) => {
                // Not scanned as clean, not marked infected: what is stored is not what was
                // committed, and an operator must look (a restore from backup, or tampering).
                tracing::error!(
                    app = %row.owner.app,
                    participant = %row.owner.participant,
                    file_id = %row.file_id,
                    "rescan: the stored bytes are not the ones the index recorded (size or SHA-256); the file is left as it is"
                );
                self.tally.changed.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(Failure::Store(e)) => return Err(e.into()),
            Err(Failure::Other(e)) => return Err(e),
        };
        self.tally.checked.fetch_add(1, Ordering::Relaxed);
        self.tally.bytes.fetch_add(file.size, Ordering::Relaxed);
        if let Some(bar) = self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "{} infected, {}",
                self.tally.infected.load(Ordering::Relaxed),
                indicatif::HumanBytes(self.tally.bytes.load(Ordering::Relaxed))
            ));
        }
        let (evidence, status) = verdict;
        let infected = evidence.signature.clone();
        let marked = self
            .mark(&row.owner, &row.file_id, &file.key, evidence, status)
            .await?;
        if !marked {
            // Replaced or deleted meanwhile: the new bytes were scanned on their way in.
            self.tally.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let (audit_status, signature) = match &infected {
            None => {
                self.tally.clean.fetch_add(1, Ordering::Relaxed);
                (200, None)
            }
            Some(sig) => {
                self.tally.infected.fetch_add(1, Ordering::Relaxed);
                (422, Some(sig.as_str()))
            }
        };
        self.record(&row.owner, &row.file_id, audit_status, file.size, signature);
        if infected.is_some() {
            quarantine(
                self.index,
                self.store,
                self.quarantine,
                &row.owner,
                &row.file_id,
                &file,
                signature,
            )
            .await?;
        }
        Ok(())
    }

    /// Streams the object through the upload pipeline, as an arrival is checked: counted and
    /// hashed against the row (so that bytes changed in the store are found, not passed as
    /// clean) and scanned. The verdict as evidence, and the status it gives.
    async fn scan(&self, file: &StoredFile) -> Result<(ScanEvidence, ScanStatus), Failure> {
        let read = match self.store.read(&file.key, None).await {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Err(Failure::Gone),
            Err(e) => return Err(Failure::Store(e)),
        };
        // The type was decided when the file came in; a rescan neither sniffs it again nor
        // holds it to today's allowed types.
        let declared = Declared {
            size: Some(file.size),
            length: Some(file.size),
            sha256: file.sha256.clone(),
            ..Declared::default()
        };
        let rules = Rules {
            max_size: file.size,
            allowed: AllowedTypes::any(),
            client_timeout: STORE_STALL,
        };
        let sinks = Sinks {
            scanner: Some(self.scanner),
            store: self.store,
            budget: self.budget,
            cancel: &self.cancel,
        };
        let checked =
            match pipeline::receive(read.body, &declared, &rules, sinks, Dest::Checked).await {
                Ok(received) => received.finish().await,
                Err(e) => Err(e),
            };
        match checked {
            Ok(ingested) => Ok((
                ingested.scan.ok_or_else(|| {
                    Failure::Other(anyhow::anyhow!("a clean verdict without evidence"))
                })?,
                ScanStatus::Clean,
            )),
            Err(PipelineError::Infected(signature)) => {
                let engine = current_engine(self.scanner.as_ref())
                    .await
                    .map_err(Failure::Other)?;
                let evidence = ScanEvidence {
                    scanned_on: Utc::now(),
                    engine,
                    signature: Some(signature),
                };
                Ok((evidence, ScanStatus::Infected))
            }
            Err(e) => Err(Failure::from(e)),
        }
    }

    /// Writes the verdict into the row if it still holds the scanned object; `false` when it
    /// does not any more.
    async fn mark(
        &self,
        owner: &Owner,
        file_id: &FileId,
        key: &ObjectKey,
        evidence: ScanEvidence,
        status: ScanStatus,
    ) -> Result<bool, IndexError> {
        update_current(self.index, owner, file_id, key, |file| {
            file.scan_status = status;
            file.scan = Some(evidence.clone());
        })
        .await
    }

    fn record(
        &self,
        owner: &Owner,
        file_id: &FileId,
        status: u16,
        bytes: u64,
        signature: Option<&str>,
    ) {
        let actor = UserId::parse("rescan").expect("a valid identifier");
        let mut event = AuditEvent::new(
            &format!("rescan-{}", uuid::Uuid::new_v4().simple()),
            owner,
            &actor,
            Role::Worker,
            Some(file_id),
            Action::Rescan,
            status,
            bytes,
        )
        .with_signature(signature);
        // Not a person acting in a role: the service's own maintenance.
        event.role = "system";
        self.audit.record(&event);
    }
}

/// Changes the row's current file with `change`, if it is still the object at `key`.
pub(super) async fn update_current(
    index: &dyn FileIndex,
    owner: &Owner,
    file_id: &FileId,
    key: &ObjectKey,
    change: impl Fn(&mut StoredFile),
) -> Result<bool, IndexError> {
    let mut tries = Backoff::new();
    while tries.next().await {
        let Some(mut row) = index.get(owner, file_id).await? else {
            return Ok(false);
        };
        let Some(file) = row.value.current.as_mut() else {
            return Ok(false);
        };
        if &file.key != key {
            return Ok(false);
        }
        change(file);
        match index.put(&row.value, Some(row.version)).await {
            Ok(_) => return Ok(true),
            // A request changed the row meanwhile: its progress, not a failure.
            Err(IndexError::Conflict) => tries.lost_race(),
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
    }
    Err(IndexError::Conflict)
}

enum Failure {
    /// The object went (the file was replaced or deleted while it was read).
    Gone,
    /// The stored bytes are not the ones the row recorded: another size or SHA-256.
    Changed,
    Scan(ScanError),
    Store(StoreError),
    Other(anyhow::Error),
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::SizeMismatch { .. }
            | PipelineError::ChecksumMismatch
            | PipelineError::TooLarge { .. } => Self::Changed,
            PipelineError::Store(StoreError::NotFound) => Self::Gone,
            PipelineError::Store(e) => Self::Store(e),
            PipelineError::Body(e) => match e.downcast::<StoreError>() {
                Ok(e) if matches!(*e, StoreError::NotFound) => Self::Gone,
                Ok(e) => Self::Store(*e),
                Err(e) => Self::Other(anyhow::anyhow!(e)),
            },
            PipelineError::Scan(e) => Self::Scan(e),
            // Neither can happen to a body read from the store with the run's own budget and
            // no type rule; they are reported, not guessed at.
            e @ (PipelineError::Type(_)
            | PipelineError::ClientTooSlow
            | PipelineError::ShuttingDown
            | PipelineError::Busy(_)
            | PipelineError::Infected(_)) => Self::Other(e.into()),
        }
    }
}
