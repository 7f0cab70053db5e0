//! A TCP relay to the test clamd that a test switches off and on, or holds: the scanner going
//! down, coming back, or stalling, as the service sees it.

fn clamd() -> String {
    std::env::var("PF_TEST_CLAMD").expect(
        "PF_TEST_CLAMD is not set: run the suite with scripts/test, which installs and starts clamd on loopback",
    )
}

/// A TCP relay to clamd that can be switched off (connections refused) and on again, on one
/// port: clamd going down and coming back, as the service sees it.
/// It can also hold the connections it accepts (clamd slow to start a scan): a scan then waits
/// with its bytes half read.
pub struct Relay {
    port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
    held: tokio::sync::watch::Sender<bool>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes passed on to clamd, over every connection.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bumped to close every connection open now.
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    pub async fn start() -> Self {
        let port = super::closed_port();
        let mut relay = Self {
            port,
            task: None,
            held: tokio::sync::watch::channel(false).0,
            accepted: std::sync::Arc::default(),
            sent: std::sync::Arc::default(),
            cut: tokio::sync::watch::channel(0).0,
        };
        relay.up().await;
        relay
    }

    pub async fn up(&mut self) {
        let target = clamd().trim_start_matches("tcp://").to_owned();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (held, accepted) = (self.held.clone(), std::sync::Arc::clone(&self.accepted));
        let (sent, cut) = (std::sync::Arc::clone(&self.sent), self.cut.clone());
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let target = target.clone();
                let mut held = held.subscribe();
                let mut cut = cut.subscribe();
                cut.mark_unchanged();
                let sent = std::sync::Arc::clone(&sent);
                tokio::spawn(async move {
                    let _ = held.wait_for(|h| !h).await;
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        () = pass(inbound, outbound, &sent) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        }));
    }

    pub async fn down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Holds every connection accepted from now on (`true`), or lets them all through.
    pub fn hold(&self, held: bool) {
        self.held.send_replace(held);
    }

    /// Closes every connection open now, as clamd does with a stream silent for too long.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Bytes passed on to clamd so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

/// Passes bytes both ways until either side closes, counting those sent to clamd.
async fn pass(
    inbound: tokio::net::TcpStream,
    outbound: tokio::net::TcpStream,
    sent: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match in_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        let _ = out_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
        let _ = in_write.shutdown().await;
    };
    tokio::join!(up, down);
}
