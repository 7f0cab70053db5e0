//! Retries of conditional writes that lost a race: a short, jittered pause between tries, and
//! a bound after which the request is answered 503.

use std::time::Duration;

/// Tries before giving up: with the pauses below, about five seconds of contention, enough for
/// 50 uploads of one file to DynamoDB at once to all land (`tests/consistency.rs`).
const TRIES: u32 = 100;

/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Counts the tries of one conditional write.
pub(super) struct Backoff {
    tries: u32,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self { tries: 0 }
    }

    /// Waits before every try but the first; `false` once the tries are spent. The pause is
    /// random within a bound that doubles each time, so writers that collided do not collide
    /// again in step.
    pub(super) async fn next(&mut self) -> bool {
        if self.tries >= TRIES {
            return false;
        }
        if self.tries > 0 {
            let bound = (Duration::from_millis(1) * 2u32.saturating_pow(self.tries)).min(MAX_PAUSE);
            let fraction =
                f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
            tokio::time::sleep(bound.mul_f64(fraction)).await;
        }
        self.tries += 1;
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
}
