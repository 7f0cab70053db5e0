//! One lease for work that one holder at a time may do on a record, with a fencing token.
//!
//! The settler's hold on an arrived upload and a resumable upload's writer are both a
//! [`Lease`]: a holder, an expiry, and an epoch that grows by one with every taking. The
//! expiry lets another instance take over from a holder that stopped; the epoch is what makes
//! that safe. Every write made under the lease is conditional on the record still holding the
//! lease at the epoch it was taken with, so a holder that was taken over (a stalled instance,
//! a request that outlived its lease) can no longer change what is committed, however late it
//! wakes up. An expired lease nobody took over still fences for its holder: only a taking
//! ends it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A holder's exclusive right to work on one record, until `until`, at `epoch`. `W` says what
/// the holder is doing, where other requests need to know (a resumable upload's completion);
/// `()` where they do not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease<W = ()> {
    /// A generated ID without `@`, unique to one process (or one of its workers).
    pub holder: String,
    /// The fencing token: one above the lease this one took over. Stored as `fence`, the name
    /// resumable uploads' rows had for it before this type.
    #[serde(rename = "fence")]
    pub epoch: u64,
    pub until: DateTime<Utc>,
    #[serde(flatten)]
    pub work: W,
}

/// What a write under a lease names: the holder and the epoch it took the lease at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: u64,
}

/// Why a lease could not be taken: another holder's lease is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held;

impl<W> Lease<W> {
    /// Takes the lease over from `current` (the record's lease, if any) for `holder`: the
    /// epoch one above it. A live lease of another holder is [`Held`]; `own_live_too` says
    /// whether a live lease of `holder` itself is too (a holder that runs several tasks, each
    /// of which must not take over the other's work).
    pub fn take<V>(
        current: Option<&Lease<V>>,
        holder: &str,
        ttl: Duration,
        work: W,
        own_live_too: bool,
    ) -> Result<Self, Held> {
        let now = Utc::now();
        if let Some(c) = current
            && c.live(now)
            && (c.holder != holder || own_live_too)
        {
            return Err(Held);
        }
        Ok(Self {
            holder: holder.to_owned(),
            epoch: current.map_or(0, |c| c.epoch) + 1,
            until: now + ttl,
            work,
        })
    }

    /// Whether the lease still holds at `now`.
    #[must_use]
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }

    /// The fence that writes under this lease name.
    #[must_use]
    pub fn fence(&self) -> Fence {
        Fence {
            holder: self.holder.clone(),
            epoch: self.epoch,
        }
    }

    /// Whether this is the lease `fence` was taken at: nobody took it over since.
    #[must_use]
    pub fn is(&self, fence: &Fence) -> bool {
        self.holder == fence.holder && self.epoch == fence.epoch
    }

    /// The same lease (holder and epoch), held `ttl` from now, for `work`.
    #[must_use]
    pub fn renewed<V>(&self, ttl: Duration, work: V) -> Lease<V> {
        Lease {
            holder: self.holder.clone(),
            epoch: self.epoch,
            until: Utc::now() + ttl,
            work,
        }
    }

    /// The same lease, given back: it ends now, and its epoch stays for the next taker to
    /// count on from.
    #[must_use]
    pub fn given_back(&self) -> Self
    where
        W: Clone,
    {
        Self {
            until: Utc::now(),
            ..self.clone()
        }
    }
}

impl Lease {
    /// `holder@millis@epoch`, as the file index stores an arrival's lease; a holder never
    /// holds `@`.
    #[must_use]
    pub fn encode(&self) -> String {
        format!(
            "{}@{}@{}",
            self.holder,
            self.until.timestamp_millis(),
            self.epoch
        )
    }

    /// Reads [`Self::encode`]'s form, and the `holder@millis` of rows written before leases had
    /// an epoch (epoch 0).
    #[must_use]
    pub fn decode(s: &str) -> Option<Self> {
        let mut parts = s.split('@');
        let (holder, ms) = (parts.next()?, parts.next()?);
        let epoch = parts.next().map_or(Some(0), |e| e.parse().ok())?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            holder: holder.to_owned(),
            epoch,
            until: DateTime::from_timestamp_millis(ms.parse().ok()?)?,
            work: (),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_mins(1);

    #[test]
    fn every_taking_fences_out_the_one_before() {
        let a = Lease::take(None::<&Lease>, "a", TTL, (), true).unwrap();
        assert_eq!(a.epoch, 1);
        // Live: nobody else takes it, nor another task of its own holder when that counts.
        assert_eq!(Lease::take(Some(&a), "b", TTL, (), false), Err(Held));
        assert_eq!(Lease::take(Some(&a), "a", TTL, (), true), Err(Held));
        // Run out (its holder stalled): taken over, and the old fence no longer matches.
        let stale = Lease {
            until: Utc::now() - chrono::Duration::seconds(1),
            ..a.clone()
        };
        let b = Lease::take(Some(&stale), "b", TTL, (), true).unwrap();
        assert_eq!(b.epoch, 2);
        assert!(!b.is(&a.fence()));
        assert!(b.is(&b.fence()));
        // Given back and taken again by the same holder: still a new epoch.
        let again = Lease::take(Some(&b.given_back()), "b", TTL, (), true).unwrap();
        assert!(!again.is(&b.fence()));
    }

    #[test]
    fn arrival_leases_read_back_also_without_an_epoch() {
        let lease = Lease::take(None::<&Lease>, "h1", TTL, (), true).unwrap();
        let read = Lease::decode(&lease.encode()).unwrap();
        assert_eq!(read.holder, "h1");
        assert_eq!(read.epoch, 1);
        assert_eq!(
            read.until.timestamp_millis(),
            lease.until.timestamp_millis()
        );
        let old = Lease::decode("h1@1700000000000").unwrap();
        assert_eq!((old.holder.as_str(), old.epoch), ("h1", 0));
        assert!(Lease::decode("h1@x").is_none());
        assert!(Lease::decode("h1@1@2@3").is_none());
    }
}
