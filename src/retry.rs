//! The service's retry policy: a short, jittered pause between tries of work that lost a race
//! or met a passing backend failure, and a bound after which the request is answered 503.

use std::time::Duration;

use tokio::time::Instant;

/// Tries before giving up: with the pauses below, about five seconds of failures (tries lost to
/// other writers are counted only after [`CONTENDED_FOR`]).
const TRIES: u32 = 100;

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// How long tries that lost to other writers go uncounted: each such loss is another writer's
/// progress, so many writers of one row all land in time however slow the index is, while a
/// row that never settles still ends.
const CONTENDED_FOR: Duration = Duration::from_mins(1);

/// Counts the tries of one conditional write.
pub(crate) struct Backoff {
    /// Tries made: the pause grows with them.
    tries: u32,
    /// Tries that count toward `limit`.
    spent: u32,
    limit: u32,
    since: Instant,
    max_pause: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            tries: 0,
            spent: 0,
            limit: TRIES,
            since: Instant::now(),
            max_pause: MAX_PAUSE,
        }
    }

    /// At most `n` tries, with the same pauses: for best-effort work (deleting an object no row
    /// names, recording an outcome a later request can also record) that soon leaves the rest
    /// to a later pass or to `reconcile`.
    pub(crate) fn at_most(n: u32) -> Self {
        Self {
            limit: n,
            ..Self::new()
        }
    }

    /// The last try lost to another writer (a conflict): it is not counted while the contention
    /// has lasted less than [`CONTENDED_FOR`]. Only failures that are not somebody else's
    /// success spend the tries.
    pub(crate) fn lost_race(&mut self) {
        if self.since.elapsed() < CONTENDED_FOR {
            self.spent = self.spent.saturating_sub(1);
        }
    }

    /// Waits before every try but the first; `false` once the tries are spent. The pause is
    /// random within a bound that doubles each time, so writers that collided do not collide
    /// again in step.
    pub(crate) async fn next(&mut self) -> bool {
        if self.spent >= self.limit {
            return false;
        }
        if self.tries > 0 {
            let bound =
                (Duration::from_millis(1) * 2u32.saturating_pow(self.tries)).min(self.max_pause);
            let fraction =
                f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
            tokio::time::sleep(bound.mul_f64(fraction)).await;
        }
        self.tries = self.tries.saturating_add(1);
        self.spent += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tries_are_bounded() {
        let mut backoff = Backoff::new();
        let mut tries = 0;
        while backoff.next().await {
            tries += 1;
        }
        assert_eq!(tries, TRIES);
    }

    #[tokio::test]
    async fn best_effort_work_tries_a_few_times() {
        let mut backoff = Backoff {
            max_pause: Duration::ZERO,
            ..Backoff::at_most(4)
        };
        let mut tries = 0;
        while backoff.next().await {
            tries += 1;
        }
        assert_eq!(tries, 4);
    }

    #[tokio::test]
    async fn tries_lost_to_others_are_not_counted_for_a_while() {
        let mut backoff = Backoff {
            max_pause: Duration::ZERO,
            ..Backoff::new()
        };
        let mut tries = 0;
        while backoff.next().await {
            tries += 1;
            if tries <= 2 * TRIES {
                backoff.lost_race();
            }
        }
        assert_eq!(tries, 3 * TRIES);
        // Past CONTENDED_FOR, a loss spends a try like any other failure.
        let mut backoff = Backoff {
            max_pause: Duration::ZERO,
            since: Instant::now().checked_sub(CONTENDED_FOR).unwrap(),
            ..Backoff::new()
        };
        let mut tries = 0;
        while backoff.next().await {
            tries += 1;
            backoff.lost_race();
        }
        assert_eq!(tries, TRIES);
    }
}
