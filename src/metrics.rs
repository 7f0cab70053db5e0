//! Prometheus metrics of one instance, served at `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::budget::MemoryBudget;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub uploads_in_flight: IntGauge,
    pub scan_verdicts: IntCounterVec,
    pub scan_seconds: Histogram,
    pub backend_errors: IntCounterVec,
    /// 1 for each configured scanner (by position) that answered its last background probe,
    /// else 0.
    pub scanner_up: IntGaugeVec,
    /// Presigned uploads the settler took: settled (committed or refused) or deferred.
    pub arrivals: IntCounterVec,
    buffer_memory: IntGauge,
    budget: MemoryBudget,
}

impl Metrics {
    /// # Panics
    /// Only if two metrics were given one name, which is a bug here.
    #[must_use]
    pub fn new(budget: MemoryBudget) -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "pf_http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pf_http_request_duration_seconds",
                "Time to the response head, by route and method",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        let bytes_in = IntCounter::new("pf_upload_bytes_total", "Bytes of uploads committed")
            .expect("valid metric");
        let bytes_out = IntCounter::new("pf_download_bytes_total", "Bytes served by downloads")
            .expect("valid metric");
        let uploads_in_flight =
            IntGauge::new("pf_uploads_in_flight", "Uploads receiving their body now")
                .expect("valid metric");
        let scan_verdicts = IntCounterVec::new(
            Opts::new(
                "pf_scan_verdicts_total",
                "Virus scan outcomes: clean, infected or error",
            ),
            &["verdict"],
        )
        .expect("valid metric");
        let scan_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pf_scan_duration_seconds",
                "Time from an upload's last byte to the scanner's verdict",
            )
            .buckets(vec![
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        let scanner_up = IntGaugeVec::new(
            Opts::new(
                "pf_scanner_up",
                "Whether each configured scanner, by position (scanner 1, ...), answered its last background PING",
            ),
            &["scanner"],
        )
        .expect("valid metric");
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "pf_backend_errors_total",
                "Requests that failed because a backend did",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let arrivals = IntCounterVec::new(
            Opts::new(
                "pf_arrivals_total",
                "Arrived presigned uploads this instance's settler took, by outcome: settled \
                 (committed or refused), deferred (a backend or the scanner failed) or lost \
                 (settled elsewhere, or taken over by another instance while this one stalled)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let buffer_memory = IntGauge::new(
            "pf_buffer_memory_bytes",
            "Upload buffer memory reserved from PF_MAX_BUFFER_MEMORY",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(uploads_in_flight.clone()),
            Box::new(scan_verdicts.clone()),
            Box::new(scan_seconds.clone()),
            Box::new(backend_errors.clone()),
            Box::new(scanner_up.clone()),
            Box::new(arrivals.clone()),
            Box::new(buffer_memory.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            uploads_in_flight,
            scan_verdicts,
            scan_seconds,
            backend_errors,
            scanner_up,
            arrivals,
            buffer_memory,
            budget,
        }
    }

    /// Adds a counter kept elsewhere (the encrypted store's decryption failures).
    ///
    /// # Panics
    /// Only if its name is taken, which is a bug here.
    pub fn register(&self, counter: &IntCounter) {
        self.registry
            .register(Box::new(counter.clone()))
            .expect("unique metric names");
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        self.buffer_memory
            .set(i64::try_from(self.budget.in_use()).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Counts an upload as in flight while it lives.
pub struct InFlight<'a>(&'a IntGauge);

impl<'a> InFlight<'a> {
    pub fn start(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Writes a command's metrics in the Prometheus text format for a textfile collector (node
/// exporter's `--collector.textfile.directory`): written whole, then renamed, so a collector
/// never reads half a file. Creates the folder when missing.
pub fn write_textfile(path: &std::path::Path, registry: &Registry) -> std::io::Result<()> {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .map_err(std::io::Error::other)?;
    // The data dir of a service on S3 and DynamoDB holds nothing else, and may not exist.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, path)
}
