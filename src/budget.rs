//! The buffer memory budget (`PF_MAX_BUFFER_MEMORY`): bytes that all uploads together may hold
//! in buffers. An upload that needs more waits, and so slows its client, instead of growing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB, so that a budget of any practical size fits a semaphore.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_units: usize,
}

/// Memory reserved from the budget; given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        let total_units = usize::try_from(bytes / UNIT as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Waits until `bytes` (rounded up to whole KiB) are free, and holds them.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = u32::try_from(bytes.div_ceil(UNIT).min(self.total_units)).unwrap_or(u32::MAX);
        if units == 0 {
            return Reservation { permit: None };
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation {
            permit: Some(permit),
        }
    }

    /// Bytes reserved right now.
    #[must_use]
    pub fn in_use(&self) -> u64 {
        ((self.total_units - self.permits.available_permits()) * UNIT) as u64
    }
}

impl Reservation {
    #[must_use]
    pub fn empty() -> Self {
        Self { permit: None }
    }

    /// Adds another reservation to this one.
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    /// Splits off up to `bytes` (in whole KiB) into a reservation of its own.
    #[must_use]
    pub fn split(&mut self, bytes: usize) -> Reservation {
        let units = bytes / UNIT;
        let permit = self.permit.as_mut().and_then(|p| {
            let n = units.min(p.num_permits());
            p.split(n)
        });
        Reservation { permit }
    }

    #[must_use]
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_the_budget() {
        let budget = MemoryBudget::new(10 * 1024);
        let mut a = budget.reserve(6 * 1024).await;
        assert_eq!(budget.in_use(), 6 * 1024);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 * 1024).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let part = a.split(4 * 1024);
        assert_eq!((a.bytes(), part.bytes()), (2 * 1024, 4 * 1024));
        drop(part);
        drop(a);
        assert_eq!(waiting.await.unwrap(), 6 * 1024);
        assert_eq!(budget.in_use(), 0);
    }
}
