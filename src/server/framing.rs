//! A second reading of each request's framing, to refuse one with both `Content-Length` and
//! `Transfer-Encoding` (RFC 9112 6.1: behind a proxy that reads the other one, that is request
//! smuggling).
//!
//! hyper reads such a request by its `Transfer-Encoding` and drops `Content-Length` before the
//! service sees the head, so nothing after hyper can tell it apart. [`Framing`] follows the bytes
//! the connection reads: each head, then its body by length or by chunks, and notes for each head
//! whether it had both. When it cannot follow (a head it cannot parse, a malformed chunk) it
//! stops judging that connection: it never calls a request ambiguous on a guess.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::http::error::ApiError;

/// A head longer than this is refused by hyper long before (its buffer is about 400 KiB).
const MAX_HEAD: usize = 512 * 1024;
/// hyper takes at most 100 header fields.
const MAX_HEADERS: usize = 128;
/// A chunk-size line with its extensions, or one trailer field.
const MAX_LINE: usize = 8 * 1024;

/// For each request head read, in order: whether it had both headers.
#[derive(Default)]
pub(super) struct Verdicts(Mutex<VecDeque<bool>>);

impl Verdicts {
    /// Whether the request hyper hands over next had both headers. hyper hands over requests
    /// in the order their heads arrived, and only after reading a head whole, so its verdict is
    /// in by then.
    pub(super) fn next_is_ambiguous(&self) -> bool {
        self.queue().pop_front().unwrap_or(false)
    }

    fn push(&self, ambiguous: bool) {
        self.queue().push_back(ambiguous);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<bool>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

enum State {
    /// Before or inside a request head.
    Head,
    /// A body of known length: the bytes left.
    Fixed(u64),
    /// A chunk-size line.
    ChunkSize,
    /// A chunk's data: the bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data: how much of it was read.
    ChunkEnd(usize),
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    /// Lost track: nothing more is judged on this connection.
    Lost,
}

/// Follows one connection's request framing.
pub(super) struct Framing {
    state: State,
    /// The head, line or trailer field read so far.
    buf: Vec<u8>,
    verdicts: Arc<Verdicts>,
}

impl Framing {
    pub(super) fn new(verdicts: Arc<Verdicts>) -> Self {
        Self {
            state: State::Head,
            buf: Vec::new(),
            verdicts,
        }
    }

    /// Follows `bytes`, the next ones the connection read.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = self.step(bytes);
        }
    }

    fn step<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        match self.state {
            State::Lost => &[],
            State::Fixed(left) => {
                let (rest, left) = skip(bytes, left);
                self.state = if left == 0 {
                    State::Head
                } else {
                    State::Fixed(left)
                };
                rest
            }
            State::ChunkData(left) => {
                let (rest, left) = skip(bytes, left);
                self.state = if left == 0 {
                    State::ChunkEnd(0)
                } else {
                    State::ChunkData(left)
                };
                rest
            }
            State::ChunkEnd(read) => {
                if bytes[0] != b"\r\n"[read] {
                    self.state = State::Lost;
                } else if read == 1 {
                    self.state = State::ChunkSize;
                } else {
                    self.state = State::ChunkEnd(1);
                }
                &bytes[1..]
            }
            State::Head => {
                // Empty lines before a request line are ignored (RFC 9112 2.2), as hyper does.
                let bytes = if self.buf.is_empty() {
                    let start = bytes
                        .iter()
                        .position(|b| !matches!(b, b'\r' | b'\n'))
                        .unwrap_or(bytes.len());
                    &bytes[start..]
                } else {
                    bytes
                };
                if bytes.is_empty() {
                    return bytes;
                }
                self.collect(bytes, b"\r\n\r\n", MAX_HEAD, Self::head)
            }
            State::ChunkSize => {
                self.collect(
                    bytes,
                    b"\n",
                    MAX_LINE,
                    |this| match httparse::parse_chunk_size(&this.buf) {
                        Ok(httparse::Status::Complete((_, 0))) => State::Trailers,
                        Ok(httparse::Status::Complete((_, size))) => State::ChunkData(size),
                        _ => State::Lost,
                    },
                )
            }
            State::Trailers => self.collect(bytes, b"\n", MAX_LINE, |this| {
                if matches!(this.buf.as_slice(), b"\r\n" | b"\n") {
                    State::Head
                } else {
                    State::Trailers
                }
            }),
        }
    }

    /// Gathers bytes into `buf` up to and including `end`, then moves on to the state `then`
    /// makes of them. Returns the bytes after `end`; none while `end` has not come yet.
    fn collect<'a>(
        &mut self,
        bytes: &'a [u8],
        end: &[u8],
        max: usize,
        then: impl FnOnce(&Self) -> State,
    ) -> &'a [u8] {
        let old = self.buf.len();
        let from = old.saturating_sub(end.len() - 1);
        self.buf.extend_from_slice(bytes);
        let Some(at) = self.buf[from..].windows(end.len()).position(|w| w == end) else {
            if self.buf.len() > max {
                self.lose();
            }
            return &[];
        };
        let close = from + at + end.len();
        self.buf.truncate(close);
        self.state = then(self);
        self.buf.clear();
        &bytes[close - old..]
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.buf = Vec::new();
    }

    /// A whole head in `buf`: its verdict, and how its body is framed.
    fn head(&self) -> State {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut fields);
        if !matches!(request.parse(&self.buf), Ok(httparse::Status::Complete(_))) {
            return State::Lost;
        }
        let mut length: Option<Option<u64>> = None;
        let mut chunked: Option<bool> = None;
        for field in request.headers.iter() {
            if field.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(field.value).ok().map(str::trim);
                let parsed = value
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok());
                length = match length {
                    Some(prev) if prev != parsed => Some(None),
                    _ => Some(parsed),
                };
            } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
                // As hyper reads it: chunked when the last coding of the last field is.
                let last = field
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        self.verdicts.push(length.is_some() && chunked.is_some());
        match (chunked, length) {
            (Some(true), _) => State::ChunkSize,
            // hyper refuses these and closes the connection.
            (Some(false), _) | (None, Some(None)) => State::Lost,
            (None, Some(Some(0)) | None) => State::Head,
            (None, Some(Some(n))) => State::Fixed(n),
        }
    }
}

