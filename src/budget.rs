//! The buffer memory budget (`PF_MAX_BUFFER_MEMORY`): bytes that all uploads together may hold
//! in buffers. An upload that needs more waits, and so slows its client, instead of growing.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in KiB, so that a budget of any practical size fits a semaphore.
const UNIT: usize = 1024;

/// The share of the budget that part-sized buffers may never take: small uploads, sniff heads
/// and scanner queues always find room there, so uploads stalled with a part buffer each cannot
/// starve a 600-byte upload.
const SMALL_SHARE_DIVISOR: usize = 8;

/// How long an upload waits for buffer memory by default before it is refused (503).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The budget stayed spent for as long as an upload may wait.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no buffer memory was free within {0:?}")]
pub struct BudgetExhausted(pub Duration);

#[derive(Clone)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    /// Permits for part-sized buffers: all of the budget but its small share.
    large: Arc<Semaphore>,
    total_units: usize,
    large_units: usize,
    wait: Duration,
}

/// Memory reserved from the budget; given back when dropped.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    large: Option<OwnedSemaphorePermit>,
}

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

impl MemoryBudget {
    /// A budget of `bytes`, where a reservation waits at most `wait` for room.
    #[must_use]
    pub fn new(bytes: u64, wait: Duration) -> Self {
        let total_units = usize::try_from(bytes / UNIT as u64)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        let large_units = (total_units - total_units / SMALL_SHARE_DIVISOR).max(1);
        Self {
            permits: Arc::new(Semaphore::new(total_units)),
            large: Arc::new(Semaphore::new(large_units)),
            total_units,
            large_units,
            wait,
        }
    }

    async fn acquire(
        semaphore: &Arc<Semaphore>,
        units: usize,
        wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, BudgetExhausted> {
        let Ok(units @ 1..) = u32::try_from(units) else {
            return Ok(None);
        };
        match tokio::time::timeout(wait, Arc::clone(semaphore).acquire_many_owned(units)).await {
            Ok(permit) => Ok(Some(
                permit.expect("the budget's semaphores are never closed"),
            )),
            Err(_) => Err(BudgetExhausted(wait)),
        }
    }

    /// Waits until `bytes` (rounded up to whole KiB) are free, and holds them; past the
    /// budget's wait, gives up. The caller must hold no other reservation that only its own
    /// progress would free, or uploads could wait on each other for ever.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, BudgetExhausted> {
        let units = units(bytes).min(self.total_units);
        Ok(Reservation {
            permit: Self::acquire(&self.permits, units, self.wait).await?,
            large: None,
        })
    }

    /// Like [`MemoryBudget::reserve`], for a part-sized buffer: it may not take the small
    /// share of the budget.
    pub async fn reserve_large(&self, bytes: usize) -> Result<Reservation, BudgetExhausted> {
        let units = units(bytes).min(self.large_units);
        let large = Self::acquire(&self.large, units, self.wait).await?;
        let permit = Self::acquire(&self.permits, units, self.wait).await?;
        Ok(Reservation { permit, large })
    }

    /// Bytes reserved right now.
    #[must_use]
    pub fn in_use(&self) -> u64 {
        ((self.total_units - self.permits.available_permits()) * UNIT) as u64
    }
}

impl Reservation {
    /// A reservation of nothing.
    #[must_use]
    pub fn none() -> Self {
        Self {
            permit: None,
            large: None,
        }
    }

    #[must_use]
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    /// Adds `other` to this reservation (both must be of the same budget).
    pub fn merge(&mut self, other: Reservation) {
        for (mine, theirs) in [
            (&mut self.permit, other.permit),
            (&mut self.large, other.large),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => m.merge(t),
                (None, t) => *mine = t,
                (Some(_), None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_the_budget() {
        let budget = MemoryBudget::new(10 * 1024, Duration::from_mins(1));
        let a = budget.reserve(6 * 1024).await.unwrap();
        let b = budget.reserve(2 * 1024).await.unwrap();
        assert_eq!(budget.in_use(), 8 * 1024);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(6 * 1024).await.unwrap().bytes() }
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

    #[tokio::test]
    async fn a_wait_for_the_budget_ends() {
        let budget = MemoryBudget::new(64 * 1024, Duration::from_millis(200));
        let _all = budget.reserve(64 * 1024).await.unwrap();
        let started = std::time::Instant::now();
        let refused = budget.reserve(1024).await;
        assert!(refused.is_err());
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn part_buffers_leave_the_small_share_free() {
        let budget = MemoryBudget::new(80 * 1024, Duration::from_millis(100));
        let mut parts = Vec::new();
        while let Ok(r) = budget.reserve_large(10 * 1024).await {
            parts.push(r);
        }
        assert_eq!(
            parts.len(),
            7,
            "70 of 80 KiB: the last eighth is not for parts"
        );
        let small = budget.reserve(10 * 1024).await.unwrap();
        assert_eq!(small.bytes(), 10 * 1024);
        let mut merged = Reservation::none();
        merged.merge(small);
        merged.merge(parts.pop().unwrap());
        assert_eq!(merged.bytes(), 20 * 1024);
        drop(merged);
        assert_eq!(budget.in_use(), 60 * 1024);
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
    pub async fn take(&self) -> Result<PooledBuffer, BudgetExhausted> {
        let reservation = self.budget.reserve_large(self.size).await?;
        let reused = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        Ok(PooledBuffer {
            buf: reused.unwrap_or_else(|| bytes::BytesMut::with_capacity(self.size)),
            reservation,
        })
    }

    /// The budget the pool's buffers are reserved from.
    #[must_use]
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The size of every buffer of the pool.
    #[must_use]
    pub fn buffer_size(&self) -> usize {
        self.size
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
