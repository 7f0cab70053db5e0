//! How a file row is laid out in SQLite's columns, both ways.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};

use super::{backend, corrupt};
use crate::index::IndexError;
use crate::keys::ObjectKey;
use crate::model::{
    AppId, Claim, FileId, FileRow, Issuer, Lease, Owner, PendingUpload, ScanEvidence, ScanStatus,
    StoredFile, UserId, Versioned,
};

pub(super) const COLUMNS: &str = "app, participant, file_id, version, object_key, mime_type, size, sha256, \
    scan_status, created_on, pending_key, pending_mime_type, pending_size, pending_sha256, \
    pending_created_on, pending_expires_on, pending_issuer, claims, scanned_on, scan_engine, \
    scan_signature, pending_lease, file_name, pending_file_name";

pub(super) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> Result<DateTime<Utc>, IndexError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt("timestamp"))
}

pub(super) fn size_from(v: Option<i64>) -> Result<Option<u64>, IndexError> {
    v.map(|n| u64::try_from(n).map_err(|_| corrupt("size")))
        .transpose()
}

pub(super) fn size_to(v: Option<u64>) -> Result<Option<i64>, IndexError> {
    v.map(|n| i64::try_from(n).map_err(|_| corrupt("size")))
        .transpose()
}

/// The columns of one row as SQLite returns them, before they are checked.
pub(super) struct RawRow {
    app: String,
    participant: String,
    file_id: String,
    version: i64,
    object_key: Option<String>,
    mime_type: Option<String>,
    size: Option<i64>,
    sha256: Option<String>,
    scan_status: Option<String>,
    created_on: Option<i64>,
    pending_key: Option<String>,
    pending_mime_type: Option<String>,
    pending_size: Option<i64>,
    pending_sha256: Option<String>,
    pending_created_on: Option<i64>,
    pending_expires_on: Option<i64>,
    pending_issuer: Option<String>,
    claims: Option<String>,
    scanned_on: Option<i64>,
    scan_engine: Option<String>,
    scan_signature: Option<String>,
    pending_lease: Option<String>,
    file_name: Option<String>,
    pending_file_name: Option<String>,
}

