//! Usage kept as data: the counters of what each participant holds, changed in the same atomic
//! write as the rows they count, so that a quota check costs the same at 30,000 files as at 10.

use crate::model::{FileRow, Owner};

/// What the counters of one participant say: committed files, their bytes, and open resumable
/// uploads (expired ones included until swept; readers subtract those).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub files: u64,
    pub bytes: u64,
    pub uploads: u64,
}

/// What one file row adds to its owner's counters; the change of a write is the new row's
/// minus the old row's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCount {
    pub files: i64,
    pub bytes: i64,
}

impl FileCount {
    #[must_use]
    pub fn of(row: Option<&FileRow>) -> Self {
        match row.and_then(|r| r.current.as_ref()) {
            None => Self::default(),
            Some(c) => Self {
                files: 1,
                bytes: i64::try_from(c.size).unwrap_or(i64::MAX),
            },
        }
    }

    #[must_use]
    pub fn minus(self, old: Self) -> Self {
        Self {
            files: self.files - old.files,
            bytes: self.bytes - old.bytes,
        }
    }

    #[must_use]
    pub fn is_zero(self) -> bool {
        self == Self::default()
    }
}

/// The per-participant quotas a file write must stay within (`None`: no quota). Only a write
/// that adds files or bytes is held to them: one that shrinks usage always lands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileQuota {
    pub files: Option<u64>,
    pub bytes: Option<u64>,
}

/// Which quota refused a file write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaReached {
    Files,
    Bytes,
}

impl FileQuota {
    /// Whether adding `change` to what the counters `held` say passes a quota.
    #[must_use]
    pub fn refuses(self, held: Counters, change: FileCount) -> Option<QuotaReached> {
        let over = |max: Option<u64>, held: u64, add: i64| {
            add > 0 && max.is_some_and(|max| held.saturating_add(add.unsigned_abs()) > max)
        };
        if over(self.files, held.files, change.files) {
            Some(QuotaReached::Files)
        } else if over(self.bytes, held.bytes, change.bytes) {
            Some(QuotaReached::Bytes)
        } else {
            None
        }
    }

    /// The highest stored counts at which `change` still fits (files, bytes), for a condition
    /// on the stored counters; `Err` when it fits at none.
    pub fn ceilings(self, change: FileCount) -> Result<(Option<u64>, Option<u64>), QuotaReached> {
        let ceiling = |max: Option<u64>, add: i64, reached| match max {
            Some(max) if add > 0 => max.checked_sub(add.unsigned_abs()).map(Some).ok_or(reached),
            _ => Ok(None),
        };
        Ok((
            ceiling(self.files, change.files, QuotaReached::Files)?,
            ceiling(self.bytes, change.bytes, QuotaReached::Bytes)?,
        ))
    }
}

/// The bounds on open resumable uploads that [`super::UploadIndex::create_upload`] holds in
/// the same write as the new upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenLimits {
    pub per_participant: u64,
    pub per_app: u64,
}

/// Which bound refused a new upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReached {
    Participant,
    App,
}

/// A participant whose stored counters differed from its rows, as `reconcile` found and
/// repaired it; `stored` is `None` for a participant that had no counters yet (a migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recount {
    pub owner: Owner,
    pub stored: Option<Counters>,
    pub counted: Counters,
}

/// Adds a signed change to a stored counter. A counter never goes below zero: a change that
/// would take it there means it drifted (edited by hand, or written by a version without
/// counters), and `reconcile` recounts it.
#[must_use]
pub fn applied(stored: u64, change: i64) -> u64 {
    if change >= 0 {
        stored.saturating_add(change.unsigned_abs())
    } else {
        stored.saturating_sub(change.unsigned_abs())
    }
}
