//! When the client tries again: pauses that double up to a cap that holds with the jitter, for
//! a total (`--retry-for`) counted from the last progress.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};

use super::ClientError;
use super::progress::Progress;

/// The longest pause between two tries. backon's jitter adds up to the whole delay on top of
/// it, so the delay itself doubles only up to half of this.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// The first pause: 0.5 to 1 s with the jitter.
const FIRST_PAUSE: Duration = Duration::from_millis(500);

pub struct Retries {
    builder: ExponentialBuilder,
    pauses: backon::ExponentialBackoff,
    /// The most time failures may take in a row before the client gives up.
    retry_for: Duration,
    /// When the current run of failures began: the first failure after the last progress.
    failing_since: Option<Instant>,
}

impl Retries {
    pub fn new(retry_for: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(FIRST_PAUSE)
            .with_max_delay(MAX_PAUSE / 2)
            .with_jitter()
            .without_max_times();
        Self {
            pauses: builder.build(),
            builder,
            retry_for,
            failing_since: None,
        }
    }

    /// The next pause, shortened so that the failures end within `--retry-for`; `None` once
    /// that time is spent.
    fn next_pause(&mut self) -> Option<Duration> {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let left = self.retry_for.checked_sub(since.elapsed())?;
        if left.is_zero() {
            return None;
        }
        let pause = self.pauses.next().unwrap_or(MAX_PAUSE).min(MAX_PAUSE);
        Some(pause.min(left))
    }

    /// Waits before the next try, or gives up with `why`.
    pub async fn pause(&mut self, why: String, progress: &Progress) -> Result<(), ClientError> {
        match self.next_pause() {
            Some(pause) => {
                progress.note(&format!(
                    "{why}; trying again in {:.1} s",
                    pause.as_secs_f64()
                ));
                tokio::time::sleep(pause).await;
                Ok(())
            }
            None => Err(ClientError::GaveUp(format!(
                "{why}; gave up after retrying for {} without progress (--retry-for)",
                humantime::format_duration(Duration::from_secs(self.retry_for.as_secs()))
            ))),
        }
    }

    /// Progress was made: the next failure starts a new run, from the shortest pause.
    pub fn reset(&mut self) {
        self.pauses = self.builder.build();
        self.failing_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_half_a_second_and_never_pass_the_cap() {
        let mut retries = Retries::new(Duration::from_hours(1_000));
        let pauses: Vec<Duration> = (0..200).map(|_| retries.next_pause().unwrap()).collect();
        assert!(
            (FIRST_PAUSE..FIRST_PAUSE * 2).contains(&pauses[0]),
            "{pauses:?}"
        );
        assert!(pauses.iter().all(|p| *p <= MAX_PAUSE), "{pauses:?}");
        // The cap is reached, not only approached.
        assert!(
            pauses[20..].iter().all(|p| *p >= MAX_PAUSE / 2),
            "{pauses:?}"
        );
        retries.reset();
        assert!(retries.next_pause().unwrap() < FIRST_PAUSE * 2);
    }

    #[test]
    fn no_pause_is_longer_than_the_time_left() {
        let mut retries = Retries::new(Duration::from_millis(300));
        assert!(retries.next_pause().unwrap() <= Duration::from_millis(300));
        let mut none = Retries::new(Duration::ZERO);
        assert_eq!(none.next_pause(), None);
    }
}
