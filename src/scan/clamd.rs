//! `ClamdScanner`: ClamAV's clamd over INSTREAM (clamav-client), fed while the upload is stored,
//! with the verdict read after the last byte. clamd's reply is parsed here: `... OK` is clean,
//! `... FOUND` infected, anything else an error, so an unscanned stream never passes as clean.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use clamav_client::tokio::{Socket, Tcp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::transport::{ClamdRefused, WatchfulTcp, WatchfulUnix};
use super::{ScanError, ScanSession, Scanner, Verdict};
use crate::config::ClamdAddress;

/// The size of every INSTREAM chunk but the last; chunks are cut at fixed offsets so that
/// where a signature falls across them does not depend on how the client sent its body.
pub const INSTREAM_CHUNK: usize = 64 * 1024;

/// How many chunks may wait for clamd; a slower clamd holds the upload back beyond that.
const QUEUED_CHUNKS: usize = 2;

pub struct ClamdScanner {
    address: ClamdAddress,
    timeout: Duration,
}

impl ClamdScanner {
    #[must_use]
    pub fn new(address: ClamdAddress, timeout: Duration) -> Self {
        Self { address, timeout }
    }
}

type Reply = Result<Vec<u8>, std::io::Error>;

async fn instream(
    address: ClamdAddress,
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> Reply {
    let stream = ReceiverStream::new(rx);
    match address {
        ClamdAddress::Tcp(host) => {
            clamav_client::tokio::scan_stream(stream, WatchfulTcp(host), Some(INSTREAM_CHUNK)).await
        }
        ClamdAddress::Unix(path) => {
            clamav_client::tokio::scan_stream(stream, WatchfulUnix(path), Some(INSTREAM_CHUNK))
                .await
        }
    }
}

/// The scan failed on the way: clamd's own reason when it gave one, else the I/O error.
fn stream_failed(e: std::io::Error) -> ScanError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ClamdRefused>())
    {
        Some(ClamdRefused(reason)) => ScanError::Failed(reason.chars().take(200).collect()),
        None => ScanError::Unreachable(e),
    }
}

/// clamd's `VERSION`, like `ClamAV 1.4.6/27480/Tue Dec  1 09:29:01 2026`.
async fn version(address: &ClamdAddress, timeout: Duration) -> Result<String, ScanError> {
    let reply = tokio::time::timeout(timeout, async {
        match address {
            ClamdAddress::Tcp(host) => {
                clamav_client::tokio::get_version(Tcp {
                    host_address: host.as_str(),
                })
                .await
            }
            ClamdAddress::Unix(path) => {
                clamav_client::tokio::get_version(Socket {
                    socket_path: PathBuf::from(path),
                })
                .await
            }
        }
    })
    .await
    .map_err(|_| ScanError::Timeout)?
    .map_err(ScanError::Unreachable)?;
    let text = String::from_utf8_lossy(&reply);
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    // Only what a version string holds: it goes into every row and response.
    if text.is_empty() || text.len() > 200 || text.chars().any(char::is_control) {
        return Err(ScanError::Failed("clamd gave no usable VERSION".to_owned()));
    }
    Ok(text.to_owned())
}

/// Reads clamd's INSTREAM reply (`stream: OK`, `stream: NAME FOUND`, `... ERROR`).
pub fn parse_reply(reply: &[u8]) -> Result<Verdict, ScanError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    let body = text.strip_prefix("stream: ").unwrap_or(text);
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    if let Some(name) = body.strip_suffix(" FOUND")
        && !name.is_empty()
        && !name.contains(['\n', '\0'])
    {
        return Ok(Verdict::Infected(name.to_owned()));
    }
    Err(ScanError::Failed(text.chars().take(200).collect()))
}

#[async_trait]
impl Scanner for ClamdScanner {
    async fn session(&self) -> Result<Box<dyn ScanSession>, ScanError> {
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let task = tokio::spawn(instream(self.address.clone(), rx));
        Ok(Box::new(ClamdSession {
            address: self.address.clone(),
            tx: Some(tx),
            task: Some(task),
            pending: BytesMut::new(),
            timeout: self.timeout,
        }))
    }

    fn buffer_memory(&self) -> usize {
        // The queue, the chunk being cut, and the one clamav-client is sending.
        (QUEUED_CHUNKS + 2) * INSTREAM_CHUNK
    }

