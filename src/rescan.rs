//! `participant-files rescan`: scans stored files again with the scanner's current signatures,
//! and marks and quarantines what it now finds infected.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::audit::{Action, AuditEvent, AuditLog};
use crate::auth::Role;
use crate::backends::Backends;
use crate::budget::MemoryBudget;
use crate::config::Quarantine;
use crate::index::{FileIndex, IndexError};
use crate::keys::ObjectKey;
use crate::model::{FileId, FileRow, Owner, ScanEvidence, ScanStatus, StoredFile, UserId};
use crate::pipeline::{self, Declared, Dest, PipelineError, Rules, Sinks};
use crate::retry::Backoff;
use crate::scan::{ScanError, Scanner};
use crate::sniff::{AllowedTypes, SNIFF_LEN};
use crate::store::{BlobStore, StoreError};

/// How a run is asked to go.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files scanned before now minus this are due again.
    pub older_than: Duration,
    pub concurrency: usize,
    /// Forget a stopped run instead of continuing it.
    pub restart: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    pub quarantine: Quarantine,
    /// Where the run keeps its state (to be continued after a stop) and its metrics.
    pub data_dir: PathBuf,
}

/// What a run found, also written as Prometheus metrics to `rescan.prom` in the data dir.
#[derive(Debug, Default)]
pub struct Tally {
    pub checked: AtomicU64,
    pub clean: AtomicU64,
    pub infected: AtomicU64,
    /// Files that could not be scanned (their bytes could not be read, or the row changed).
    pub skipped: AtomicU64,
    /// Files whose stored bytes no longer match the size or SHA-256 in their row.
    pub changed: AtomicU64,
    pub bytes: AtomicU64,
}

/// A run's cutoff, kept while it runs so that a stopped run, started again, goes on where it
/// was: the files it rescanned carry a later `scannedOn` than the cutoff.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RunState {
    cutoff_ms: i64,
    older_than_s: u64,
}

const STATE_FILE: &str = "rescan-state.json";
const METRICS_FILE: &str = "rescan.prom";

/// Rows read from the index at a time.
const PAGE: usize = 100;

/// How long a read from the store may deliver nothing before the file is given up for this run.
const STORE_STALL: Duration = Duration::from_mins(5);