impl RawRow {
    pub(super) fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            app: r.get(0)?,
            participant: r.get(1)?,
            file_id: r.get(2)?,
            version: r.get(3)?,
            object_key: r.get(4)?,
            mime_type: r.get(5)?,
            size: r.get(6)?,
            sha256: r.get(7)?,
            scan_status: r.get(8)?,
            created_on: r.get(9)?,
            pending_key: r.get(10)?,
            pending_mime_type: r.get(11)?,
            pending_size: r.get(12)?,
            pending_sha256: r.get(13)?,
            pending_created_on: r.get(14)?,
            pending_expires_on: r.get(15)?,
            pending_issuer: r.get(16)?,
            claims: r.get(17)?,
            scanned_on: r.get(18)?,
            scan_engine: r.get(19)?,
            scan_signature: r.get(20)?,
            pending_lease: r.get(21)?,
            file_name: r.get(22)?,
            pending_file_name: r.get(23)?,
        })
    }

    pub(super) fn into_row(self) -> Result<Versioned<FileRow>, IndexError> {
        let owner = Owner {
            app: AppId::parse(&self.app).map_err(|_| corrupt("app"))?,
            participant: UserId::parse(&self.participant).map_err(|_| corrupt("participant"))?,
        };
        let file_id = FileId::parse(&self.file_id).map_err(|_| corrupt("file ID"))?;
        let current = match self.object_key {
            None => None,
            Some(key) => Some(StoredFile {
                key: ObjectKey::parse(&key).ok_or_else(|| corrupt("object key"))?,
                mime_type: self.mime_type.ok_or_else(|| corrupt("mime type"))?,
                size: size_from(self.size)?.ok_or_else(|| corrupt("size"))?,
                sha256: self.sha256,
                scan_status: self
                    .scan_status
                    .as_deref()
                    .and_then(ScanStatus::parse)
                    .ok_or_else(|| corrupt("scan status"))?,
                created_on: from_millis(self.created_on.ok_or_else(|| corrupt("created on"))?)?,
                scan: match (self.scanned_on, self.scan_engine) {
                    (Some(on), Some(engine)) => Some(ScanEvidence {
                        scanned_on: from_millis(on)?,
                        engine,
                        signature: self.scan_signature,
                    }),
                    _ => None,
                },
                file_name: self.file_name,
            }),
        };
        let pending = match self.pending_key {
            None => None,
            Some(key) => {
                let key = ObjectKey::parse(&key).ok_or_else(|| corrupt("pending key"))?;
                Some(PendingUpload {
                    upload_id: key.upload_id(),
                    key,
                    mime_type: self
                        .pending_mime_type
                        .ok_or_else(|| corrupt("pending type"))?,
                    size: size_from(self.pending_size)?,
                    sha256: self.pending_sha256,
                    created_on: from_millis(
                        self.pending_created_on
                            .ok_or_else(|| corrupt("pending created on"))?,
                    )?,
                    expires_on: from_millis(
                        self.pending_expires_on
                            .ok_or_else(|| corrupt("pending expiry"))?,
                    )?,
                    issuer: self.pending_issuer.as_deref().and_then(Issuer::decode),
                    lease: self.pending_lease.as_deref().and_then(Lease::decode),
                    file_name: self.pending_file_name,
                })
            }
        };
        let claims = match self.claims.as_deref() {
            None => Vec::new(),
            Some(c) => Claim::decode_all(c).ok_or_else(|| corrupt("claims"))?,
        };
        Ok(Versioned {
            value: FileRow {
                owner,
                file_id,
                current,
                pending,
                claims,
            },
            version: u64::try_from(self.version).map_err(|_| corrupt("version"))?,
        })
    }
}

/// Writes `row` at `version` over whatever the table holds at its key.
pub(super) fn insert(tx: &Connection, row: &FileRow, version: u64) -> Result<(), IndexError> {
    let c = row.current.as_ref();
    let p = row.pending.as_ref();
    let (stored_version, size, pending_size) = (
        i64::try_from(version).map_err(|_| corrupt("version"))?,
        size_to(c.map(|c| c.size))?,
        size_to(p.and_then(|p| p.size))?,
    );
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO files ({COLUMNS}) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
    ))
    .and_then(|mut s| s.execute(params![
            row.owner.app.as_str(),
            row.owner.participant.as_str(),
            row.file_id.as_str(),
            stored_version,
            c.map(|c| c.key.as_str()),
            c.map(|c| c.mime_type.as_str()),
            size,
            c.and_then(|c| c.sha256.as_deref()),
            c.map(|c| c.scan_status.as_str()),
            c.map(|c| millis(c.created_on)),
            p.map(|p| p.key.as_str()),
            p.map(|p| p.mime_type.as_str()),
            pending_size,
            p.and_then(|p| p.sha256.as_deref()),
            p.map(|p| millis(p.created_on)),
            p.map(|p| millis(p.expires_on)),
            p.and_then(|p| p.issuer.as_ref()).map(Issuer::encode),
            Claim::encode_all(&row.claims),
            c.and_then(|c| c.scan.as_ref()).map(|s| millis(s.scanned_on)),
            c.and_then(|c| c.scan.as_ref()).map(|s| s.engine.as_str()),
            c.and_then(|c| c.scan.as_ref())
                .and_then(|s| s.signature.as_deref()),
            p.and_then(|p| p.lease.as_ref()).map(Lease::encode),
            c.and_then(|c| c.file_name.as_deref()),
            p.and_then(|p| p.file_name.as_deref()),
        ]))
    .map_err(|e| backend("put failed", e))?;
    Ok(())
}
