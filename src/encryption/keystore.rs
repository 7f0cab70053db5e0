//! The participants' data keys: random, created on first use, stored only wrapped by the
//! master key, in a store of their own ([`WrappedKeys`]: SQLite or DynamoDB).
//!
//! A wrapped key is `1 || nonce (24) || XChaCha20-Poly1305(data key) (48)`, under a key derived
//! from the master key by HKDF-SHA256, with the participant (`app/participant`) as associated
//! data: a wrapped key copied onto another participant's entry does not unwrap.

use std::sync::Arc;

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::MasterKey;
use crate::model::Owner;

const WRAP_INFO: &[u8] = b"participant-files data key wrap v1";
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;
/// A wrapped key's length: format byte, nonce, the key and its tag.
pub const WRAPPED_LEN: usize = 1 + NONCE_LEN + DATA_KEY_BYTES + 16;
pub const DATA_KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The stored key does not unwrap with this master key (another master key, or tampered).
    #[error("the key of {owner} does not unwrap with this master key (id {master_id})")]
    Unwrap { owner: String, master_id: String },
    #[error("the key store failed: {message}")]
    Backend {
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl KeyStoreError {
    pub fn backend(message: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend {
            message: message.to_owned(),
            source: Box::new(e),
        }
    }
}

/// One participant's data key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; DATA_KEY_BYTES]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; DATA_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8; DATA_KEY_BYTES] {
        &self.0
    }
}

/// A wrapped key as a store keeps it, with the master key that wrapped it (for rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub master_id: String,
    pub wrapped: Vec<u8>,
}

/// Where wrapped keys are kept. Each call is one atomic operation of the store.
#[async_trait]
pub trait WrappedKeys: Send + Sync {
    async fn get(&self, owner: &Owner) -> Result<Option<StoredKey>, KeyStoreError>;

    /// Stores `key` unless the participant has one; returns the one stored afterwards.
    async fn put_if_absent(
        &self,
        owner: &Owner,
        key: &StoredKey,
    ) -> Result<StoredKey, KeyStoreError>;

    /// Removes the participant's key; true when there was one.
    async fn delete(&self, owner: &Owner) -> Result<bool, KeyStoreError>;

    /// Up to `limit` stored keys after the cursor `after` (from the start when `None`), and
    /// the cursor of the next page when there may be one.
    async fn page(&self, after: Option<String>, limit: usize) -> Result<KeyPage, KeyStoreError>;

    /// Replaces the participant's key with `new` if it is still `old`; false when it is not
    /// (erased, or replaced meanwhile).
    async fn replace(
        &self,
        owner: &Owner,
        old: &StoredKey,
        new: &StoredKey,
    ) -> Result<bool, KeyStoreError>;
}

/// A page of stored keys, for `keys rotate`.
pub struct KeyPage {
    pub entries: Vec<(Owner, StoredKey)>,
    pub next: Option<String>,
}

/// Wraps and unwraps the data keys of a [`WrappedKeys`] store with the master key.
#[derive(Clone)]
pub struct KeyStore {
    store: Arc<dyn WrappedKeys>,
    cipher: XChaCha20Poly1305,
    master_id: String,
    /// Master keys being rotated away from (`PF_ENCRYPTION_PREVIOUS`): they unwrap, never wrap.
    previous: Vec<(String, XChaCha20Poly1305)>,
}

impl KeyStore {
    #[must_use]
    pub fn new(master: &MasterKey, store: Arc<dyn WrappedKeys>) -> Self {
        Self {
            store,
            cipher: wrapping_cipher(master),
            master_id: master_id(master),
            previous: Vec::new(),
        }
    }

    /// Also unwraps keys that `previous` wrapped (during a rotation away from it).
    #[must_use]
    pub fn with_previous(mut self, previous: &MasterKey) -> Self {
        self.previous
            .push((master_id(previous), wrapping_cipher(previous)));
        self
    }

