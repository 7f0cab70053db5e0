//! `participant-files upload`: a tus upload in chunks, each with its own checksum, retried with
//! backoff, resumed by a later run from the offset the service reports.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::progress::Progress;
use super::{Attempt, ClientError, Connection, Retries, refusal, state};
use crate::model::FileName;

const TUS: &str = "1.0.0";

/// Answers in a row that take a chunk without moving the upload's offset, before the client
/// stops: a service that works moves it every time (or says where it stands, once).
const MAX_STALLS: u32 = 3;

/// What to upload.
pub struct Upload<'a> {
    pub file: &'a Path,
    pub file_id: Option<&'a str>,
    pub mime_type: Option<&'a str>,
    pub chunk_size: u64,
}

/// Uploads the file and returns the stored file's metadata (ParticipantFile, without its
/// download URL).
///
/// # Errors
/// [`ClientError`]: refused by the service, given up after the retries, or a bad file.
pub async fn upload(conn: &Connection, up: Upload<'_>) -> Result<serde_json::Value, ClientError> {
    let size = tokio::fs::metadata(up.file).await.ok().map(|m| m.len());
    upload_file(conn, &up).await.map_err(|e| {
        let e = conn.explain(e, size);
        match e {
            // The service's rule for IDs refused the one the client made from the file's name.
            ClientError::Refused {
                status: 400,
                message,
                advice,
            } if up.file_id.is_none() && message.contains("fileId") => ClientError::Refused {
                status: 400,
                message,
                advice: format!(
                    "the fileId was taken from the file's name; give one with --file-id{}",
                    if advice.is_empty() {
                        String::new()
                    } else {
                        format!("; {advice}")
                    }
                ),
            },
            e => e,
        }
    })
}

