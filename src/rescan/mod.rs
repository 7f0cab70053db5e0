//! `participant-files rescan`: scans stored files again with the scanner's current signatures,
//! and marks and quarantines what it now finds infected.

mod file;
mod metrics;
mod quarantine;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::file::Run;
use self::metrics::write_metrics;
pub use self::quarantine::quarantine;
use crate::audit::AuditLog;
use crate::backends::Backends;
use crate::budget::MemoryBudget;
use crate::config::Quarantine;
use crate::model::{FileId, Owner, ScanEvidence};
use crate::scan::Scanner;
use crate::sniff::SNIFF_LEN;

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
