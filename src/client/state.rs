//! Where an interrupted upload stands between runs: its tus URL, kept under the user's state
//! folder by the file's path, size and modification time (a changed file starts over) and the
//! service, participant and file ID it goes to. Only its user may read it: the folder is 0700
//! and each file 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// One upload's key; the file holding its state is named by the key's hash.
pub struct Key(String);

impl Key {
    pub fn new(path: &Path, size: u64, mtime: std::time::SystemTime, target: &str) -> Self {
        let since = mtime
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self(format!("{}\n{size}\n{since}\n{target}", path.display()))
    }

    fn file(&self) -> Option<PathBuf> {
        let name = URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes()));
        Some(dir()?.join(format!("{name}.upload")))
    }
}

/// `$XDG_STATE_HOME/participant-files`, else `~/.local/state/participant-files`.
fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("participant-files"))
}

/// The upload URL an earlier run of the same file left.
pub fn load(key: &Key) -> Option<String> {
    let text = std::fs::read_to_string(key.file()?).ok()?;
    let url = text.trim();
    url.starts_with("http").then(|| url.to_owned())
}

/// Remembers the upload URL; a failure only costs the resumption.
pub fn save(key: &Key, url: &str) {
    if let Some(file) = key.file() {
        let _ = write_private(&file, url);
    }
}

/// Writes `text` to `file` through a temporary file and a rename, so that a run killed
/// mid-write leaves the old state or the new one, never half of one.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    let dir = file.parent().ok_or(std::io::ErrorKind::NotFound)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A folder an earlier version made with the default permissions.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, file)
}

pub fn forget(key: &Key) {
    if let Some(file) = key.file() {
        let _ = std::fs::remove_file(file);
    }
}
