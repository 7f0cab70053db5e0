//! Several clamd instances behind one scanner (`PF_CLAMD=tcp://a:3310,tcp://b:3310`): each
//! upload goes to the least busy one that answers; one that does not is passed over for a while.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ClamdScanner, ScanError, ScanSession, Scanner, Verdict};
use crate::config::ClamdAddress;

/// How long a scanner that did not answer is passed over before it is tried again.
const PASS_OVER: Duration = Duration::from_secs(30);

struct Member {
    name: String,
    scanner: ClamdScanner,
    busy: std::sync::Arc<AtomicUsize>,
    down_until: Mutex<Option<Instant>>,
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
    members: Vec<Member>,
}

impl ScannerPool {
    #[must_use]
    pub fn new(addresses: &[ClamdAddress], timeout: Duration) -> Self {
        Self {
            members: addresses
                .iter()
                .map(|a| Member {
                    name: a.to_string(),
                    scanner: ClamdScanner::new(a.clone(), timeout),
                    busy: std::sync::Arc::default(),
                    down_until: Mutex::new(None),
                })
                .collect(),
        }
    }
}

/// One unit of a scanner's load, given back when dropped (also when the upload is cancelled).
struct Load(std::sync::Arc<AtomicUsize>);

impl Load {
    fn take(busy: &std::sync::Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Self(std::sync::Arc::clone(busy))
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
        let mut order: Vec<&Member> = self.members.iter().collect();
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
        let mut last = None;
        for member in &self.members {
            match member.scanner.check().await {
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

    async fn states(&self) -> Vec<(String, bool)> {
        let mut out = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let up = member.scanner.check().await.is_ok();
            member.mark(up);
            out.push((member.name.clone(), up));
        }
        out
    }
}
