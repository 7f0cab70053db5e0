//! `participant-files keys identity`: a participant's age identity, for an operator who must
//! decrypt their files outside the service (`age -d -i identity.txt`). Erase destroys the key
//! it comes from, and with it every way to print it.

use anyhow::Context;

use super::age_file;
use crate::config::Config;
use crate::model::{AppId, Owner, UserId};

#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    /// The participant's app.
    #[arg(long, value_parser = crate::config::parse::parse_app)]
    pub app: AppId,
    /// The participant's user ID.
    #[arg(long, value_parser = crate::config::parse::parse_user)]
    pub participant: UserId,
    #[command(flatten)]
    pub serve: crate::config::ServeArgs,
}

/// The participant's identity in age's text form (one line, `AGE-SECRET-KEY-1...`).
pub async fn identity(config: &Config, owner: &Owner) -> anyhow::Result<String> {
    let keys = super::open_for_command(config).await?;
    let key = keys.existing(owner).await?.with_context(|| {
        format!(
            "{}/{} has no key: they stored no file since encryption was on, or were erased \
             (then their files, and every copy of them, cannot be decrypted)",
            owner.app, owner.participant
        )
    })?;
    Ok(format!("{}\n", age_file::identity_text(&key)))
}
