//! Reading a stored age file back as plaintext, whole or a range of it, as it streams from the
//! store: age's reader decrypts and authenticates one 64 KiB chunk at a time, and gives no byte
//! of a chunk that fails authentication.
//!
//! age's reader is synchronous. It reads here from a [`Feed`]: a positioned view of the stored
//! object that holds what the store has sent so far and answers `WouldBlock` when it holds
//! nothing more; the reader keeps its place, the stream is polled for more, and the read tried
//! again. A range starting in chunk `n > 0` reads the header, then asks the store for chunk
//! `n - 1` onward: the reader seeks into the last byte of chunk `n - 1` (so it authenticates
//! that chunk, with its counter, and never needs the object's end), and reads on from there.

#![allow(deprecated)] // age's X25519 identity: see age_file.rs.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::age_file::{self, CHUNK, SEALED_CHUNK};
use crate::keys::ObjectKey;
use crate::store::{BlobStore, StoreError};

/// The most header (and nonce) a stored file may have: one X25519 stanza takes about 200 bytes.
const HEADER_MAX: u64 = 4096;
/// Plaintext handed out per piece.
const PIECE: u64 = CHUNK;

/// What the feed holds of the stored object (`held`, from `start` on) and where the reader
/// is (`pos`; bytes fed ahead of a seek may start past it).
#[derive(Default)]
struct Window {
    pos: u64,
    start: u64,
    held: VecDeque<u8>,
    /// The stored object's size: reads at or past it are its end.
    len: u64,
}

impl Window {
    /// Where the held bytes end: the store's next bytes go there.
    fn next(&self) -> u64 {
        self.start + self.held.len() as u64
    }

    fn hold(&mut self, piece: &[u8]) {
        self.held.extend(piece);
    }

    /// Holds nothing, and takes the store's next bytes as starting at `at`.
    fn restart(&mut self, at: u64) {
        self.held.clear();
        self.start = at;
    }
}

#[derive(Clone, Default)]
struct Feed(Arc<Mutex<Window>>);

impl Feed {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.0.lock().expect("never poisoned: no panics while held")
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut w = self.window();
        if w.pos < w.start || w.pos > w.next() {
            let pos = w.pos;
            w.restart(pos);
        }
        // After a seek ahead within what is held.
        let skip = usize::try_from(w.pos - w.start).expect("held bytes fit in memory");
        w.held.drain(..skip);
        w.start = w.pos;
        if w.held.is_empty() {
            return if w.pos >= w.len {
                Ok(0)
            } else {
                Err(ErrorKind::WouldBlock.into())
            };
        }
        let n = buf.len().min(w.held.len());
        for (b, h) in buf.iter_mut().zip(w.held.drain(..n)) {
            *b = h;
        }
        w.pos += n as u64;
        w.start = w.pos;
        Ok(n)
    }
}

impl Seek for Feed {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let mut w = self.window();
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => w.pos.checked_add_signed(d),
            SeekFrom::End(d) => w.len.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidInput, "seek out of the object"))?;
        // Asking where it is (age does, to learn where the payload starts) moves nothing,
        // and keeps bytes fed ahead for a seek to come.
        if target != w.pos && (target < w.start || target > w.next()) {
            w.restart(target);
        }
        w.pos = target;
        Ok(target)
    }
}

