//! How a file row is laid out as a DynamoDB item, and the keys that put it into the indexes.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Item, corrupt, pk};
use crate::index::{AppPosition, IndexError};
use crate::keys::ObjectKey;
use crate::model::{
    AppId, Claim, FileId, FileRow, Issuer, Lease, Owner, PendingUpload, ScanEvidence, ScanStatus,
    StoredFile, UserId, Versioned,
};

/// The app-wide listing's indexes: name, hash key attribute.
pub(super) const BY_APP: (&str, &str) = ("byApp", "gsiApp");
pub(super) const BY_APP_FILE: (&str, &str) = ("byAppFile", "gsiAppFile");
/// The range key of both.
pub(super) const GSI_TIME: &str = "gsiTime";
/// The settler's index of rows holding an upload URL: one hash value, the row as range key.
pub(super) const BY_PENDING: (&str, &str) = ("byPending", "gsiPending");
pub(super) const PENDING_HASH: &str = "pending";
pub(super) const GSI_ROW: &str = "gsiRow";

/// Every index: name, hash key attribute, range key attribute.
pub(super) const INDEXES: [(&str, &str, &str); 3] = [
    (BY_APP.0, BY_APP.1, GSI_TIME),
    (BY_APP_FILE.0, BY_APP_FILE.1, GSI_TIME),
    (BY_PENDING.0, BY_PENDING.1, GSI_ROW),
];

/// The largest `createdOn` the sort key can carry (15 digits of milliseconds: year 33658).
pub(super) const MAX_TIME_KEY: i64 = 999_999_999_999_999;

/// Milliseconds as the fixed-width leading part of `gsiTime`, so that text order is time order.
pub(super) fn time_key(ms: i64) -> String {
    format!("{:015}", ms.clamp(0, MAX_TIME_KEY))
}

pub(super) fn position_key(p: &AppPosition) -> String {
    format!("{}#{}#{}", time_key(p.created_on), p.participant, p.file_id)
}

/// The position a `gsiTime` names; `None` when it is not one this index wrote.
pub(super) fn parse_position(key: &str) -> Option<AppPosition> {
    let mut parts = key.splitn(3, '#');
    let ms = parts.next()?;
    if ms.len() != 15 || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(AppPosition {
        created_on: ms.parse().ok()?,
        participant: UserId::parse(parts.next()?).ok()?,
        file_id: FileId::parse(parts.next()?).ok()?,
    })
}

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn time(t: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub(super) fn get_n(item: &Item, name: &str) -> Result<Option<u64>, IndexError> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| corrupt(name))
        })
        .transpose()
}

pub(super) fn get_time(item: &Item, name: &str) -> Result<DateTime<Utc>, IndexError> {
    get_s(item, name)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| corrupt(name))
}

pub(super) fn to_item(row: &FileRow, version: u64) -> Item {
    let mut item = Item::new();
    item.insert("pk".into(), s(&pk(&row.owner)));
    item.insert("fileId".into(), s(row.file_id.as_str()));
    item.insert("app".into(), s(row.owner.app.as_str()));
    item.insert("participant".into(), s(row.owner.participant.as_str()));
    item.insert("version".into(), n(version));
    if let Some(c) = &row.current {
        item.insert("objectKey".into(), s(c.key.as_str()));
        item.insert("mimeType".into(), s(&c.mime_type));
        item.insert("size".into(), n(c.size));
        if let Some(sha) = &c.sha256 {
            item.insert("sha256".into(), s(sha));
        }
        item.insert("scanStatus".into(), s(c.scan_status.as_str()));
        item.insert("createdOn".into(), time(c.created_on));
        if let Some(name) = &c.file_name {
            item.insert("fileName".into(), s(name));
        }
        if let Some(scan) = &c.scan {
            item.insert("scannedOn".into(), time(scan.scanned_on));
            item.insert("scanEngine".into(), s(&scan.engine));
            if let Some(sig) = &scan.signature {
                item.insert("scanSignature".into(), s(sig));
            }
        }
    }
    for (name, value) in index_keys(row) {
        item.insert(name.into(), s(&value));
    }
    if let Some(p) = &row.pending {
        item.insert("pendingKey".into(), s(p.key.as_str()));
        item.insert("pendingMimeType".into(), s(&p.mime_type));
        if let Some(size) = p.size {
            item.insert("pendingSize".into(), n(size));
        }
        if let Some(sha) = &p.sha256 {
            item.insert("pendingSha256".into(), s(sha));
        }
        item.insert("pendingCreatedOn".into(), time(p.created_on));
        item.insert("pendingExpiresOn".into(), time(p.expires_on));
        if let Some(issuer) = &p.issuer {
            item.insert("pendingIssuer".into(), s(&issuer.encode()));
        }
        if let Some(lease) = &p.lease {
            item.insert("pendingLease".into(), s(&lease.encode()));
        }
        if let Some(name) = &p.file_name {
            item.insert("pendingFileName".into(), s(name));
        }
    }
    if let Some(claims) = Claim::encode_all(&row.claims) {
        item.insert("claims".into(), s(&claims));
    }
    item
}

