//! What a request costs as one participant's files grow: POST of an upload URL, a 1 KB
//! streaming PUT with a file quota set, and a resumable creation, at 0 to 30,000 committed
//! files, each as a share of the same service's `/health` (issue 26: flat is the target).

use std::process::Command;

use participant_files::index::FileIndex;
use participant_files::model::{AppId, Owner, UserId};

use super::{Service, token};

/// The participant's committed files at each step.
const SIZES: [u32; 4] = [0, 1_000, 10_000, 30_000];

/// One oha run of 5 s with 8 clients; requests per second. Every answer must be 2xx.
fn rate(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> f64 {
    let mut cmd = Command::new("oha");
    cmd.args(["-z", "5s", "-c", "8", "--no-tui", "--output-format", "json"]);
    cmd.args(["--redirect", "0", "-m", method]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    if url.contains("[0-9]") {
        cmd.arg("--rand-regex-url");
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("oha runs (scripts/bench installs it)");
    assert!(
        out.status.success(),
        "oha: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha prints JSON");
    let codes = &v["statusCodeDistribution"];
    assert!(
        codes
            .as_object()
            .is_some_and(|m| m.keys().all(|c| c.starts_with('2'))),
        "{url}: unexpected statuses {codes}"
    );
    v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0)
}

/// An index file where the participant `bench` already has `files` committed files, counted
/// as `reconcile` counts an index file written before counters.
async fn filled(files: u32) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("index.sqlite");
    let index = participant_files::index::SqliteFileIndex::open(&path)
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO files (app, participant, file_id, version, object_key, \
                     mime_type, size, scan_status, created_on) \
                     VALUES ('bench', 'bench', ?1, 1, ?2, 'text/plain', 1000, 'clean', ?3)",
                )
                .unwrap();
            let owner = owner();
            for i in 0..files {
                let key = participant_files::keys::ObjectKey::new(
                    &owner,
                    &participant_files::keys::UploadId::generate(),
                );
                insert
                    .execute(rusqlite::params![
                        format!("old{i:05}"),
                        key.as_str(),
                        1_793_491_200_000 + i64::from(i)
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    });
    index.recount(&owner()).await.unwrap();
    data
}

fn owner() -> Owner {
    Owner {
        app: AppId::parse("bench").unwrap(),
        participant: UserId::parse("bench").unwrap(),
    }
}

pub async fn usage(bucket: &str, push: &mut impl FnMut(String, String)) {
    let t = token();
    let auth = format!("Bearer {t}");
    let mut first: Option<[f64; 3]> = None;
    for n in SIZES {
        let data = filled(n).await;
        let service = Service::start_in(
            data,
            bucket,
            false,
            &[
                ("PF_STORE", "local".to_owned()),
                ("PF_MAX_PENDING_PER_PARTICIPANT", "1000".to_owned()),
                ("PF_MAX_FILES_PER_PARTICIPANT", "1000000".to_owned()),
                ("PF_MAX_RESUMABLE_PER_PARTICIPANT", "10000000".to_owned()),
                ("PF_MAX_RESUMABLE_PER_APP", "10000000".to_owned()),
            ],
        )
        .await;
        let files = format!("{}/v3/participants/self/files", service.base);
        let health = tokio::task::block_in_place(|| {
            rate(&format!("{}/health", service.base), "GET", &[], None)
        });
        let body = "x".repeat(1000);
        let shares = tokio::task::block_in_place(|| {
            let post = rate(
                &format!("{files}/n[0-9]{{2}}"),
                "POST",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                Some(r#"{"mimeType":"text/plain"}"#),
            );
            let put = rate(
                &format!("{files}/s[0-9]{{2}}"),
                "PUT",
                &[("Authorization", &auth), ("Content-Type", "text/plain")],
                Some(&body),
            );
            let create = rate(
                &format!("{}/v3/participants/self/uploads", service.base),
                "POST",
                &[
                    ("Authorization", &auth),
                    ("Tus-Resumable", "1.0.0"),
                    ("Upload-Length", "10"),
                    (
                        "Upload-Metadata",
                        "filename cmVzdW1lZC5iaW4=,filetype dGV4dC9wbGFpbg==",
                    ),
                ],
                None,
            );
            [post / health, put / health, create / health]
        });
        let base = *first.get_or_insert(shares);
        let names = [
            "POST an upload URL (100 files)",
            "streaming PUT of 1 KB, file quota set",
            "resumable creation",
        ];
        for (i, name) in names.iter().enumerate() {
            push(
                format!("usage: {name}, {n} committed files of the participant"),
                format!(
                    "{:.3} of /health ({:+.0}% against 0 files; target within 15%), /health {health:.0} req/s",
                    shares[i],
                    (shares[i] / base[i] - 1.0) * 100.0
                ),
            );
        }
    }
}
