//! Connections to clamd that keep clamd's reason when it ends a stream early.
//!
//! clamd refuses a stream mid-way (over `StreamMaxLength`, say) by writing its reason and
//! closing the connection; clamav-client sends the whole stream before it reads, so all it sees
//! is a broken pipe. These transports read what clamd said when a write fails, and return it as
//! the error ([`ClamdRefused`]), so that the log names the real cause. (Data that arrived before
//! a reset stays readable on Linux.)

use std::io;
use std::path::PathBuf;

use std::pin::Pin;
use std::task::{Context, Poll};

use clamav_client::tokio::TransportProtocol;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// What clamd wrote before it closed a stream it would not take.
#[derive(Debug, thiserror::Error)]
#[error("clamd ended the stream: {0}")]
pub struct ClamdRefused(pub String);

/// A connection whose failed writes carry what clamd said, when it said anything.
pub struct Watchful<S> {
    inner: S,
    /// A write failed with this; what clamd sent before closing is read before it is reported.
    failed: Option<io::Error>,
}

impl<S> Watchful<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            failed: None,
        }
    }
}

impl<S: AsyncRead + Unpin> Watchful<S> {
    /// After a write failed: reads what clamd wrote before it closed (still readable after a
    /// reset), and turns it into the error.
    fn poll_reason(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let mut buf = [0u8; 512];
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                let text = String::from_utf8_lossy(read.filled())
                    .trim_end_matches(['\0', '\n', '\r', ' '])
                    .to_owned();
                self.failed = None;
                Poll::Ready(io::Error::other(ClamdRefused(text)))
            }
            Poll::Ready(_) => Poll::Ready(
                self.failed
                    .take()
                    .unwrap_or_else(|| io::Error::other("clamd closed the connection")),
            ),
        }
    }

    fn fail(&mut self, cx: &mut Context<'_>, e: io::Error) -> Poll<io::Error> {
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Poll::Ready(e);
        }
        self.failed = Some(e);
        self.poll_reason(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watchful<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watchful<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.failed.is_some() {
            return self.poll_reason(cx).map(Err);
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => self.fail(cx, e).map(Err),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed.is_some() {
            return self.poll_reason(cx).map(Err);
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => self.fail(cx, e).map(Err),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// clamd over TCP, `host:port`.
pub struct WatchfulTcp(pub String);

impl TransportProtocol for WatchfulTcp {
    type Stream = Watchful<TcpStream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        TcpStream::connect(self.0.as_str()).await.map(Watchful::new)
    }
}

/// clamd over a Unix socket.
pub struct WatchfulUnix(pub PathBuf);

impl TransportProtocol for WatchfulUnix {
    type Stream = Watchful<UnixStream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        UnixStream::connect(&self.0).await.map(Watchful::new)
    }
}
