//! Scan sessions kept open between the requests of an upload on this instance: clamd gets
//! each byte once, as it arrives, and the completion waits only for the verdict. A session
//! that is lost (a restart, another instance, a long pause) is simply not there, and the
//! completion streams the stored bytes instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::budget::Reservation;
use crate::scan::ScanSession;

/// How long a session waits for the upload's next request before it is closed. clamd's own
/// limit on a silent stream (`ReadTimeout`, 120 s by default) should be longer.
const IDLE: Duration = Duration::from_mins(1);

/// A scan session that has seen every byte of an upload up to `offset`.
pub struct LiveScan {
    pub session: Box<dyn ScanSession>,
    pub offset: u64,
    /// The version of the upload's row that recorded `offset`: any other write since (another
    /// instance's request) and the session no longer matches the stored bytes.
    pub version: u64,
    pub memory: Reservation,
}

#[derive(Default)]
struct Kept {
    sessions: HashMap<String, (u64, LiveScan)>,
    generation: u64,
}

/// The sessions kept between requests, at most `max` at once.
pub struct LiveScans {
    kept: Arc<Mutex<Kept>>,
    max: usize,
}

impl LiveScans {
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            kept: Arc::default(),
            max,
        }
    }

    /// The session of `upload`, if one is kept and it has seen exactly the bytes of the row
    /// at `version` (`offset` bytes).
    pub fn take(&self, upload: &str, offset: u64, version: u64) -> Option<LiveScan> {
        let (_, live) = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sessions
            .remove(upload)?;
        (live.offset == offset && live.version == version).then_some(live)
    }

    /// Closes the session of `upload`, if one is kept.
    pub fn close(&self, upload: &str) {
        drop(
            self.kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sessions
                .remove(upload),
        );
    }

    /// Whether another session may be opened now.
    pub fn has_room(&self) -> bool {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sessions
            .len()
            < self.max
    }

    /// Keeps `live` for the upload's next request, for at most [`IDLE`]; when `max` sessions
    /// are kept already, it is closed instead.
    pub fn keep(&self, upload: &str, live: LiveScan) {
        let generation = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.sessions.len() >= self.max {
                return;
            }
            kept.generation += 1;
            let generation = kept.generation;
            kept.sessions.insert(upload.to_owned(), (generation, live));
            generation
        };
        let (kept, upload) = (Arc::downgrade(&self.kept), upload.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(IDLE).await;
            let Some(kept) = kept.upgrade() else { return };
            let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept
                .sessions
                .get(&upload)
                .is_some_and(|(g, _)| *g == generation)
            {
                kept.sessions.remove(&upload);
            }
        });
    }
}
