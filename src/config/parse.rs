//! Parsers of single setting values; each error names what a valid value looks like.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{AuditTarget, ClamdAddress, IndexLocation, MAX_URL_TTL, MIB, StoreLocation};
use crate::auth::Role;
use crate::model::{AppId, UserId};

pub(crate) fn parse_user(s: &str) -> Result<UserId, String> {
    UserId::parse(s).map_err(|e| format!("a user ID {e}"))
}

pub(crate) fn parse_app(s: &str) -> Result<AppId, String> {
    AppId::parse(s).map_err(|e| format!("an app ID {e}"))
}

pub(super) fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected participant, researcher or worker".to_owned())
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; expected a duration like 30s, 15m or 1h"))?;
    if d.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(d)
}

/// An age, where zero means "anything already started".
pub(super) fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration like 0s, 15m or 1h"))
}

/// A browser origin: `http` or `https`, a host and maybe a port, nothing after.
pub(super) fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    let host = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or("an origin starts with https:// or http://")?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err("an origin is scheme://host[:port], with no path".to_owned());
    }
    Ok(s.to_owned())
}

pub(super) fn parse_url_ttl(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) || d > MAX_URL_TTL {
        return Err("must be from 1s to 7d".to_owned());
    }
    Ok(d)
}

pub(super) fn parse_size(s: &str) -> Result<u64, String> {
    let size = bytesize::ByteSize::from_str(s.trim())
        .map_err(|_| "expected a size like 1048576, 100MiB or 1GiB".to_owned())?
        .as_u64();
    if size == 0 {
        return Err("must be more than zero".to_owned());
    }
    Ok(size)
}

pub(super) fn parse_part_size(s: &str) -> Result<u64, String> {
    let size = parse_size(s)?;
    if !(crate::store::MIN_PART_SIZE..=5 * 1024 * MIB).contains(&size) {
        return Err("must be from 5MiB to 5GiB, as S3 requires".to_owned());
    }
    Ok(size)
}

pub(super) fn parse_single_put_max(s: &str) -> Result<u64, String> {
    let size = bytesize::ByteSize::from_str(s.trim())
        .map_err(|_| "expected a size like 0, 100MiB or 1GiB".to_owned())?
        .as_u64();
    if size > crate::store::MAX_PUT_SIZE {
        return Err("must be at most 5GiB, the largest object one PutObject writes".to_owned());
    }
    Ok(size)
}

pub(super) fn parse_public_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or("expected an http:// or https:// URL")?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(
            "expected a URL like https://files.example.org or http://host:8080/base".into(),
        );
    }
    Ok(trimmed.to_owned())
}

pub(super) fn parse_store(s: &str) -> Result<StoreLocation, String> {
    if s == "local" {
        return Ok(StoreLocation::Local);
    }
    let rest = s
        .strip_prefix("s3://")
        .ok_or("expected `local` or `s3://bucket[/prefix]`")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
    if !valid_bucket {
        return Err(format!("'{bucket}' is not a valid S3 bucket name"));
    }
    Ok(StoreLocation::S3 {
        bucket: bucket.to_owned(),
        prefix: prefix.trim_matches('/').to_owned(),
    })
}

pub(super) fn parse_index(s: &str) -> Result<IndexLocation, String> {
    if s == "sqlite" {
        return Ok(IndexLocation::Sqlite);
    }
    let table = s
        .strip_prefix("dynamodb://")
        .ok_or("expected `sqlite` or `dynamodb://table`")?;
    let valid = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !valid {
        return Err(format!("'{table}' is not a valid DynamoDB table name"));
    }
    Ok(IndexLocation::DynamoDb {
        table: table.to_owned(),
    })
}

pub(super) fn parse_clamd(s: &str) -> Result<ClamdAddress, String> {
    if let Some(addr) = s.strip_prefix("tcp://") {
        if addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Ok(ClamdAddress::Tcp(addr.to_owned()));
        }
    } else if let Some(path) = s.strip_prefix("unix://")
        && path.starts_with('/')
    {
        return Ok(ClamdAddress::Unix(PathBuf::from(path)));
    }
    Err("expected tcp://host:port or unix:///path/to/clamd.sock".to_owned())
}

pub(super) fn parse_audit(s: &str) -> Result<AuditTarget, String> {
    match s {
        "" => Err("expected stdout, stderr or a file path".to_owned()),
        "stdout" | "-" => Ok(AuditTarget::Stdout),
        "stderr" => Ok(AuditTarget::Stderr),
        path => Ok(AuditTarget::File(PathBuf::from(path))),
    }
}