/// The attributes that put a row into the indexes: the listing's for a row with committed
/// bytes, the settler's for a row with an upload URL (the indexes are sparse).
pub(super) fn index_keys(row: &FileRow) -> Vec<(&'static str, String)> {
    let mut keys = Vec::new();
    if let Some(pos) = AppPosition::of(row) {
        keys.push((BY_APP.1, row.owner.app.to_string()));
        keys.push((BY_APP_FILE.1, format!("{}#{}", row.owner.app, row.file_id)));
        keys.push((GSI_TIME, position_key(&pos)));
    }
    if row.pending.is_some() {
        keys.push((BY_PENDING.1, PENDING_HASH.to_owned()));
        keys.push((GSI_ROW, row_key(&row.owner, &row.file_id)));
    }
    keys
}

/// `{app}#{participant}#{fileId}`: the settler index's range key, unique per row.
pub(super) fn row_key(owner: &Owner, file: &FileId) -> String {
    format!("{}#{file}", pk(owner))
}

pub(super) fn from_item(item: &Item) -> Result<Versioned<FileRow>, IndexError> {
    let owner = Owner {
        app: get_s(item, "app")
            .and_then(|v| AppId::parse(v).ok())
            .ok_or_else(|| corrupt("app"))?,
        participant: get_s(item, "participant")
            .and_then(|v| UserId::parse(v).ok())
            .ok_or_else(|| corrupt("participant"))?,
    };
    let file_id = get_s(item, "fileId")
        .and_then(|v| FileId::parse(v).ok())
        .ok_or_else(|| corrupt("fileId"))?;
    let current = match get_s(item, "objectKey") {
        None => None,
        Some(key) => Some(StoredFile {
            key: ObjectKey::parse(key).ok_or_else(|| corrupt("objectKey"))?,
            mime_type: get_s(item, "mimeType")
                .ok_or_else(|| corrupt("mimeType"))?
                .to_owned(),
            size: get_n(item, "size")?.ok_or_else(|| corrupt("size"))?,
            sha256: get_s(item, "sha256").map(str::to_owned),
            scan_status: get_s(item, "scanStatus")
                .and_then(ScanStatus::parse)
                .ok_or_else(|| corrupt("scanStatus"))?,
            created_on: get_time(item, "createdOn")?,
            scan: match get_s(item, "scanEngine") {
                Some(engine) => Some(ScanEvidence {
                    scanned_on: get_time(item, "scannedOn")?,
                    engine: engine.to_owned(),
                    signature: get_s(item, "scanSignature").map(str::to_owned),
                }),
                None => None,
            },
            file_name: get_s(item, "fileName").map(str::to_owned),
        }),
    };
    let pending = match get_s(item, "pendingKey") {
        None => None,
        Some(key) => {
            let key = ObjectKey::parse(key).ok_or_else(|| corrupt("pendingKey"))?;
            Some(PendingUpload {
                upload_id: key.upload_id(),
                key,
                mime_type: get_s(item, "pendingMimeType")
                    .ok_or_else(|| corrupt("pendingMimeType"))?
                    .to_owned(),
                size: get_n(item, "pendingSize")?,
                sha256: get_s(item, "pendingSha256").map(str::to_owned),
                created_on: get_time(item, "pendingCreatedOn")?,
                expires_on: get_time(item, "pendingExpiresOn")?,
                issuer: get_s(item, "pendingIssuer").and_then(Issuer::decode),
                lease: get_s(item, "pendingLease").and_then(Lease::decode),
                file_name: get_s(item, "pendingFileName").map(str::to_owned),
            })
        }
    };
    let claims = match get_s(item, "claims") {
        None => Vec::new(),
        Some(c) => Claim::decode_all(c).ok_or_else(|| corrupt("claims"))?,
    };
    Ok(Versioned {
        version: get_n(item, "version")?.ok_or_else(|| corrupt("version"))?,
        value: FileRow {
            owner,
            file_id,
            current,
            pending,
            claims,
        },
    })
}
