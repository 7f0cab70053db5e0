//! The master key of `PF_ENCRYPTION` as an operator meets it: `keys new > master.key` writes a
//! key file only its owner can read, and the service refuses to start on a key file that is
//! missing, unreadable or of the wrong size, and (until files are encrypted) on a valid one.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_participant-files");

fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("PF_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs the service as `cmd` says and returns its exit status and stderr; fails when it is
/// still running after 30 s (it started, where it had to refuse).
fn refused(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let mut serve = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            serve.kill().unwrap();
            serve.wait().unwrap();
            panic!("the service started where it had to refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn keys_new_writes_a_key_file_only_its_owner_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    // As a shell's `>` makes it: with the umask's mode, before the command runs.
    let file = std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = command(dir.path())
        .args(["keys", "new"])
        .stdout(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65, "{} bytes", text.len());
    assert!(text[..64].bytes().all(|b| b.is_ascii_hexdigit()) && text.ends_with('\n'));

    // Into a pipe (a secret manager's CLI), a different key each time.
    let piped = command(dir.path()).args(["keys", "new"]).output().unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout.len(), 65);
    assert_ne!(piped.stdout, text.as_bytes());
}

#[test]
fn the_service_refuses_a_master_key_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "0123456789").unwrap();
    let not_hex = dir.path().join("nothex.key");
    std::fs::write(&not_hex, format!("{}\n", "z".repeat(64))).unwrap();
    let cases = [
        (
            dir.path().join("missing.key"),
            "cannot read the master key file",
        ),
        // A folder: read fails whoever runs the test (root reads any file).
        (dir.path().to_owned(), "cannot read the master key file"),
        (short, "holds 10 bytes: expected 64 hexadecimal characters"),
        (not_hex, "characters that are not hexadecimal"),
    ];
    for (path, said) in cases {
        let mut cmd = command(dir.path());
        cmd.env("PF_LISTEN", "127.0.0.1:0")
            .env("PF_DATA_DIR", dir.path().join("data"))
            .env("PF_ENCRYPTION", format!("file://{}", path.display()));
        let (status, stderr) = refused(cmd);
        assert_eq!(status.code(), Some(2), "{}: {stderr}", path.display());
        assert!(
            stderr.contains("PF_ENCRYPTION") && stderr.contains(said),
            "{}: {stderr}",
            path.display()
        );
    }
    let mut cmd = command(dir.path());
    cmd.env("PF_LISTEN", "127.0.0.1:0")
        .env("PF_ENCRYPTION", "master.key");
    let (status, stderr) = refused(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("file:///path/to/master.key"), "{stderr}");
    assert!(!dir.path().join("data").exists());

    // A valid key: commands that use it never print it (here, an identity nobody has).
    let key = dir.path().join("master.key");
    let made = command(dir.path())
        .args(["keys", "new"])
        .stdout(std::fs::File::create(&key).unwrap())
        .status()
        .unwrap();
    assert!(made.success());
    let mut cmd = command(dir.path());
    cmd.args([
        "keys",
        "identity",
        "--app",
        "study",
        "--participant",
        "nobody",
    ])
    .env("PF_DATA_DIR", dir.path().join("data"))
    .env("PF_ENCRYPTION", format!("file://{}", key.display()));
    let (status, stderr) = refused(cmd);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("study/nobody has no key"), "{stderr}");
    assert!(!stderr.contains(std::fs::read_to_string(&key).unwrap().trim()));
}
