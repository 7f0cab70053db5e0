//! The audit log: one JSON line per access to a participant's files, on its own sink.

use std::io::Write;
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::auth::Role;
use crate::config::AuditTarget;
use crate::model::{AppId, FileId, Owner, UserId};

/// What was done to a participant's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    List,
    /// A download URL was issued.
    Read,
    /// Bytes were served through a download URL.
    Download,
    /// A HEAD of a download URL: the file's headers, no bytes.
    DownloadHead,
    /// An upload URL was issued.
    UploadUrl,
    Upload,
    Replace,
    Delete,
    /// All of a participant's files were erased.
    Erase,
    /// A page of the app-wide listing (every participant's files).
    ListApp,
    /// `participant-files rescan` scanned the file's bytes again.
    Rescan,
    /// A resumable upload was created.
    UploadCreate,
    /// Bytes were appended to a resumable upload (`bytes` says how many).
    UploadAppend,
    /// A resumable upload was terminated, its bytes removed.
    UploadTerminate,
}

/// One audit line. Identifiers only: never a token, a URL or file content.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub request_id: String,
    pub app: String,
    /// Who acted: the token's subject, or the one a capability URL was issued to.
    pub actor: String,
    pub role: &'static str,
    /// Whose files; absent only on a refusal whose path named no valid participant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    pub action: Action,
    pub status: u16,
    pub bytes: u64,
    /// How many files a page of the app-wide listing showed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The signature an infected file was found with (a refused upload, a rescan's finding).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// An erase with encryption on: whether the participant's key was destroyed (false: they
    /// had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_destroyed: Option<bool>,
}

impl AuditEvent {
    /// An access by `actor` (acting as `role`) to `owner`'s files.
    #[must_use]
    #[allow(
        clippy::too_many_arguments,
        reason = "one field each of the audit line"
    )]
    pub fn new(
        request_id: &str,
        owner: &Owner,
        actor: &UserId,
        role: Role,
        file_id: Option<&FileId>,
        action: Action,
        status: u16,
        bytes: u64,
    ) -> Self {
        Self {
            request_id: request_id.to_owned(),
            app: owner.app.to_string(),
            actor: actor.to_string(),
            role: role.as_str(),
            participant: Some(owner.participant.to_string()),
            file_id: file_id.map(ToString::to_string),
            action,
            status,
            bytes,
            count: None,
            signature: None,
            key_destroyed: None,
        }
    }

    /// The same line, saying whether an erase destroyed the participant's key.
    #[must_use]
    pub fn with_key_destroyed(mut self, destroyed: Option<bool>) -> Self {
        self.key_destroyed = destroyed;
        self
    }

    /// The same line, naming the signature an infected file was found with.
    #[must_use]
    pub fn with_signature(mut self, signature: Option<&str>) -> Self {
        self.signature = signature.map(str::to_owned);
        self
    }
}

/// What is known of a request refused before its target was: the caller, and the participant
/// and file only when the path named valid ones.
pub struct Refusal<'a> {
    pub request_id: &'a str,
    pub app: &'a AppId,
    pub actor: &'a UserId,
    /// The caller's most privileged role, or `none` (a token with no role this service knows).
    pub role: &'static str,
    pub participant: Option<&'a UserId>,
    pub file_id: Option<&'a FileId>,
    pub action: Action,
    pub status: u16,
}

impl AuditEvent {
    /// A request refused (400, 403) before the participant it is about was established.
    #[must_use]
    pub fn refused(r: &Refusal<'_>) -> Self {
        Self {
            request_id: r.request_id.to_owned(),
            app: r.app.to_string(),
            actor: r.actor.to_string(),
            role: r.role,
            participant: r.participant.map(ToString::to_string),
            file_id: r.file_id.map(ToString::to_string),
            action: r.action,
            status: r.status,
            bytes: 0,
            count: None,
            signature: None,
            key_destroyed: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    pub fn open(target: &AuditTarget) -> std::io::Result<Self> {
        let sink: Box<dyn Write + Send> = match target {
            AuditTarget::Stdout => Box::new(std::io::stdout()),
            AuditTarget::Stderr => Box::new(std::io::stderr()),
            AuditTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(Self {
            sink: Mutex::new(sink),
        })
    }

    /// Writes one line; each line is written whole (one `write_all` under the lock).
    pub fn record(&self, event: &AuditEvent) {
        let line = Line {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
        };
        let mut text = serde_json::to_vec(&line).expect("audit lines serialise");
        text.push(b'\n');
        let mut sink = self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = sink.write_all(&text).and_then(|()| sink.flush()) {
            // Losing an audit line must be loud: the operator has to know the trail has a gap.
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
