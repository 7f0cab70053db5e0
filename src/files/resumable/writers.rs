//! One appending request per upload on this instance: a newer request for the upload (PATCH,
//! HEAD or DELETE) stops the older one and waits until it has made its bytes durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Slot {
    gate: Arc<tokio::sync::Mutex<()>>,
    stop: Mutex<CancellationToken>,
}

/// The uploads this instance is appending to.
#[derive(Default)]
pub struct Writers(Mutex<HashMap<String, Arc<Slot>>>);

/// Held while a request works on an upload; `stop` is cancelled when a newer request comes.
pub struct Turn {
    _gate: OwnedMutexGuard<()>,
    pub stop: CancellationToken,
}

impl Writers {
    /// Stops the request working on `upload` here, if any, and returns once it has let go.
    pub async fn take(&self, upload: &str) -> Turn {
        let slot = Arc::clone(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(upload.to_owned())
                .or_default(),
        );
        slot.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
        let gate = Arc::clone(&slot.gate).lock_owned().await;
        let stop = CancellationToken::new();
        *slot.stop.lock().unwrap_or_else(PoisonError::into_inner) = stop.clone();
        Turn { _gate: gate, stop }
    }

    /// Forgets an upload that is complete or gone.
    pub fn forget(&self, upload: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(upload);
    }
}
