//! One appending request per upload on this instance: a newer request for the upload (PATCH,
//! HEAD or DELETE) stops the older one and waits until it has made its bytes durable. An entry
//! lives only while a request holds a turn: callers check that the upload exists and is the
//! caller's before they take one, so nobody grows the map by naming uploads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Slot {
    gate: Arc<tokio::sync::Mutex<()>>,
    stop: Mutex<CancellationToken>,
}

type Slots = Mutex<HashMap<String, Weak<Slot>>>;

/// The uploads this instance is appending to.
#[derive(Default)]
pub struct Turns(Arc<Slots>);

/// Held while a request works on an upload; `stop` is cancelled when a newer request comes.
pub struct Turn {
    gate: Option<OwnedMutexGuard<()>>,
    pub stop: CancellationToken,
    slot: Arc<Slot>,
    upload: String,
    slots: Arc<Slots>,
}

impl Turns {
    /// Stops the request working on `upload` here, if any, and returns once it has let go.
    pub async fn take(&self, upload: &str) -> Turn {
        let slot = {
            let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .get(upload)
                .and_then(Weak::upgrade)
                .unwrap_or_else(|| {
                    let slot = Arc::new(Slot::default());
                    slots.insert(upload.to_owned(), Arc::downgrade(&slot));
                    slot
                })
        };
        slot.stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cancel();
        let gate = Arc::clone(&slot.gate).lock_owned().await;
        let stop = CancellationToken::new();
        *slot.stop.lock().unwrap_or_else(PoisonError::into_inner) = stop.clone();
        Turn {
            gate: Some(gate),
            stop,
            slot,
            upload: upload.to_owned(),
            slots: Arc::clone(&self.0),
        }
    }

    /// How many uploads have an entry now (for tests of the map's bound).
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.gate.take());
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the map's lock no other request can pick the slot up: when this turn holds the
        // last reference, nobody waits for it and the entry goes.
        if Arc::strong_count(&self.slot) == 1
            && slots
                .get(&self.upload)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.slot)))
        {
            slots.remove(&self.upload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_entry_lives_only_while_a_turn_holds_it() {
        let turns = Turns::default();
        let first = turns.take("a").await;
        assert_eq!(turns.len(), 1);
        let second = {
            let w = &turns;
            let waiting = w.take("a");
            tokio::pin!(waiting);
            // The newer request stops the older one and waits for it to let go.
            assert!(futures::poll!(&mut waiting).is_pending());
            assert!(first.stop.is_cancelled());
            drop(first);
            waiting.await
        };
        assert_eq!(turns.len(), 1);
        drop(second);
        assert!(turns.is_empty());
    }
}