    async fn check(&self) -> Result<(), ScanError> {
        self.ping(self.timeout).await
    }
}

impl ClamdScanner {
    /// PING, answered with PONG within `timeout`.
    pub(super) async fn ping(&self, timeout: Duration) -> Result<(), ScanError> {
        let reply = tokio::time::timeout(timeout, async {
            match &self.address {
                ClamdAddress::Tcp(host) => {
                    clamav_client::tokio::ping(Tcp {
                        host_address: host.as_str(),
                    })
                    .await
                }
                ClamdAddress::Unix(path) => {
                    clamav_client::tokio::ping(Socket {
                        socket_path: PathBuf::from(path),
                    })
                    .await
                }
            }
        })
        .await
        .map_err(|_| ScanError::Timeout)?
        .map_err(ScanError::Unreachable)?;
        if reply == clamav_client::PONG {
            Ok(())
        } else {
            Err(ScanError::Failed(
                "clamd did not answer PING with PONG".to_owned(),
            ))
        }
    }
}

struct ClamdSession {
    address: ClamdAddress,
    tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    task: Option<JoinHandle<Reply>>,
    pending: BytesMut,
    timeout: Duration,
}

impl ClamdSession {
    /// The INSTREAM task ended before it was given everything: its error says why.
    async fn failure(&mut self) -> ScanError {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => stream_failed(e),
                Ok(Ok(reply)) => match parse_reply(&reply) {
                    Err(e) => e,
                    Ok(_) => ScanError::Failed("clamd answered before the stream ended".to_owned()),
                },
                Err(e) => ScanError::Failed(format!("scan task failed: {e}")),
            },
            None => ScanError::Failed("scan session already closed".to_owned()),
        }
    }

    async fn send(&mut self, chunk: Bytes) -> Result<(), ScanError> {
        let tx = self.tx.as_ref().expect("feed after finish");
        match tokio::time::timeout(self.timeout, tx.send(Ok(chunk))).await {
            Err(_) => Err(ScanError::Timeout),
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.failure().await),
        }
    }
}

#[async_trait]
impl ScanSession for ClamdSession {
    async fn feed(&mut self, chunk: Bytes) -> Result<(), ScanError> {
        self.pending.extend_from_slice(&chunk);
        while self.pending.len() >= INSTREAM_CHUNK {
            let full = self.pending.split_to(INSTREAM_CHUNK).freeze();
            self.send(full).await?;
        }
        Ok(())
    }

    async fn version(&mut self) -> Result<String, ScanError> {
        version(&self.address, self.timeout).await
    }

    async fn finish(&mut self) -> Result<Verdict, ScanError> {
        let rest = std::mem::take(&mut self.pending).freeze();
        if !rest.is_empty() {
            self.send(rest).await?;
        }
        // Closing the channel ends the stream; clamd scans what it spooled and answers.
        drop(self.tx.take());
        let task = self.task.take().expect("finish once");
        match tokio::time::timeout(self.timeout, task).await {
            Err(_) => Err(ScanError::Timeout),
            Ok(Err(e)) => Err(ScanError::Failed(format!("scan task failed: {e}"))),
            Ok(Ok(Err(e))) => Err(stream_failed(e)),
            Ok(Ok(Ok(reply))) => parse_reply(&reply),
        }
    }
}

impl Drop for ClamdSession {
    fn drop(&mut self) {
        // An upload abandoned mid-way: stop streaming it to clamd.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert!(matches!(parse_reply(b"stream: OK\0"), Ok(Verdict::Clean)));
        assert!(matches!(
            parse_reply(b"stream: Eicar-Test.UNOFFICIAL FOUND\0"),
            Ok(Verdict::Infected(name)) if name == "Eicar-Test.UNOFFICIAL"
        ));
        assert!(matches!(
            parse_reply(b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0"),
            Ok(Verdict::Infected(name)) if name == "Heuristics.Limits.Exceeded.MaxFileSize"
        ));
        for bad in [
            &b"INSTREAM size limit exceeded. ERROR\0"[..],
            b"",
            b"stream: ",
            b"OK-ish",
            b"stream: FOUND",
            b"stream: something OK but not",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
