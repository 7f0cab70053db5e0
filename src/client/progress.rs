//! Progress of a transfer: a bar on a terminal, plain lines (`uploaded N of M bytes`) otherwise.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    verb: &'static str,
    total: u64,
    /// When the last plain line was printed.
    printed: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new(total: u64, verb: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(verb);
            bar
        });
        Self {
            bar,
            verb,
            total,
            printed: Mutex::new(None),
        }
    }

    /// Where the transfer stands; without a terminal, a line at most every second and at the
    /// end.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let mut printed = self.printed.lock().unwrap_or_else(PoisonError::into_inner);
        if done == self.total || printed.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            *printed = Some(Instant::now());
            eprintln!("{} {done} of {} bytes", self.verb, self.total);
        }
    }

    /// Like [`Progress::set`], a line every time: for steps as coarse as an upload's chunks.
    pub fn step(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => eprintln!("{} {done} of {} bytes", self.verb, self.total),
        }
    }

    /// A line beside the bar: a retry, a resumption.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
