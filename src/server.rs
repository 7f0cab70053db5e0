//! The listener: HTTP/1.1 connections with a header deadline, an idle timeout and a cap.
//!
//! The deadlines follow Go's `net/http` (`ReadHeaderTimeout`, `IdleTimeout`) rather than
//! hyper's own header timer, which starts when a kept-alive connection goes idle and so makes
//! the idle timeout no longer than the header deadline. Here:
//! - a new connection has `header_read_timeout` from its accept to send a whole request head;
//! - after a response, a kept-alive connection waits at most `idle_timeout` for the next
//!   request's first byte, and from that byte has `header_read_timeout` for the rest of the head;
//! - while a request is in flight (its body arriving, or its response going out) neither
//!   applies: a slow upload is `PF_CLIENT_TIMEOUT`'s business, and a long download is not cut.
//!
//! At most `max_connections` are held at once; beyond that a connection is answered 503 and
//! closed, so that the process never runs out of file descriptors and `accept` keeps working.
//!
//! A request with both `Content-Length` and `Transfer-Encoding` is answered 400 and its
//! connection closed ([`framing`]).

mod framing;

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Deadlines and the cap of the listener (`PF_HEADER_READ_TIMEOUT`, `PF_IDLE_TIMEOUT`,
/// `PF_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            max_connections: 512,
        }
    }
}

/// How many refusals may be in the middle of being written at once; past it, the excess is
/// closed without a word rather than holding more descriptors.
const MAX_REFUSALS: usize = 64;

/// Accepts connections until `shutdown` completes, each served in a task of `connections`.
/// Then stops accepting (the listener is closed) and tells every connection, through `stop`,
/// to finish its request in flight and close.
pub async fn accept(
    router: Router,
    listener: TcpListener,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait for some to be freed
                    // instead of spinning on an accept that fails at once.
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                connections.spawn(serve_connection(
                    stream,
                    router.clone(),
                    limits,
                    stop.clone(),
                    slot,
                ));
            }
            Err(_) => {
                if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                    tokio::spawn(refuse(stream, permit));
                }
            }
        }
    }
    stop.cancel();
}

/// Answers a connection over the cap with 503 in Bridge's error shape, and closes it.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    const BODY: &str = r#"{"statusCode":503,"message":"The service has too many connections open; try again shortly.","type":"ServiceUnavailableException"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing: closing with unread bytes would reset
        // the connection, and the client might never see the answer.
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let verdicts = Arc::new(framing::Verdicts::default());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
        framing: framing::Framing::new(Arc::clone(&verdicts)),
    });
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let busy = Busy::start(&requests);
        let ambiguous = verdicts.next_is_ambiguous();
        async move {
            let response = if ambiguous {
                Ok(framing::refuse(req).await)
            } else {
                tower::ServiceExt::oneshot(router, req).await
            };
            // The request counts as in flight until its response body has gone out (or the
            // connection with it): hyper drops the body once it is written.
            response.map(|r| {
                r.map(|body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _in_flight = &busy;
                        frame
                    }))
                })
            })
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    // hyper's own header timer is left off: the watch below keeps the deadlines, see above.
    builder.http1().keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    // Nothing is in flight: dropping the connection just closes the socket.
                    return;
                }
            }
            () = stop.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its deadlines.
struct Activity {
    phase: Mutex<Phase>,
    /// Told when the connection goes idle, so the watch starts its idle clock.
    changed: Notify,
}

struct Phase {
    in_flight: usize,
    /// When the connection was accepted, or when its last response went out.
    since: Instant,
    /// Whether a request was served yet (its first head has its own deadline).
    served: bool,
    /// The first byte received since `since`, on a kept-alive connection.
    first_byte: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase {
                in_flight: 0,
                since: Instant::now(),
                served: false,
                first_byte: None,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed if nothing changes; `None` while a request is in
    /// flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let p = self.phase();
        if p.in_flight > 0 {
            None
        } else if !p.served {
            Some(p.since + limits.header_read_timeout)
        } else if let Some(first) = p.first_byte {
            Some(first + limits.header_read_timeout)
        } else {
            Some(p.since + limits.idle_timeout)
        }
    }

    fn received(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.served && p.first_byte.is_none() {
            p.first_byte = Some(Instant::now());
        }
    }
}

/// A request in flight on its connection; dropped when its response is done.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        let mut p = activity.phase();
        p.in_flight += 1;
        p.served = true;
        drop(p);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut p = self.0.phase();
        p.in_flight -= 1;
        if p.in_flight == 0 {
            p.since = Instant::now();
            p.first_byte = None;
            drop(p);
            self.0.changed.notify_one();
        }
    }
}

/// The socket, noting when bytes arrive, and following the requests' framing.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    framing: framing::Framing,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
            self.framing.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
