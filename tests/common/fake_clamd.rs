//! A clamd stand-in on a loopback port that misbehaves on purpose: it never answers, answers an
//! error, ends the stream early with clamd's own words, or answers late. It speaks enough of
//! the INSTREAM protocol (`zINSTREAM\0`, length-prefixed chunks, a zero length at the end) to be
//! a real peer for the service's scanner, and counts the scan sessions it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Reads the whole stream, then says nothing and keeps the connection open.
    NeverAnswers,
    /// Reads the whole stream, then answers this (clamd ends replies with `\0`).
    Answers(&'static str),
    /// Reads the whole stream, waits, then answers this.
    AnswersAfter(Duration, &'static str),
    /// Reads the whole stream, then answers this once every party of the barrier (shared by
    /// several fakes) has read its own: the sessions overlap however slowly they arrive.
    AnswersTogether(Arc<tokio::sync::Barrier>, &'static str),
    /// Reads this many bytes of chunk data, answers clamd's `StreamMaxLength` error and closes,
    /// as clamd does.
    EndsEarlyAfter(usize),
    /// Reads the whole stream, then answers this once the gate reads `true`: a scan that
    /// stalls for as long as a test needs, and ends when it says so.
    AnswersWhenOpen(tokio::sync::watch::Receiver<bool>, &'static str),
}

pub struct FakeClamd {
    pub address: String,
    sessions: Arc<AtomicUsize>,
    /// INSTREAM sessions whose stream this fake read to its end marker.
    read: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeClamd {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("tcp://{}", listener.local_addr().unwrap());
        let sessions = Arc::new(AtomicUsize::new(0));
        let read = Arc::new(AtomicUsize::new(0));
        let counted = (Arc::clone(&sessions), Arc::clone(&read));
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(
                    socket,
                    behaviour.clone(),
                    (Arc::clone(&counted.0), Arc::clone(&counted.1)),
                ));
            }
        });
        Self {
            address,
            sessions,
            read,
            task,
        }
    }

    /// INSTREAM sessions seen so far (PING and VERSION not counted).
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Streams read to their end marker so far.
    pub fn streams_read(&self) -> usize {
        self.read.load(Ordering::SeqCst)
    }
}

impl Drop for FakeClamd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads chunks until the end marker (or until `limit` data bytes were read); returns whether
/// the end marker came.
async fn read_chunks(socket: &mut TcpStream, limit: Option<usize>) -> std::io::Result<bool> {
    let mut total = 0usize;
    loop {
        let mut len = [0u8; 4];
        socket.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            return Ok(true);
        }
        let mut chunk = vec![0u8; len];
        socket.read_exact(&mut chunk).await?;
        total += len;
        if limit.is_some_and(|l| total >= l) {
            return Ok(false);
        }
    }
}

async fn serve(
    mut socket: TcpStream,
    behaviour: Behaviour,
    (sessions, read): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) {
    let mut command = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if socket.read_exact(&mut b).await.is_err() {
            return;
        }
        if b[0] == 0 {
            break;
        }
        command.push(b[0]);
    }
    match command.as_slice() {
        b"zPING" | b"PING" => {
            let _ = socket.write_all(b"PONG\0").await;
            return;
        }
        b"zVERSION" | b"VERSION" => {
            let _ = socket.write_all(b"ClamAV 0.0.0-fake\0").await;
            return;
        }
        b"zINSTREAM" => {
            sessions.fetch_add(1, Ordering::SeqCst);
        }
        _ => {
            let _ = socket.write_all(b"UNKNOWN COMMAND\0").await;
            return;
        }
    }
    let limit = match behaviour {
        Behaviour::EndsEarlyAfter(n) => Some(n),
        _ => None,
    };
    match read_chunks(&mut socket, limit).await {
        Err(_) => return,
        Ok(true) => {
            read.fetch_add(1, Ordering::SeqCst);
        }
        Ok(false) => {}
    }
    match behaviour {
        Behaviour::NeverAnswers => {
            // Hold the connection open, unanswered, until the client gives up.
            let mut sink = Vec::new();
            let _ = socket.read_to_end(&mut sink).await;
        }
        Behaviour::Answers(reply) => {
            let _ = socket.write_all(format!("{reply}\0").as_bytes()).await;
        }
        Behaviour::AnswersAfter(wait, reply) => {
            tokio::time::sleep(wait).await;
            let _ = socket.write_all(format!("{reply}\0").as_bytes()).await;
        }
        Behaviour::AnswersTogether(barrier, reply) => {
            // Bounded, so a test whose sessions never all come fails instead of hanging.
            if tokio::time::timeout(Duration::from_secs(30), barrier.wait())
                .await
                .is_ok()
            {
                let _ = socket.write_all(format!("{reply}\0").as_bytes()).await;
            }
        }
        Behaviour::EndsEarlyAfter(_) => {
            let _ = socket
                .write_all(b"INSTREAM size limit exceeded. ERROR\0")
                .await;
            let _ = socket.shutdown().await;
        }
        Behaviour::AnswersWhenOpen(mut gate, reply) => {
            if gate.wait_for(|open| *open).await.is_ok() {
                let _ = socket.write_all(format!("{reply}\0").as_bytes()).await;
            }
        }
    }
}
