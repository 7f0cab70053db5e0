//! `participant-files keys rotate`: every participant's key rewrapped under the current master
//! key, one conditional write each, so that it is safe beside serving instances (which unwrap
//! with either master key meanwhile) and beside erase (an erased key is not brought back), and
//! resumable (a key already under the current master key is left as it is).

use super::KeyStore;

/// Keys read per page of the key store.
const PAGE: usize = 100;

/// What a rotation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Keys rewrapped under the current master key.
    pub rewrapped: u64,
    /// Keys found already under it (made since, or by an earlier run), or erased meanwhile.
    pub unchanged: u64,
}

pub async fn run(keys: &KeyStore) -> Result<Rotated, super::KeyStoreError> {
    let mut done = Rotated::default();
    let mut after = None;
    loop {
        let page = keys.page(after, PAGE).await?;
        for (owner, stored) in &page.entries {
            if keys.rewrap(owner, stored).await? {
                done.rewrapped += 1;
            } else {
                done.unchanged += 1;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(done),
        }
    }
}

/// `keys rotate` with `config`'s settings: both master keys must be set.
pub async fn command(config: &crate::config::Config) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    config
        .previous_master_key
        .as_ref()
        .context("PF_ENCRYPTION_PREVIOUS must name the master key being rotated away from")?;
    let keys = super::open_for_command(config).await?;
    let done = run(&keys).await?;
    Ok(vec![format!(
        "{} keys rewrapped, {} already under the new master key (or erased)",
        done.rewrapped, done.unchanged
    )])
}
