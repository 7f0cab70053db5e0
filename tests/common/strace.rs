//! The service under strace, and strace's log read back as calls: for tests that check what
//! reaches the disk, and when (a sync before an answer, a sync while bytes still arrive).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The service under `strace -f`, writing its log of system calls to `trace`.
pub struct Traced {
    pub strace: std::process::Child,
    /// The service's own process, a child of strace.
    pub pid: u32,
}

pub async fn spawn_traced(port: u16, env: &[(&str, String)], trace: &Path, traced: &str) -> Traced {
    let pid_file = trace.with_extension("pid");
    let mut cmd = std::process::Command::new("strace");
    // Only the traced calls stop the service (seccomp-bpf); -s 16 shows the first bytes of
    // each buffer, enough to tell a POST and a 201 and too few for a token or an upload URL.
    cmd.args(["-f", "--seccomp-bpf", "-ttt", "-T", "-s", "16", "-e"])
        .arg(format!("trace={traced}"))
        .arg("-o")
        .arg(trace)
        .args(["--", "sh", "-c", "echo $$ > \"$0\" && exec \"$1\""])
        .arg(&pid_file)
        .arg(env!("CARGO_BIN_EXE_participant-files"))
        .env("PF_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let strace = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run strace ({e}): scripts/backends.sh (pf_install_backends) installs it")
    });
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the service did not come up under strace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Traced { strace, pid }
}

/// One system call from strace's log, joined from its `<unfinished ...>` and
/// `<... resumed>` halves when another thread's call came between them; a call the kill cut
/// short has no end and returned `i64::MIN`.
pub struct Call {
    pub start: f64,
    pub end: f64,
    pub name: String,
    pub args: String,
    pub ret: i64,
}

impl Call {
    pub fn fd(&self) -> Option<i64> {
        self.args.split([',', ')']).next()?.trim().parse().ok()
    }

    /// The first string argument: a path, or the first bytes of a buffer (escaped).
    pub fn text(&self) -> &str {
        self.args
            .split_once('"')
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("", |(text, _)| text)
    }
}

/// The calls of an `strace -f -ttt -T` log, in the order they started.
pub fn calls(log: &str) -> Vec<Call> {
    let mut unfinished: HashMap<&str, (f64, &str, &str)> = HashMap::new();
    let mut calls = Vec::new();
    for line in log.lines() {
        // `PID TIME CALL`, the PID padded with spaces to a common width.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            if let Some((name, args)) = head.split_once('(') {
                unfinished.insert(pid, (time, name, args));
            }
            continue;
        }
        let (start, name, args, tail) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((start, name, args)) = unfinished.remove(pid) else {
                continue;
            };
            (start, name, format!("{args}{tail}"), tail)
        } else {
            let Some((name, tail)) = rest.split_once('(') else {
                continue; // `+++ killed by SIGKILL +++` and signals
            };
            (time, name, tail.to_owned(), tail)
        };
        let Some((result, duration)) = tail.rsplit_once(" <") else {
            continue;
        };
        // strace pads short calls to align their results: `fsync(11)       = 0`.
        let Some((_, returned)) = result.rsplit_once(" = ") else {
            continue;
        };
        let (Ok(duration), Some(Ok(value))) = (
            duration.trim_end_matches('>').parse::<f64>(),
            returned.split_whitespace().next().map(str::parse::<i64>),
        ) else {
            continue;
        };
        calls.push(Call {
            start,
            end: start + duration,
            name: name.to_owned(),
            args,
            ret: value,
        });
    }
    // Calls the SIGKILL cut short: a write's bytes may have left already, a sync did not end.
    for (start, name, args) in unfinished.into_values() {
        calls.push(Call {
            start,
            end: f64::INFINITY,
            name: name.to_owned(),
            args: args.to_owned(),
            ret: i64::MIN,
        });
    }
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    calls
}