/// Rescans every due file of every participant and returns the report lines.
pub async fn run(
    backends: &Backends,
    scanner: Arc<dyn Scanner>,
    audit: &AuditLog,
    options: &Options,
) -> anyhow::Result<Vec<String>> {
    let started = Utc::now();
    let state = start_state(options, started)?;
    let cutoff = DateTime::from_timestamp_millis(state.cutoff_ms).unwrap_or(started);
    let engine = current_engine(scanner.as_ref()).await?;
    let signatures = ScanEvidence::signature_version(&engine);
    let tally = Tally::default();
    // What the files in flight may hold beside the scanner's queues: the sniff head each.
    let budget = MemoryBudget::new(
        (options.concurrency as u64 + 1) * (SNIFF_LEN as u64 + scanner.buffer_memory() as u64),
        Duration::from_mins(1),
    );
    let bar = options.progress.then(progress_bar);
    let run = Run {
        index: backends.index.as_ref(),
        store: backends.store.as_ref(),
        scanner: &scanner,
        budget: &budget,
        cancel: CancellationToken::new(),
        audit,
        quarantine: options.quarantine,
        cutoff,
        signatures,
        tally: &tally,
        bar: bar.as_ref(),
    };
    let mut after: Option<(Owner, FileId)> = None;
    loop {
        let rows = backends
            .index
            .scan(after.as_ref().map(|(o, f)| (o, f)), PAGE)
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some((last.value.owner.clone(), last.value.file_id.clone()));
        let full = rows.len() == PAGE;
        futures::stream::iter(rows.into_iter().map(|r| r.value))
            .map(|row| run.one(row))
            .buffer_unordered(options.concurrency)
            .try_collect::<()>()
            .await?;
        if !full {
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    std::fs::remove_file(options.data_dir.join(STATE_FILE)).ok();
    write_metrics(&options.data_dir.join(METRICS_FILE), &tally, started)?;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(vec![format!(
        "rescanned {} files ({} bytes) with {engine}: {} clean, {} infected, {} skipped, {} changed in the store",
        n(&tally.checked),
        n(&tally.bytes),
        n(&tally.clean),
        n(&tally.infected),
        n(&tally.skipped),
        n(&tally.changed),
    )])
}

/// The state of the run to continue, or of a new one (written before the first file).
fn start_state(options: &Options, now: DateTime<Utc>) -> anyhow::Result<RunState> {
    let path = options.data_dir.join(STATE_FILE);
    let older_than_s = options.older_than.as_secs();
    if !options.restart
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(state) = serde_json::from_str::<RunState>(&text)
        && state.older_than_s == older_than_s
    {
        tracing::info!("continuing a stopped rescan");
        return Ok(state);
    }
    let age = chrono::Duration::from_std(options.older_than).unwrap_or(chrono::Duration::MAX);
    let state = RunState {
        cutoff_ms: (now - age).timestamp_millis(),
        older_than_s,
    };
    std::fs::create_dir_all(&options.data_dir).context("cannot create the data dir")?;
    std::fs::write(&path, serde_json::to_vec(&state)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(state)
}

/// The scanner's engine and signature version, from the verdict on no bytes at all.
async fn current_engine(scanner: &dyn Scanner) -> anyhow::Result<String> {
    let mut session = scanner
        .session()
        .await
        .context("the scanner is unreachable")?;
    session.finish().await.context("the scanner failed")?;
    session.version().await.context("the scanner failed")
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} files, {msg} ({per_sec})",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One run's shared parts.
struct Run<'a> {
    index: &'a dyn FileIndex,
    store: &'a dyn BlobStore,
    scanner: &'a Arc<dyn Scanner>,
    budget: &'a MemoryBudget,
    /// Never cancelled: a run is stopped by stopping the process, and starts again where it was.
    cancel: CancellationToken,
    audit: &'a AuditLog,
    quarantine: Quarantine,
    cutoff: DateTime<Utc>,
    signatures: Option<u64>,
    tally: &'a Tally,
    bar: Option<&'a indicatif::ProgressBar>,
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

    async fn one(&self, row: FileRow) -> anyhow::Result<()> {
        let Some(file) = row.current.clone() else {
            return Ok(());
        };
        if !self.due(&file) {
            return Ok(());
        }
        if file.scan_status == ScanStatus::Infected {
            let signature = file.scan.as_ref().and_then(|s| s.signature.clone());
            return self
                .quarantine_object(&row.owner, &row.file_id, &file, signature.as_deref())
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
            self.quarantine_object(&row.owner, &row.file_id, &file, signature)
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
        self.update(owner, file_id, key, |file| {
            file.scan_status = status;
            file.scan = Some(evidence.clone());
        })
        .await
    }

    /// Changes the row's current file with `change`, if it is still the object at `key`.
    async fn update(
        &self,
        owner: &Owner,
        file_id: &FileId,
        key: &ObjectKey,
        change: impl Fn(&mut StoredFile),
    ) -> Result<bool, IndexError> {
        let mut tries = Backoff::new();
        while tries.next().await {
            let Some(mut row) = self.index.get(owner, file_id).await? else {
                return Ok(false);
            };
            let Some(file) = row.value.current.as_mut() else {
                return Ok(false);
            };
            if &file.key != key {
                return Ok(false);
            }
            change(file);
            match self.index.put(&row.value, Some(row.version)).await {
                Ok(_) => return Ok(true),
                // A request changed the row meanwhile: its progress, not a failure.
                Err(IndexError::Conflict) => tries.lost_race(),
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e),
            }
        }
        Err(IndexError::Conflict)
    }

    /// Deletes an infected file's object, or moves it under `quarantine/` (copy, point the row
    /// at the copy, delete the original), as `PF_QUARANTINE` says.
    async fn quarantine_object(
        &self,
        owner: &Owner,
        file_id: &FileId,
        file: &StoredFile,
        signature: Option<&str>,
    ) -> anyhow::Result<()> {
        let q = file.key.quarantined();
        if self.quarantine == Quarantine::Keep {
            match self.copy(&file.key, &q).await {
                // Gone already (deleted by an earlier run with `delete`): nothing to keep.
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The row names the quarantined key from now on (with `delete`, a key that holds
        // nothing): a rerun sees the file handled, and deleting the file removes the copy.
        if !self
            .update(owner, file_id, &file.key, |f| f.key = q.clone())
            .await?
        {
            // Deleted or replaced meanwhile: the copy is nobody's.
            self.store.delete(&q).await?;
        }
        self.store.delete(&file.key).await?;
        tracing::info!(
            signature = signature.unwrap_or("unknown"),
            kept = self.quarantine == Quarantine::Keep,
            "an infected file's object was quarantined"
        );
        Ok(())
    }

    async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), StoreError> {
        let read = self.store.read(from, None).await?;
        let mut writer = self.store.create(to, Some(read.object_size)).await?;
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            writer.write(chunk?).await?;
        }
        writer.commit().await
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

/// The run's findings in the Prometheus text format, for a textfile collector (node
/// exporter's `--collector.textfile.directory`) to pick up.
fn write_metrics(path: &Path, tally: &Tally, started: DateTime<Utc>) -> anyhow::Result<()> {
    use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
    let registry = Registry::new();
    let files = IntGaugeVec::new(
        Opts::new(
            "pf_rescan_files",
            "Files the last rescan run checked, by what it found: clean, infected, skipped, or changed (the stored bytes are not the recorded ones)",
        ),
        &["result"],
    )?;
    let n = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    files.with_label_values(&["clean"]).set(n(&tally.clean));
    files
        .with_label_values(&["infected"])
        .set(n(&tally.infected));
    files.with_label_values(&["skipped"]).set(n(&tally.skipped));
    files.with_label_values(&["changed"]).set(n(&tally.changed));
    let bytes = IntGauge::new("pf_rescan_bytes", "Bytes the last rescan run scanned")?;
    bytes.set(n(&tally.bytes));
    let finished = IntGauge::new(
        "pf_rescan_last_run_timestamp_seconds",
        "When the last rescan run that finished had started",
    )?;
    finished.set(started.timestamp());
    registry.register(Box::new(files))?;
    registry.register(Box::new(bytes))?;
    registry.register(Box::new(finished))?;
    crate::metrics::write_textfile(path, &registry)?;
    Ok(())
}
