//! Secrets generated once into the data dir when none is configured, and reused after.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Length of a generated secret, in bytes (before hex encoding).
const SECRET_BYTES: usize = 32;

/// Where a secret came from.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    Configured,
    /// The file under the data dir; `created` when this call made it.
    File {
        path: PathBuf,
        created: bool,
    },
}

/// The configured secret, else the one in `data_dir/secrets/<name>`, created when missing.
pub fn load_or_create(
    configured: Option<&str>,
    data_dir: &Path,
    name: &str,
) -> std::io::Result<Vec<u8>> {
    locate(configured, data_dir, name).map(|(secret, _)| secret)
}

/// Like [`load_or_create`], and says where the secret came from.
pub fn locate(
    configured: Option<&str>,
    data_dir: &Path,
    name: &str,
) -> std::io::Result<(Vec<u8>, Origin)> {
    if let Some(s) = configured {
        return Ok((s.as_bytes().to_vec(), Origin::Configured));
    }
    let dir = data_dir.join("secrets");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    let mut raw = [0u8; SECRET_BYTES];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    let fresh = hex::encode(raw);
    // create_new makes two processes that start together agree on one secret: the loser reads
    // the winner's. Only the owner may read it.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(fresh.as_bytes())?;
            f.sync_all()?;
            Ok((
                fresh.into_bytes(),
                Origin::File {
                    path,
                    created: true,
                },
            ))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let existing = std::fs::read_to_string(&path)?;
            let existing = existing.trim();
            if existing.len() < 32 {
                return Err(std::io::Error::other(format!(
                    "{} holds no usable secret (at least 32 characters)",
                    path.display()
                )));
            }
            let existing = existing.as_bytes().to_vec();
            Ok((
                existing,
                Origin::File {
                    path,
                    created: false,
                },
            ))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(None, dir.path(), "jwt").unwrap();
        let b = load_or_create(None, dir.path(), "jwt").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let other = load_or_create(None, dir.path(), "url").unwrap();
        assert_ne!(a, other);
        assert_eq!(
            load_or_create(Some("given"), dir.path(), "jwt").unwrap(),
            b"given"
        );
        let mode = std::fs::metadata(dir.path().join("secrets/jwt"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
