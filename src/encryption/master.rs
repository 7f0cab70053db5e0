//! The master key: its file format, `keys new`, and the refusals when it cannot be used.
//!
//! A master key file holds a 256-bit key as 64 hexadecimal characters, optionally followed by
//! one newline, and nothing else: text, so that it can live in a secret manager.

use std::fmt;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The master key's length in bytes.
pub const KEY_BYTES: usize = 32;

/// Where the master key comes from (`PF_ENCRYPTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionSetting {
    /// `file:///path/to/master.key`.
    File(PathBuf),
}

impl EncryptionSetting {
    /// Parses `PF_ENCRYPTION`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "expected file:///absolute/path/to/master.key, got file://{path}"
                ));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if s.starts_with("kms://") {
            return Err("kms:// master keys are not supported yet; use file:///path".to_owned());
        }
        Err("expected file:///path/to/master.key (made by `participant-files keys new`)".to_owned())
    }

    /// Reads the master key it names.
    pub fn load(&self) -> Result<MasterKey, MasterKeyError> {
        match self {
            Self::File(path) => MasterKey::read(path),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("cannot read the master key file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the master key file {path} holds {found}: expected 64 hexadecimal characters \
         (a 256-bit key, as `participant-files keys new` writes)"
    )]
    Malformed { path: PathBuf, found: String },
}

/// A 256-bit key that wraps the participants' keys. Never printed.
#[derive(Clone)]
pub struct MasterKey([u8; KEY_BYTES]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> std::io::Result<Self> {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(Self(key))
    }

    /// Reads a master key file, refusing anything but one key in the documented format.
    pub fn read(path: &Path) -> Result<Self, MasterKeyError> {
        let text = std::fs::read(path).map_err(|source| MasterKeyError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let malformed = |found: String| MasterKeyError::Malformed {
            path: path.to_owned(),
            found,
        };
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        if body.len() != KEY_BYTES * 2 {
            return Err(malformed(format!("{} bytes", text.len())));
        }
        let mut key = [0u8; KEY_BYTES];
        // The error would show what was read: only the fact is said.
        hex::decode_to_slice(body, &mut key)
            .map_err(|_| malformed("characters that are not hexadecimal".to_owned()))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the master key file can be read by others than its owner: chmod 600 it"
            );
        }
        Ok(Self(key))
    }

    /// The key file's text.
    #[must_use]
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// `participant-files keys new`: writes a new master key to `out`, which must not be a terminal
/// (the key would stay in its scrollback). When `out` is a file (`> master.key`), it is made
/// readable by its owner only before the key is written into it.
pub fn write_new<W: Write + AsFd>(out: W, terminal: bool) -> std::io::Result<()> {
    write_secret(
        out,
        terminal,
        "a master key",
        "participant-files keys new > master.key",
        &MasterKey::generate()?.to_file_text(),
    )
}

/// Writes a secret (`what`) to `out` as [`write_new`] does: never to a terminal (`example`
/// shows the redirection instead), and to a file only once its owner alone can read it.
pub fn write_secret<W: Write + AsFd>(
    mut out: W,
    terminal: bool,
    what: &str,
    example: &str,
    text: &str,
) -> std::io::Result<()> {
    if terminal {
        return Err(std::io::Error::other(format!(
            "refusing to print {what} on a terminal: redirect it to a file, {example}"
        )));
    }
    // The shell created the file with the umask's mode; a duplicate of the descriptor changes
    // the mode of the same file, whatever its name.
    let file = std::fs::File::from(out.as_fd().try_clone_to_owned()?);
    if file.metadata()?.is_file() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        write_new(std::fs::File::create(&path).unwrap(), false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let key = MasterKey::read(&path).unwrap();
        assert_eq!(key.to_file_text(), text);
        assert_eq!(format!("{key:?}"), "MasterKey(..)");

        for (bad, said) in [
            ("", "0 bytes"),
            (&text[..40], "40 bytes"),
            (&format!("{text}{text}"), "130 bytes"),
            (&text.replace(&text[..1], "g"), "not hexadecimal"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = MasterKey::read(&path).unwrap_err().to_string();
            assert!(e.contains(said) && e.contains("64 hexadecimal"), "{e}");
        }
        let refused = write_new(std::fs::File::create(&path).unwrap(), true).unwrap_err();
        assert!(refused.to_string().contains("terminal"), "{refused}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let e = MasterKey::read(&dir.path().join("missing")).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the master key file"),
            "{e}"
        );
    }

    #[test]
    fn the_setting_names_a_file_by_its_absolute_path() {
        assert_eq!(
            EncryptionSetting::parse("file:///etc/pf/master.key"),
            Ok(EncryptionSetting::File("/etc/pf/master.key".into()))
        );
        assert!(EncryptionSetting::parse("file://master.key").is_err());
        assert!(
            EncryptionSetting::parse("kms://alias/x")
                .unwrap_err()
                .contains("not supported yet")
        );
        assert!(EncryptionSetting::parse("/etc/pf/master.key").is_err());
    }
}
