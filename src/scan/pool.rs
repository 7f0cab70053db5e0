//! Several clamd instances behind one scanner (`PF_CLAMD=tcp://a:3310,tcp://b:3310`): each
//! upload goes to the least busy one that answers; one that does not is passed over for a while.
//! Each is probed in the background, so that `/ready` and `/metrics` never wait on a scanner.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::{ClamdScanner, ScanError, ScanSession, Scanner, Verdict};
use crate::config::ClamdAddress;

/// How long a scanner that did not answer is passed over before it is tried again.
const PASS_OVER: Duration = Duration::from_secs(30);

/// How often each scanner is probed in the background.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long a background probe waits for PONG. Far shorter than a scan's timeout: a clamd that
/// accepts and never answers is reported down within this, not after `PF_SCAN_TIMEOUT`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

struct Member {
    name: String,
    scanner: ClamdScanner,
    busy: Arc<AtomicUsize>,
    down_until: Mutex<Option<Instant>>,
    /// What the last background probe found; `None` until the first one ended.
    probed: watch::Sender<Option<bool>>,
}

impl Member {
    fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until)
    }

    fn mark(&self, up: bool) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (!up).then(|| Instant::now() + PASS_OVER);
    }
}

pub struct ScannerPool {
    members: Vec<Arc<Member>>,
    probes: Once,
}

impl ScannerPool {
    /// A pool of the scanners at `addresses`. Within a Tokio runtime their background probes
    /// start at once; else at the first use of [`Scanner::states`].
    #[must_use]
    pub fn new(addresses: &[ClamdAddress], timeout: Duration) -> Self {
        let pool = Self {
            members: addresses
                .iter()
                .map(|a| {
                    Arc::new(Member {
                        name: a.to_string(),
                        scanner: ClamdScanner::new(a.clone(), timeout),
                        busy: Arc::default(),
                        down_until: Mutex::new(None),
                        probed: watch::Sender::new(None),
                    })
                })
                .collect(),
            probes: Once::new(),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            pool.start_probes();
        }
        pool
    }

    /// One task per scanner, so that one that never answers delays no other. A task holds its
    /// scanner only while probing it, and ends once the pool is gone.
    fn start_probes(&self) {
        self.probes.call_once(|| {
            for member in &self.members {
                tokio::spawn(probe(Arc::downgrade(member)));
            }
        });
    }
}

async fn probe(member: Weak<Member>) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(member) = member.upgrade() else {
            return;
        };
        let up = member.scanner.ping(PROBE_TIMEOUT).await.is_ok();
        // Uploads try a scanner that did not answer last, not first.
        member.mark(up);
        member.probed.send_replace(Some(up));
    }
}

/// One unit of a scanner's load, given back when dropped (also when the upload is cancelled).
struct Load(Arc<AtomicUsize>);

impl Load {
    fn take(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(busy))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A session that counts toward its scanner's load until it is dropped.
struct Counted {
    inner: Box<dyn ScanSession>,
    _load: Load,
}

#[async_trait]
impl ScanSession for Counted {
    async fn feed(&mut self, chunk: Bytes) -> Result<(), ScanError> {
        self.inner.feed(chunk).await
    }

    async fn finish(&mut self) -> Result<Verdict, ScanError> {
        self.inner.finish().await
    }

    async fn version(&mut self) -> Result<String, ScanError> {
        self.inner.version().await
    }
}

#[async_trait]
impl Scanner for ScannerPool {
    async fn session(&self) -> Result<Box<dyn ScanSession>, ScanError> {
        // The least busy first; scanners passed over come last, in case all of them are.
        let mut order: Vec<&Member> = self.members.iter().map(AsRef::as_ref).collect();
        order.sort_by_key(|m| (m.is_down(), m.busy.load(Ordering::SeqCst)));
        let mut last = None;
        for member in order {
            // The load is taken before the PING, so that uploads arriving together see each
            // other's choice instead of all taking the scanner that was idle when they sorted.
            let load = Load::take(&member.busy);
            // A PING first: an INSTREAM session only connects once bytes flow, too late to
            // choose another scanner.
            match member.scanner.check().await {
                Ok(()) => {
                    member.mark(true);
                    let inner = member.scanner.session().await?;
                    return Ok(Box::new(Counted { inner, _load: load }));
                }
                Err(e) => {
                    tracing::warn!(scanner = %member.name, error = %e, "scanner passed over");
                    member.mark(false);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(ScanError::Failed("no scanner configured".to_owned())))
    }

    async fn check(&self) -> Result<(), ScanError> {
        // All at once, so that one that never answers does not hold back the others' answer.
        let pings = self
            .members
            .iter()
            .map(|m| m.scanner.check())
            .collect::<Vec<_>>();
        let mut last = None;
        for result in futures::future::join_all(pings).await {
            match result {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ScanError::Failed("no scanner configured".to_owned())))
    }

    fn buffer_memory(&self) -> usize {
        self.members
            .first()
            .map_or(0, |m| m.scanner.buffer_memory())
    }

    /// The last probe's answers, by position (`scanner 1`, ...): an address says where the
    /// scanners run, which `/ready` does not tell anyone.
    async fn states(&self) -> Vec<(String, Option<bool>)> {
        self.start_probes();
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("scanner {}", i + 1), *m.probed.borrow()))
            .collect()
    }
}
