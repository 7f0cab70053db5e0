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
        let a = budget.reserve(6 * 1024).await;
        let b = budget.reserve(2 * 1024).await;
        assert_eq!(budget.in_use(), 8 * 1024);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 * 1024).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!((a.bytes(), b.bytes()), (6 * 1024, 2 * 1024));
        drop(b);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "4 KiB free is not enough for 6");
        drop(a);
        assert_eq!(waiting.await.unwrap(), 6 * 1024);
        assert_eq!(budget.in_use(), 0);
    }
}

/// Part buffers of one size, reused from upload to upload: buffers that are allocated and freed
/// again and again in part-sized blocks are kept by the allocator long after they are free,
/// while reused ones keep the process's memory at what the budget allows.
#[derive(Clone)]
pub struct BufferPool {
    budget: MemoryBudget,
    size: usize,
    free: Arc<std::sync::Mutex<Vec<bytes::BytesMut>>>,
}

/// A buffer taken from a pool, with the budget it holds.
pub struct PooledBuffer {
    pub buf: bytes::BytesMut,
    pub reservation: Reservation,
}

impl BufferPool {
    #[must_use]
    pub fn new(budget: MemoryBudget, size: usize) -> Self {
        Self {
            budget,
            size,
            free: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// Waits until the budget has room for one more buffer, and hands out an empty one.
    pub async fn take(&self) -> PooledBuffer {
        let reservation = self.budget.reserve(self.size).await;
        let reused = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        PooledBuffer {
            buf: reused.unwrap_or_else(|| bytes::BytesMut::with_capacity(self.size)),
            reservation,
        }
    }

    /// Gives a buffer back once nothing else refers to its bytes (else it is simply freed).
    pub fn give(&self, bytes: bytes::Bytes) {
        if let Ok(mut buf) = bytes.try_into_mut()
            && buf.capacity() >= self.size
        {
            buf.clear();
            self.free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(buf);
        }
    }
}
