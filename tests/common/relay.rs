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
}

impl Relay {
    pub async fn start() -> Self {
        let port = super::closed_port();
        let mut relay = Self {
            port,
            task: None,
            held: tokio::sync::watch::channel(false).0,
            accepted: std::sync::Arc::default(),
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
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let target = target.clone();
                let mut held = held.subscribe();
                tokio::spawn(async move {
                    let _ = held.wait_for(|h| !h).await;
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}
