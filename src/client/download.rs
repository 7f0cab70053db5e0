//! `participant-files download`: asks the service for the file's download URL (the 302),
//! fetches it into `PATH.part`, resuming a partial one with `Range`, checks the SHA-256 the
//! service recorded, and only then renames it to `PATH`.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::progress::Progress;
use super::{Attempt, ClientError, Connection, Retries, refusal};

/// The stored file as the service describes it.
struct Described {
    url: String,
    size: u64,
    sha256: Option<String>,
}

/// Downloads the file to `output` (default: the file's ID in the current folder) and returns
/// where it is.
///
/// # Errors
/// [`ClientError`]: refused by the service, given up after the retries, bytes that are not
/// the file's, or a path that cannot be written.
pub async fn download(
    conn: &Connection,
    file_id: &str,
    output: Option<&Path>,
) -> Result<PathBuf, ClientError> {
    let out = output.map_or_else(|| PathBuf::from(file_id), Path::to_path_buf);
    let part = PathBuf::from(format!("{}.part", out.display()));
    let unwritable =
        |e: std::io::Error| ClientError::Usage(format!("cannot write {}: {e}", part.display()));
    let mut retries = Retries::new(conn.retry_for);
    let mut progress: Option<Progress> = None;
    let partial = |part: &Path| std::fs::metadata(part).map_or(0, |m| m.len());
    let mut had = partial(&part);
    let described = loop {
        let attempt = async {
            let described = describe(conn, file_id).await?;
            let bar = progress.get_or_insert_with(|| Progress::new(described.size, "downloaded"));
            fetch(conn, &described, &part, bar).await?;
            Ok::<_, Attempt>(described)
        };
        match attempt.await {
            Ok(d) => break d,
            Err(Attempt::Refused(e)) => return Err(conn.explain(e, None)),
            Err(Attempt::Retry(why)) => {
                if partial(&part) > had {
                    had = partial(&part);
                    retries.reset();
                }
                let quiet = Progress::new(0, "downloaded");
                retries
                    .pause(why, progress.as_ref().unwrap_or(&quiet))
                    .await?;
            }
        }
    };
    if let Some(p) = &progress {
        p.finish();
    }
    if let Some(expected) = &described.sha256 {
        let mut file = tokio::fs::File::open(&part).await.map_err(unwritable)?;
        let got = super::sha256_of(&mut file).await.map_err(unwritable)?;
        if &got != expected {
            // A partial file that was not this file's beginning: nothing of it is kept.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(ClientError::Failed(
                "the downloaded bytes are not the stored file's (SHA-256 differs); the partial \
                 file was removed: run the same command again to download it whole"
                    .to_owned(),
            ));
        }
    }
    tokio::fs::rename(&part, &out).await.map_err(unwritable)?;
    Ok(out)
}

/// The 302's body: the download URL, the size and the SHA-256.
async fn describe(conn: &Connection, file_id: &str) -> Result<Described, Attempt> {
    let file = conn.file(file_id).await?;
    let url = file["downloadUrl"]
        .as_str()
        .ok_or_else(|| Attempt::Retry("the answer named no download URL".to_owned()))?;
    Ok(Described {
        url: url.to_owned(),
        size: file["size"].as_u64().unwrap_or(0),
        sha256: file["sha256"].as_str().map(str::to_owned),
    })
}

/// Fetches what `part` does not hold yet.
async fn fetch(
    conn: &Connection,
    described: &Described,
    part: &Path,
    progress: &Progress,
) -> Result<(), Attempt> {
    let io = |e: std::io::Error| {
        Attempt::Refused(ClientError::Usage(format!(
            "cannot write {}: {e}",
            part.display()
        )))
    };
    let mut have = tokio::fs::metadata(part).await.map_or(0, |m| m.len());
    if have > described.size {
        have = 0;
    }
    if have == described.size && have > 0 {
        return Ok(());
    }
    let mut req = conn.http.get(&described.url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let res = conn.send(req).await?;
    let append = match res.status() {
        reqwest::StatusCode::PARTIAL_CONTENT => true,
        reqwest::StatusCode::OK => false,
        _ => return Err(refusal(res).await),
    };
    if append {
        progress.note(&format!("resuming at byte {have}"));
    } else {
        have = 0;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(io)?;
    progress.set(have);
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Attempt::Retry(super::explain::network(
                e,
                &reqwest::Url::parse(&described.url).map_or_else(
                    |_| "the download URL".to_owned(),
                    |u| u.origin().ascii_serialization(),
                ),
            ))
        })?;
        file.write_all(&chunk).await.map_err(io)?;
        have += chunk.len() as u64;
        progress.set(have);
    }
    file.sync_all().await.map_err(io)?;
    if have != described.size {
        return Err(Attempt::Retry(format!(
            "the download ended at byte {have} of {}",
            described.size
        )));
    }
    Ok(())
}
