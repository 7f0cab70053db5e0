//! Bridge's JSON shapes: ParticipantFile, the forward-cursor page, StatusMessage.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::files::IssuedUrl;
use crate::model::{FileId, Owner, PendingUpload, StoredFile};

/// Bridge's timestamps: ISO 8601 in UTC with milliseconds.
#[must_use]
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A ParticipantFile. Fields that are not known are left out, never null.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantFile {
    pub file_id: String,
    /// The name the client sent with the file (NFC, without any path part), if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub user_id: String,
    pub app_id: String,
    pub created_on: String,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_status: Option<&'static str>,
    /// When the bytes were called clean (with a scanner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned_on: Option<String>,
    /// The scanner and signature version that called them clean, like `ClamAV 1.4.6/27480/...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_engine: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ParticipantFile {
    #[must_use]
    pub fn stored(owner: &Owner, file_id: &FileId, file: &StoredFile) -> Self {
        Self {
            file_id: file_id.to_string(),
            file_name: file.file_name.clone(),
            user_id: owner.participant.to_string(),
            app_id: owner.app.to_string(),
            created_on: timestamp(file.created_on),
            mime_type: file.mime_type.clone(),
            size: Some(file.size),
            sha256: file.sha256.clone(),
            scan_status: Some(file.scan_status.as_str()),
            scanned_on: file.scan.as_ref().map(|s| timestamp(s.scanned_on)),
            scan_engine: file.scan.as_ref().map(|s| s.engine.clone()),
            download_url: None,
            upload_url: None,
            expires_on: None,
            kind: "ParticipantFile",
        }
    }

    #[must_use]
    pub fn with_download(mut self, url: IssuedUrl) -> Self {
        self.download_url = Some(url.url);
        self.expires_on = Some(timestamp(url.expires_on));
        self
    }

    /// The answer to a POST: what was declared, and where to upload it.
    #[must_use]
    pub fn pending(owner: &Owner, file_id: &FileId, p: &PendingUpload, url: IssuedUrl) -> Self {
        Self {
            file_id: file_id.to_string(),
            file_name: p.file_name.clone(),
            user_id: owner.participant.to_string(),
            app_id: owner.app.to_string(),
            created_on: timestamp(p.created_on),
            mime_type: p.mime_type.clone(),
            size: p.size,
            sha256: p.sha256.clone(),
            scan_status: None,
            scanned_on: None,
            scan_engine: None,
            download_url: None,
            upload_url: Some(url.url),
            expires_on: Some(timestamp(url.expires_on)),
            kind: "ParticipantFile",
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestParams {
    pub offset_key: Option<String>,
    pub page_size: usize,
    /// The app-wide listing's bounds and filter, as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Bridge's ForwardCursorPagedResourceList.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub items: Vec<ParticipantFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_offset_key: Option<String>,
    pub has_next: bool,
    pub request_params: RequestParams,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusMessage {
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl StatusMessage {
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            count: None,
            kind: "StatusMessage",
        }
    }
}
