//! The whole file's SHA-256 carried across requests and instances: the hasher's state goes
//! into the row with every durable point, and the next request, wherever it lands, goes on
//! from it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha256;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};

/// The hasher over an upload's first `offset` bytes, from the state saved with them; `None`
/// when it was not saved (or cannot be read), and the completion hashes the stored bytes.
pub(super) fn resume(saved: Option<&str>, offset: u64) -> Option<Sha256> {
    if offset == 0 {
        return Some(Sha256::default());
    }
    let bytes = STANDARD.decode(saved?).ok()?;
    let state = SerializedState::<Sha256>::try_from(bytes.as_slice()).ok()?;
    Sha256::deserialize(&state).ok()
}

/// The state to save beside the offset.
pub(super) fn save(hasher: &Sha256) -> String {
    STANDARD.encode(hasher.serialize())
}

/// The digest so far, as the pipeline writes it (standard base64), without ending the hasher.
pub(super) fn digest(hasher: &Sha256) -> String {
    use sha2::Digest;
    STANDARD.encode(hasher.clone().finalize())
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    #[test]
    fn a_saved_state_goes_on_where_it_stopped() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut first = Sha256::default();
        first.update(&bytes[..33_333]);
        let saved = save(&first);
        let mut resumed = resume(Some(&saved), 33_333).expect("state reads back");
        resumed.update(&bytes[33_333..]);
        assert_eq!(digest(&resumed), STANDARD.encode(Sha256::digest(&bytes)));
        assert!(resume(Some("not a state"), 1).is_none());
        assert!(resume(None, 1).is_none());
    }
}