/// Why a stored file could not be read back.
pub(super) enum Failure {
    Store(StoreError),
    /// The ciphertext failed authentication, or is not an age file for this identity.
    Unreadable(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn unreadable(e: &dyn std::fmt::Display) -> Failure {
    Failure::Unreadable(e.to_string())
}

/// One stored age file being read: the reader over the feed, and the store request feeding it.
pub(super) struct Opened {
    reader: age::stream::StreamReader<Feed>,
    feed: Feed,
    store: Arc<dyn BlobStore>,
    key: ObjectKey,
    source: Option<BoxStream<'static, Result<Bytes, StoreError>>>,
    /// Where the next byte of `source` lies in the object.
    source_at: u64,
    /// Where the bytes this read needs end in the object.
    need_end: u64,
    /// Plaintext still to hand out.
    remaining: u64,
}

/// What [`open`] found: the plaintext's size and the `ETag` of the stored object, and the
/// reader positioned at the range's first byte.
pub(super) struct Found {
    pub plain_size: u64,
    pub etag: Option<String>,
    pub opened: Opened,
}

/// Opens `key` for reading the plaintext `range` (all of it when `None`), decrypting with
/// `identity`. The chunk holding the range's first byte is authenticated before this returns,
/// so a file that fails from its start fails here, before any answer goes out.
pub(super) async fn open(
    store: Arc<dyn BlobStore>,
    key: &ObjectKey,
    identity: &age::x25519::Identity,
    range: Option<Range<u64>>,
) -> Result<Found, Failure> {
    let first_chunk = range.as_ref().map_or(0, |r| r.start / CHUNK);
    // The first request: the header, and the payload too when the range starts in chunk 0.
    let first = match &range {
        None => None,
        Some(r) if first_chunk == 0 => Some(0..HEADER_MAX + r.end.div_ceil(CHUNK) * SEALED_CHUNK),
        Some(_) => Some(0..HEADER_MAX),
    };
    let read = match store.read(key, first).await {
        Err(StoreError::RangeNotSatisfiable) => return Err(unreadable(&"the object is empty")),
        other => other?,
    };
    let feed = Feed::default();
    feed.window().len = read.object_size;
    let mut body = read.body;
    let reader = header_reader(&feed, &mut body, identity).await?;
    let header = feed.window().pos;
    let source_at = feed.window().next();
    let plain_size = age_file::plain_len(header, read.object_size)
        .ok_or_else(|| unreadable(&"the object's size is no age file's (truncated?)"))?;
    let mut opened = Opened {
        reader,
        feed,
        store,
        key: key.clone(),
        source: Some(body),
        source_at,
        need_end: read.object_size,
        remaining: 0,
    };
    let range = range.unwrap_or(0..plain_size);
    if range.start >= plain_size && plain_size > 0 {
        return Err(Failure::Store(StoreError::RangeNotSatisfiable));
    }
    let end = range.end.min(plain_size);
    let last_chunk = end.saturating_sub(1) / CHUNK;
    opened.need_end = age_file::chunk_offset(header, last_chunk + 1).min(read.object_size);
    if first_chunk > 0 {
        // Into the last byte of the chunk before: age authenticates that chunk, with its
        // counter, and reads on from there. Its bytes are fed first, so the seek never waits.
        let from = age_file::chunk_offset(header, first_chunk - 1);
        opened.source = None;
        opened.feed.window().restart(from);
        opened.fill_to(from + SEALED_CHUNK).await?;
        if let Err(e) = opened.reader.seek(SeekFrom::Start(first_chunk * CHUNK - 1)) {
            return Err(unreadable(&e));
        }
        opened.skip(1).await?;
    }
    opened.skip(range.start - first_chunk * CHUNK).await?;
    opened.remaining = end - range.start;
    Ok(Found {
        plain_size,
        etag: read.etag,
        opened,
    })
}

/// Feeds `body` into the feed until age can parse the header; returns the reader, with the
/// rest of what arrived left in the feed.
async fn header_reader(
    feed: &Feed,
    body: &mut BoxStream<'static, Result<Bytes, StoreError>>,
    identity: &age::x25519::Identity,
) -> Result<age::stream::StreamReader<Feed>, Failure> {
    loop {
        let (held, len) = {
            let w = feed.window();
            (w.next(), w.len)
        };
        if held >= HEADER_MAX.min(len) {
            break;
        }
        let Some(piece) = body.next().await else {
            break;
        };
        feed.window().hold(&piece?);
    }
    let decryptor = age::Decryptor::new(feed.clone()).map_err(|e| unreadable(&e))?;
    decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| unreadable(&e))
}

impl Opened {
    /// Brings the next piece from the store into the feed, asking the store again from where
    /// the feed needs bytes when the request in hand is not there (after a seek) or ended.
    async fn fill(&mut self) -> Result<(), Failure> {
        let next = self.feed.window().next();
        if next >= self.need_end {
            return Err(unreadable(&"the object ended before the file did"));
        }
        if self.source.is_none() || self.source_at != next {
            let read = self
                .store
                .read(&self.key, Some(next..self.need_end))
                .await?;
            self.source = Some(read.body);
            self.source_at = next;
        }
        let source = self.source.as_mut().expect("opened above");
        let Some(piece) = source.next().await else {
            self.source = None;
            return Err(unreadable(&"the object ended before the file did"));
        };
        let piece = piece?;
        self.source_at += piece.len() as u64;
        self.feed.window().hold(&piece);
        Ok(())
    }

    /// Fills the feed until it holds the object's bytes up to `end` (or its end).
    async fn fill_to(&mut self, end: u64) -> Result<(), Failure> {
        while self.feed.window().next() < end.min(self.need_end) {
            self.fill().await?;
        }
        Ok(())
    }

    /// Reads and drops `n` bytes of plaintext.
    async fn skip(&mut self, n: u64) -> Result<(), Failure> {
        self.remaining = n;
        while self.next_piece().await?.is_some() {}
        Ok(())
    }

    /// The next piece of plaintext of the range, authenticated; `None` once it is all out.
    pub(super) async fn next_piece(&mut self) -> Result<Option<Bytes>, Failure> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut buf = vec![0; usize::try_from(self.remaining.min(PIECE)).expect("64 KiB")];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return Err(unreadable(&"the file ended before the range did")),
                Ok(n) => {
                    self.remaining -= n as u64;
                    buf.truncate(n);
                    return Ok(Some(Bytes::from(buf)));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.fill().await?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(unreadable(&e)),
            }
        }
    }
}
