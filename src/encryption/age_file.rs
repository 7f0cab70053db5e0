//! The age format as the service writes it: a participant's identity from their data key, the
//! encrypting writer, and the arithmetic between plaintext and ciphertext sizes.
//!
//! An age file is a header (one X25519 stanza here, and a random "grease" stanza age adds to
//! keep parsers honest: a few hundred bytes), a 16-byte nonce, and the payload in chunks of
//! 64 KiB plaintext, each followed by its 16-byte tag; the last chunk is the only short one
//! (empty only for an empty file).

// age 0.13 calls its X25519 recipient "classic" and deprecates it in favour of a post-quantum
// hybrid; X25519 is what every age tool (age 1.0+, rage) reads, which README promises.
#![allow(deprecated)]

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use age::x25519::{Identity, Recipient};
use bytes::Bytes;

use super::DataKey;

/// Plaintext bytes per chunk.
pub const CHUNK: u64 = 64 * 1024;
/// Bytes of tag each chunk carries.
pub const TAG: u64 = 16;
/// A chunk as stored.
pub const SEALED_CHUNK: u64 = CHUNK + TAG;

/// The age identity of a participant: their data key is the X25519 secret, as age's
/// `AGE-SECRET-KEY-1...` encoding names it.
pub fn identity(key: &DataKey) -> Identity {
    Identity::from_str(&identity_text(key)).expect("32 bytes make a valid X25519 identity")
}

/// The identity in age's text form (an identity file's line). A secret: never logged.
pub fn identity_text(key: &DataKey) -> String {
    let hrp = bech32::Hrp::parse("AGE-SECRET-KEY-").expect("a valid human-readable part");
    bech32::encode::<bech32::Bech32>(hrp, key.bytes())
        .expect("32 bytes are within Bech32's length")
        .to_uppercase()
}

pub fn recipient(key: &DataKey) -> Recipient {
    identity(key).to_public()
}

/// Chunks a plaintext of `len` bytes takes (an empty one takes one, empty).
fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK).max(1)
}

/// The stored size of a plaintext of `len` bytes under a header (and nonce) of `header` bytes.
pub fn sealed_len(header: u64, len: u64) -> u64 {
    header + len + TAG * chunks(len)
}

/// The plaintext size of a stored object of `sealed` bytes whose header (and nonce) is
/// `header` bytes; `None` when no plaintext has that stored size (a truncated object).
pub fn plain_len(header: u64, sealed: u64) -> Option<u64> {
    let payload = sealed.checked_sub(header)?;
    let chunks = payload.div_ceil(SEALED_CHUNK).max(1);
    let plain = payload.checked_sub(chunks * TAG)?;
    (chunks == self::chunks(plain)).then_some(plain)
}

/// Where the ciphertext of plaintext chunk `index` starts, after a header of `header` bytes.
pub fn chunk_offset(header: u64, index: u64) -> u64 {
    header + index * SEALED_CHUNK
}

/// What the age writer has produced and not yet been taken.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("never poisoned: no panics while held"))
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("never poisoned: no panics while held")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encrypts a stream of plaintext pieces into an age file, piece by piece: what goes in comes
/// out as whole sealed chunks (at most one chunk is held back), so memory stays bounded.
pub struct Sealer {
    writer: age::stream::StreamWriter<Output>,
    output: Output,
    header: u64,
}

impl Sealer {
    pub fn new(key: &DataKey) -> std::io::Result<Self> {
        let recipient = recipient(key);
        let output = Output::default();
        let writer = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
            .map_err(std::io::Error::other)?
            .wrap_output(output.clone())?;
        let header = output.0.lock().expect("not poisoned").len() as u64;
        Ok(Self {
            writer,
            output,
            header,
        })
    }

    /// The header's size (with the nonce): what the stored object adds before the payload.
    pub fn header_len(&self) -> u64 {
        self.header
    }

    /// Seals `plain`; returns the ciphertext ready so far (the header first, then whole chunks).
    pub fn push(&mut self, plain: &[u8]) -> std::io::Result<Bytes> {
        self.writer.write_all(plain)?;
        Ok(Bytes::from(self.output.take()))
    }

    /// Seals the last chunk; returns the rest of the ciphertext.
    pub fn finish(self) -> std::io::Result<Bytes> {
        let output = self.writer.finish()?;
        Ok(Bytes::from(output.take()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::from_bytes([byte; 32])
    }

    fn seal(key: &DataKey, plain: &[u8], piece: usize) -> (u64, Vec<u8>) {
        let mut sealer = Sealer::new(key).unwrap();
        let header = sealer.header_len();
        let mut out = Vec::new();
        for p in plain.chunks(piece.max(1)) {
            out.extend_from_slice(&sealer.push(p).unwrap());
        }
        out.extend_from_slice(&sealer.finish().unwrap());
        (header, out)
    }

    #[test]
    fn sizes_follow_from_the_plaintext_and_back() {
        let key = key(7);
        let c = usize::try_from(CHUNK).unwrap();
        for len in [0, 1, c - 1, c, c + 1, 2 * c, 3 * c + 17] {
            let plain: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let (header, sealed) = seal(&key, &plain, 10_000);
            assert_eq!(sealed.len() as u64, sealed_len(header, len as u64), "{len}");
            assert_eq!(plain_len(header, sealed.len() as u64), Some(len as u64));
            // Any age tool reads it with the participant's identity.
            let decryptor = age::Decryptor::new(&sealed[..]).unwrap();
            let mut back = Vec::new();
            decryptor
                .decrypt(std::iter::once(&identity(&key) as &dyn age::Identity))
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, plain);
        }
    }

    #[test]
    fn headers_are_small() {
        // One X25519 stanza and age's random "grease" stanza: a few hundred bytes, well
        // inside what a read fetches before it parses the header.
        for i in 0..50 {
            let (header, _) = seal(&key(i), b"x", 1);
            assert!((150..1024).contains(&header), "{header}");
        }
    }

    #[test]
    fn identities_are_age_secret_keys() {
        let text = identity_text(&key(3));
        assert!(text.starts_with("AGE-SECRET-KEY-1"), "{text}");
        assert_eq!(text.len(), 74);
        assert_ne!(identity_text(&key(4)), text);
    }
}
