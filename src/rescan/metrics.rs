//! A rescan run's findings as Prometheus metrics, in a file for node exporter's textfile
//! collector.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use super::Tally;

/// The run's findings in the Prometheus text format, for a textfile collector (node
/// exporter's `--collector.textfile.directory`) to pick up.
pub(super) fn write_metrics(
    path: &Path,
    tally: &Tally,
    started: DateTime<Utc>,
) -> anyhow::Result<()> {
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