    /// The stored keys, a page at a time (see [`WrappedKeys::page`]).
    pub async fn page(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<KeyPage, KeyStoreError> {
        self.store.page(after, limit).await
    }

    /// Wraps the participant's stored key anew under the current master key, unless it is
    /// already. `Ok(false)`: nothing to do (already current, or gone).
    pub async fn rewrap(&self, owner: &Owner, stored: &StoredKey) -> Result<bool, KeyStoreError> {
        let mut stored = stored.clone();
        loop {
            if stored.master_id == self.master_id {
                return Ok(false);
            }
            let fresh = self.wrap(owner, &self.unwrap_key(owner, &stored)?)?;
            if self.store.replace(owner, &stored, &fresh).await? {
                return Ok(true);
            }
            // Changed meanwhile (an erase, or another rotation): look again.
            match self.store.get(owner).await? {
                Some(now) => stored = now,
                None => return Ok(false),
            }
        }
    }

    /// The participant's data key, created on first use; first uses that race agree on one.
    pub async fn key_for(&self, owner: &Owner) -> Result<DataKey, KeyStoreError> {
        if let Some(stored) = self.store.get(owner).await? {
            return self.unwrap_key(owner, &stored);
        }
        let mut fresh = [0u8; DATA_KEY_BYTES];
        getrandom::fill(&mut fresh).map_err(|e| KeyStoreError::backend("no randomness", e))?;
        let stored = self
            .store
            .put_if_absent(owner, &self.wrap(owner, &DataKey(fresh))?)
            .await?;
        self.unwrap_key(owner, &stored)
    }

    /// The participant's data key, if they have one (reading never creates one).
    pub async fn existing(&self, owner: &Owner) -> Result<Option<DataKey>, KeyStoreError> {
        match self.store.get(owner).await? {
            Some(stored) => self.unwrap_key(owner, &stored).map(Some),
            None => Ok(None),
        }
    }

    /// Destroys the participant's key: whatever was encrypted under it cannot be read again.
    /// True when there was one.
    pub async fn destroy(&self, owner: &Owner) -> Result<bool, KeyStoreError> {
        self.store.delete(owner).await
    }

    fn wrap(&self, owner: &Owner, key: &DataKey) -> Result<StoredKey, KeyStoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| KeyStoreError::backend("no randomness", e))?;
        let aad = aad(owner);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key.bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                KeyStoreError::backend("wrapping failed", std::io::Error::other("aead"))
            })?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(FORMAT);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(StoredKey {
            master_id: self.master_id.clone(),
            wrapped,
        })
    }

    fn unwrap_key(&self, owner: &Owner, stored: &StoredKey) -> Result<DataKey, KeyStoreError> {
        let refused = || KeyStoreError::Unwrap {
            owner: aad(owner),
            master_id: stored.master_id.clone(),
        };
        let w = &stored.wrapped;
        if w.len() != WRAPPED_LEN || w[0] != FORMAT {
            return Err(refused());
        }
        // The master key that wrapped it: the current one, or one being rotated away from.
        let cipher = if stored.master_id == self.master_id {
            &self.cipher
        } else {
            self.previous
                .iter()
                .find(|(id, _)| *id == stored.master_id)
                .map_or(&self.cipher, |(_, c)| c)
        };
        let nonce: [u8; NONCE_LEN] = w[1..=NONCE_LEN].try_into().map_err(|_| refused())?;
        let aad = aad(owner);
        let key = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &w[1 + NONCE_LEN..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        let key: [u8; DATA_KEY_BYTES] = key.try_into().map_err(|_| refused())?;
        Ok(DataKey(key))
    }
}

fn wrapping_cipher(master: &MasterKey) -> XChaCha20Poly1305 {
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, master.bytes())
        .expand(WRAP_INFO, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    XChaCha20Poly1305::new(&key.into())
}

fn aad(owner: &Owner) -> String {
    format!("{}/{}", owner.app, owner.participant)
}

/// A short public name of a master key (what wrapped a stored key), never the key itself.
#[must_use]
pub fn master_id(master: &MasterKey) -> String {
    let digest = Sha256::new()
        .chain_update(b"participant-files master key id\0")
        .chain_update(master.bytes())
        .finalize();
    hex::encode(&digest[..8])
}
