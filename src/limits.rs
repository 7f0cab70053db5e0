//! Limits an operator can set: uploads in flight and open upload URLs (bounded by default), files and bytes per
//! participant, and a per-participant download byte budget like Bridge's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::model::Owner;

/// How long a client is told to wait when every upload slot is taken.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(5);

const BUDGET_WINDOW: Duration = Duration::from_hours(1);

#[derive(Debug, Clone, Copy)]
pub struct LimitSettings {
    pub max_uploads: Option<usize>,
    pub max_files_per_participant: Option<u64>,
    pub max_bytes_per_participant: Option<u64>,
    /// Unexpired upload URLs one participant may hold (0: none at all).
    pub max_pending_per_participant: u64,
    pub download_bytes_per_hour: Option<u64>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_uploads: None,
            max_files_per_participant: None,
            max_bytes_per_participant: None,
            max_pending_per_participant: 100,
            download_bytes_per_hour: None,
        }
    }
}

pub struct Limits {
    pub settings: LimitSettings,
    slots: Option<Arc<Semaphore>>,
    downloads: Mutex<HashMap<Owner, (Instant, u64)>>,
}

/// An upload slot, held while the upload runs.
pub struct Slot(#[allow(dead_code, reason = "held for its Drop")] Option<OwnedSemaphorePermit>);

impl Limits {
    #[must_use]
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            slots: settings.max_uploads.map(|n| Arc::new(Semaphore::new(n))),
            downloads: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more upload, or `None` when `PF_MAX_UPLOADS` are already running.
    pub fn upload_slot(&self) -> Option<Slot> {
        match &self.slots {
            None => Some(Slot(None)),
            Some(s) => Arc::clone(s)
                .try_acquire_owned()
                .ok()
                .map(|p| Slot(Some(p))),
        }
    }

    /// Charges `bytes` to the participant's download budget for the current hour; when it
    /// would be exceeded, nothing is charged and the wait until the budget renews is returned.
    pub fn charge_download(&self, owner: &Owner, bytes: u64) -> Result<(), Duration> {
        let Some(budget) = self.settings.download_bytes_per_hour else {
            return Ok(());
        };
        let now = Instant::now();
        let mut map = self
            .downloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < BUDGET_WINDOW);
        }
        let entry = map.entry(owner.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) >= BUDGET_WINDOW {
            *entry = (now, 0);
        }
        if entry.1.saturating_add(bytes) > budget {
            return Err(BUDGET_WINDOW.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += bytes;
        Ok(())
    }

    /// Gives back bytes charged by [`Limits::charge_download`] that were not served.
    pub fn refund_download(&self, owner: &Owner, bytes: u64) {
        if self.settings.download_bytes_per_hour.is_none() || bytes == 0 {
            return;
        }
        let mut map = self
            .downloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = map.get_mut(owner) {
            entry.1 = entry.1.saturating_sub(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppId, UserId};

    fn owner(u: &str) -> Owner {
        Owner {
            app: AppId::parse("a").unwrap(),
            participant: UserId::parse(u).unwrap(),
        }
    }

    #[test]
    fn slots_run_out_and_come_back() {
        let limits = Limits::new(LimitSettings {
            max_uploads: Some(2),
            ..LimitSettings::default()
        });
        let a = limits.upload_slot().unwrap();
        let _b = limits.upload_slot().unwrap();
        assert!(limits.upload_slot().is_none());
        drop(a);
        assert!(limits.upload_slot().is_some());
        let unlimited = Limits::new(LimitSettings::default());
        let held: Vec<_> = (0..1000)
            .map(|_| unlimited.upload_slot().unwrap())
            .collect();
        assert_eq!(held.len(), 1000);
    }

    #[test]
    fn download_budget_per_participant() {
        let limits = Limits::new(LimitSettings {
            download_bytes_per_hour: Some(100),
            ..LimitSettings::default()
        });
        assert!(limits.charge_download(&owner("u1"), 60).is_ok());
        let wait = limits.charge_download(&owner("u1"), 41).unwrap_err();
        assert!(wait > Duration::from_secs(3500));
        assert!(limits.charge_download(&owner("u1"), 40).is_ok());
        assert!(limits.charge_download(&owner("u2"), 100).is_ok());
        limits.refund_download(&owner("u2"), 30);
        assert!(limits.charge_download(&owner("u2"), 30).is_ok());
        assert!(limits.charge_download(&owner("u2"), 1).is_err());
    }
}