/// Skips up to `left` bytes: what follows them, and how many are still to come.
fn skip(bytes: &[u8], left: u64) -> (&[u8], u64) {
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
    (&bytes[n..], left - n as u64)
}

/// The answer to a request with both headers: 400 in Bridge's shape, and the connection closed
/// after it. What the client sent of the body is read first (a little, briefly), so that the
/// close does not reset the connection before the client has read the answer.
pub(super) async fn refuse(req: hyper::Request<hyper::body::Incoming>) -> Response {
    tracing::warn!("refused a request with both Content-Length and Transfer-Encoding");
    let mut body = req.into_body();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut left: usize = 64 * 1024;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, bytes::Bytes::len);
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
    let mut res = ApiError::bad_request(
        "A request may carry Content-Length or Transfer-Encoding, not both (RFC 9112, section 6.1).",
    )
    .into_response();
    // Answers that go through the router get their length from axum; this one does not.
    let length = hyper::body::Body::size_hint(res.body()).exact();
    let h = res.headers_mut();
    if let Some(n) = length {
        h.insert(header::CONTENT_LENGTH, n.into());
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the verdicts and whether it lost track.
    fn follow(input: &[u8], step: usize) -> (Vec<bool>, bool) {
        let verdicts = Arc::new(Verdicts::default());
        let mut framing = Framing::new(Arc::clone(&verdicts));
        for piece in input.chunks(step) {
            framing.feed(piece);
        }
        let lost = matches!(framing.state, State::Lost);
        let out = verdicts.queue().iter().copied().collect();
        (out, lost)
    }

    const STEPS: [usize; 5] = [1, 2, 3, 7, 1 << 20];

    #[test]
    fn a_head_with_both_is_found_in_either_order_after_other_requests() {
        let input = [
            &b"\r\nPUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n\r\n"[..],
            // A body that looks like a head with both: skipped by its length.
            b"GET / HTTP/1.1\r\nContent-Leng",
            b"th: 1\r\n",
            b"PUT /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n",
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PUT /d HTTP/1.1\r\ncontent-length: 5\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n",
            b"PUT /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            b"GET /f HTTP/1.1\r\n\r\n",
        ]
        .concat();
        for step in STEPS {
            assert_eq!(
                follow(&input, step),
                (vec![false, false, false, true, true, false], false),
                "in pieces of {step}"
            );
        }
    }

    #[test]
    fn what_it_cannot_follow_stops_the_judging() {
        for input in [
            &b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"NOT A REQUEST\r\n\r\n",
        ] {
            for step in STEPS {
                let (_, lost) = follow(input, step);
                assert!(
                    lost,
                    "{:?} in pieces of {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(follow(&long, 4096), (vec![], true));
    }
}