async fn upload_file(conn: &Connection, up: &Upload<'_>) -> Result<serde_json::Value, ClientError> {
    let unreadable =
        |e: std::io::Error| ClientError::Usage(format!("cannot read {}: {e}", up.file.display()));
    let meta = tokio::fs::metadata(up.file).await.map_err(unreadable)?;
    if !meta.is_file() {
        return Err(ClientError::Usage(format!(
            "{} is not a file",
            up.file.display()
        )));
    }
    // The name goes as tus `filename`; without --file-id the service derives the fileId from
    // it by the rule this crate shares with it, so the fileId is known here too.
    let parsed = up
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .map(FileName::parse);
    let file_id = match (up.file_id, &parsed) {
        (Some(id), _) => id.to_owned(),
        (None, Some(Ok(name))) => name.file_id().to_string(),
        (None, Some(Err(e))) => {
            return Err(ClientError::Usage(format!(
                "the file's name {e}: give the file's ID with --file-id"
            )));
        }
        (None, None) => {
            return Err(ClientError::Usage(
                "the file's name is not UTF-8: give the file's ID with --file-id".to_owned(),
            ));
        }
    };
    let name = parsed
        .as_ref()
        .and_then(|p| p.as_ref().ok())
        .map(FileName::as_str);
    let size = meta.len();
    let path = tokio::fs::canonicalize(up.file).await.map_err(unreadable)?;
    let key = state::Key::new(
        &path,
        size,
        meta.modified().map_err(unreadable)?,
        &format!("{}\n{}\n{file_id}", conn.base, conn.user),
    );
    let mut file = tokio::fs::File::open(&path).await.map_err(unreadable)?;
    let progress = Progress::new(size, "uploaded");
    let mut retries = Retries::new(conn.retry_for);

    // The service checks the whole file against this at completion; a resumed upload has
    // sent it already.
    let mut sha256 = None;
    let mut location = state::load(&key).and_then(|saved| {
        let url = reqwest::Url::parse(&saved)
            .ok()
            .filter(|u| conn.same_origin(u));
        if url.is_none() {
            // Not --url's origin: the token goes nowhere else, so the upload starts over.
            progress.note("the saved upload is not at --url's origin; starting a new upload");
            state::forget(&key);
        }
        url.map(String::from)
    });
    if location.is_none() {
        // A wrong --url is told now, not after hashing a large file.
        discover(conn).await?;
    }
    let mut offset = None;
    let mut stalls = 0;
    loop {
        if stalls >= MAX_STALLS {
            progress.finish();
            return Err(ClientError::Failed(format!(
                "the service took the chunk{} {MAX_STALLS} times without moving the upload's \
                 offset, so sending it again would not help; check that --url is the service \
                 (not a proxy that drops request bodies), then run the same command again",
                offset.map_or_else(String::new, |at| format!(" at byte {at}"))
            )));
        }
        let step = match (location.clone(), offset) {
            (None, _) => {
                if sha256.is_none() {
                    file.seek(std::io::SeekFrom::Start(0))
                        .await
                        .map_err(unreadable)?;
                    sha256 = Some(super::sha256_of(&mut file).await.map_err(unreadable)?);
                }
                let sha256 = sha256.as_deref().unwrap_or_default();
                create(conn, (up.file_id, name), size, sha256, up.mime_type)
                    .await
                    .map(|loc| {
                        state::save(&key, &loc);
                        location = Some(loc);
                        offset = Some(0);
                    })
            }
            (Some(loc), None) => match head(conn, &loc).await {
                Ok(at) => {
                    if at > 0 {
                        progress.note(&format!("resuming at byte {at}"));
                    }
                    offset = Some(at);
                    Ok(())
                }
                // Expired, or gone: from the start again.
                Err(Attempt::Refused(ClientError::Refused {
                    status: 404 | 410, ..
                })) => {
                    location = None;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            (Some(_), Some(at)) if at >= size => break,
            (Some(loc), Some(at)) => {
                let length = up.chunk_size.min(size - at);
                let chunk = read_at(&mut file, at, length).await.map_err(unreadable)?;
                match patch(conn, &loc, at, chunk).await {
                    Ok(next) if next > at => {
                        offset = Some(next);
                        progress.step(next);
                        retries.reset();
                        stalls = 0;
                        Ok(())
                    }
                    Ok(_) => {
                        stalls += 1;
                        offset = Some(at);
                        Ok(())
                    }
                    // Out of step (an earlier answer got lost): ask where it stands.
                    Err(Attempt::Refused(ClientError::Refused { status: 409, .. })) => {
                        stalls += 1;
                        offset = None;
                        Ok(())
                    }
                    Err(e) => {
                        offset = None;
                        Err(e)
                    }
                }
            }
        };
        match step {
            Ok(()) => {}
            Err(Attempt::Refused(e)) => {
                if matches!(&e, ClientError::Refused { status, .. } if !matches!(status, 401 | 403))
                {
                    // The upload itself was refused: a new run starts over.
                    state::forget(&key);
                }
                progress.finish();
                return Err(e);
            }
            Err(Attempt::Retry(why)) => {
                if let Err(e) = retries.pause(why, &progress).await {
                    progress.finish();
                    return Err(e);
                }
            }
        }
    }
    progress.finish();
    state::forget(&key);
    stored(conn, &file_id, &mut retries, &progress).await
}

async fn read_at(file: &mut tokio::fs::File, at: u64, length: u64) -> std::io::Result<Bytes> {
    file.seek(std::io::SeekFrom::Start(at)).await?;
    let mut buf = vec![0u8; usize::try_from(length).map_err(std::io::Error::other)?];
    file.read_exact(&mut buf).await?;
    Ok(buf.into())
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// tus discovery (OPTIONS, no token): whatever the answer, the service is reachable; a
/// connection refused or a name not found ends the run here.
async fn discover(conn: &Connection) -> Result<(), ClientError> {
    let url = format!("{}/v3/participants/{}/uploads", conn.base, conn.user);
    match conn
        .send(conn.http.request(reqwest::Method::OPTIONS, url))
        .await
    {
        Err(Attempt::Refused(e)) => Err(e),
        Ok(_) | Err(Attempt::Retry(_)) => Ok(()),
    }
}

/// Creates the upload of the file named `ids.1`, as `ids.0` when given; its URL.
async fn create(
    conn: &Connection,
    ids: (Option<&str>, Option<&str>),
    size: u64,
    sha256: &str,
    mime_type: Option<&str>,
) -> Result<String, Attempt> {
    let mut pairs = vec![("sha256", sha256)];
    if let Some(id) = ids.0 {
        pairs.push(("fileId", id));
    }
    if let Some(name) = ids.1 {
        pairs.push(("filename", name));
    }
    if let Some(t) = mime_type {
        pairs.push(("mimeType", t));
    }
    let res = conn
        .send(
            conn.http
                .post(format!(
                    "{}/v3/participants/{}/uploads",
                    conn.base, conn.user
                ))
                .bearer_auth(&conn.token)
                .header("tus-resumable", TUS)
                .header("upload-length", size)
                .header("upload-metadata", metadata(&pairs)),
        )
        .await?;
    if res.status() != reqwest::StatusCode::CREATED {
        return Err(refusal(res).await);
    }
    // tus allows a Location relative to the request's URL.
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| res.url().join(l).ok())
        .ok_or_else(|| Attempt::Retry("the creation's answer had no Location".to_owned()))?;
    if !conn.same_origin(&location) {
        return Err(Attempt::Refused(ClientError::Failed(format!(
            "the service named an upload URL at {}, not at --url's origin {}; the token and \
             the file go only to --url's origin. If the service is reached at that address \
             (its PF_PUBLIC_URL), give it as --url",
            location.origin().ascii_serialization(),
            conn.base
        ))));
    }
    Ok(location.into())
}

/// The upload's offset; HEAD also completes an upload whose completion failed before.
async fn head(conn: &Connection, location: &str) -> Result<u64, Attempt> {
    let res = conn
        .send(
            conn.http
                .head(location)
                .bearer_auth(&conn.token)
                .header("tus-resumable", TUS),
        )
        .await?;
    if res.status() != reqwest::StatusCode::OK {
        return Err(refusal(res).await);
    }
    offset_of(&res)
}

/// Sends one chunk at `at`, with its SHA-256; the new offset.
async fn patch(conn: &Connection, location: &str, at: u64, chunk: Bytes) -> Result<u64, Attempt> {
    let checksum = format!("sha256 {}", STANDARD.encode(Sha256::digest(&chunk)));
    let res = conn
        .send(
            conn.http
                .patch(location)
                .bearer_auth(&conn.token)
                .header("tus-resumable", TUS)
                .header("upload-offset", at)
                .header("upload-checksum", checksum)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/offset+octet-stream",
                )
                .body(chunk),
        )
        .await?;
    if res.status() != reqwest::StatusCode::NO_CONTENT {
        return Err(refusal(res).await);
    }
    offset_of(&res)
}

fn offset_of(res: &reqwest::Response) -> Result<u64, Attempt> {
    res.headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Attempt::Retry("the answer had no Upload-Offset".to_owned()))
}

/// The stored file's metadata, from the 302 of its GET (its download URL left out).
async fn stored(
    conn: &Connection,
    file_id: &str,
    retries: &mut Retries,
    progress: &Progress,
) -> Result<serde_json::Value, ClientError> {
    loop {
        let attempt = conn.file(file_id).await.map(|mut file| {
            if let Some(o) = file.as_object_mut() {
                o.remove("downloadUrl");
                o.remove("expiresOn");
            }
            file
        });
        match attempt {
            Ok(file) => return Ok(file),
            Err(Attempt::Refused(e)) => return Err(e),
            Err(Attempt::Retry(why)) => retries.pause(why, progress).await?,
        }
    }
}
