//! Virus scanners: a scan session receives the bytes of one upload and gives a verdict.

mod clamd;
mod pool;
mod transport;

use async_trait::async_trait;
use bytes::Bytes;

pub use clamd::{ClamdScanner, INSTREAM_CHUNK, parse_reply};
pub use pool::ScannerPool;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature the scanner named, e.g. `Eicar-Signature`.
    Infected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unreachable")]
    Unreachable(#[source] std::io::Error),
    #[error("scanner timed out")]
    Timeout,
    #[error("scanner answered with an error: {0}")]
    Failed(String),
}

#[async_trait]
pub trait Scanner: Send + Sync {
    /// Opens a session for one upload.
    async fn session(&self) -> Result<Box<dyn ScanSession>, ScanError>;

    /// Answers when the scanner can be reached.
    async fn check(&self) -> Result<(), ScanError>;

    /// Each scanner behind this one, named by position, and whether it answered when last
    /// asked (`None`: not asked yet), for `/ready` and `/metrics`.
    async fn states(&self) -> Vec<(String, Option<bool>)> {
        vec![("scanner 1".to_owned(), Some(self.check().await.is_ok()))]
    }

    /// Memory one session holds in its queues, which the pipeline reserves from the budget.
    fn buffer_memory(&self) -> usize {
        0
    }
}

#[async_trait]
pub trait ScanSession: Send {
    async fn feed(&mut self, chunk: Bytes) -> Result<(), ScanError>;

    /// Waits for the verdict on everything fed so far (once).
    async fn finish(&mut self) -> Result<Verdict, ScanError>;

    /// The engine and signature version of the scanner that gave the verdict (clamd's
    /// `VERSION`), asked right after it.
    async fn version(&mut self) -> Result<String, ScanError>;
}
