//! Content types: what the first bytes say (infer), whether that fits what the client declared,
//! and whether the type is allowed.

use std::fmt;
use std::str::FromStr;

/// How many leading bytes are looked at.
pub const SNIFF_LEN: usize = 8 * 1024;

const OCTET_STREAM: &str = "application/octet-stream";

/// The type the bytes show, when `infer` recognises them.
#[must_use]
pub fn detect(head: &[u8]) -> Option<&'static str> {
    infer::get(&head[..head.len().min(SNIFF_LEN)]).map(|t| t.mime_type())
}

/// A media type's `type/subtype`, lowercased, without parameters; `None` when not a media type.
#[must_use]
pub fn essence(media_type: &str) -> Option<String> {
    let m = mime::Mime::from_str(media_type.trim()).ok()?;
    if m.type_() == mime::STAR || m.subtype() == mime::STAR {
        return None;
    }
    Some(m.essence_str().to_ascii_lowercase())
}

/// Names clients use for the types `infer` reports under another name.
fn canonical(essence: &str) -> &str {
    match essence {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/x-png" => "image/png",
        "application/x-pdf" => "application/pdf",
        "audio/wav" | "audio/wave" | "audio/vnd.wave" => "audio/x-wav",
        "audio/mp3" => "audio/mpeg",
        "application/x-gzip" => "application/gzip",
        "application/x-zip-compressed" => "application/zip",
        "text/xml" => "application/xml",
        other => other,
    }
}

/// Whether `declared` is a more specific form of the container `detected` (a docx is a zip).
fn specialises(declared: &str, detected: &str) -> bool {
    let (d_top, d_sub) = declared.split_once('/').unwrap_or((declared, ""));
    let (t_top, t_sub) = detected.split_once('/').unwrap_or((detected, ""));
    match detected {
        "application/zip" => {
            d_sub.ends_with("+zip")
                || declared.starts_with("application/vnd.openxmlformats-officedocument.")
                || declared.starts_with("application/vnd.oasis.opendocument.")
                || matches!(
                    declared,
                    "application/java-archive" | "application/vnd.android.package-archive"
                )
        }
        "application/xml" => d_sub.ends_with("+xml"),
        // An MP4, Ogg or WebM container holds audio or video: the bytes do not say which.
        _ => d_sub == t_sub && d_top != t_top && matches!(t_top, "audio" | "video"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("'{0}' is not a valid media type")]
    Invalid(String),
    #[error("files of type {0} are not accepted")]
    NotAllowed(String),
    #[error("the content is {detected}, not the declared {declared}")]
    Contradicts { declared: String, detected: String },
}

/// Decides the stored type of an upload from the declared type and what the bytes show.
pub fn decide(
    declared: Option<&str>,
    detected: Option<&str>,
    allowed: &AllowedTypes,
) -> Result<String, TypeError> {
    let declared_essence = declared
        .map(|d| essence(d).ok_or_else(|| TypeError::Invalid(d.to_owned())))
        .transpose()?;
    let detected = detected.map(str::to_ascii_lowercase);
    let stored = match (&declared_essence, &detected) {
        (None, None) => OCTET_STREAM.to_owned(),
        (None, Some(t)) => t.clone(),
        (Some(d), None) => d.clone(),
        (Some(d), Some(t)) if d == OCTET_STREAM => t.clone(),
        // A declared type that names the detected one, or a specific form of it, is what is
        // stored and served, so it is the one checked against the allowed types.
        (Some(d), Some(t))
            if canonical(d) == canonical(t) || specialises(canonical(d), canonical(t)) =>
        {
            d.clone()
        }
        (Some(d), Some(t)) => {
            return Err(TypeError::Contradicts {
                declared: d.clone(),
                detected: t.clone(),
            });
        }
    };
    if !allowed.allows(&stored) {
        return Err(TypeError::NotAllowed(stored));
    }
    Ok(stored)
}

/// `PF_ALLOWED_TYPES`: a comma list of `type/subtype`, `type/*` or `*/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedTypes(Vec<(String, Option<String>)>);

impl AllowedTypes {
    #[must_use]
    pub fn any() -> Self {
        Self(vec![("*".to_owned(), None)])
    }

    /// Whether a type (an essence as [`essence`] returns it) is allowed.
    #[must_use]
    pub fn allows(&self, essence: &str) -> bool {
        let canon = canonical(essence);
        let (top, sub) = canon.split_once('/').unwrap_or((canon, ""));
        self.0
            .iter()
            .any(|(t, s)| t == "*" || (t == top && s.as_deref().is_none_or(|s| s == sub)))
    }
}

impl FromStr for AllowedTypes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let lower = item.to_ascii_lowercase();
            let entry = match lower.split_once('/') {
                Some(("*", "*")) => ("*".to_owned(), None),
                Some((t, "*")) if essence(&format!("{t}/x")).is_some() => (t.to_owned(), None),
                Some(_) if !lower.contains(';') && essence(&lower).is_some() => {
                    let (t, s) = canonical(&lower).split_once('/').expect("a media type");
                    (t.to_owned(), Some(s.to_owned()))
                }
                _ => {
                    return Err(format!(
                        "'{item}' is not a media type pattern (like image/jpeg, image/* or */*)"
                    ));
                }
            };
            out.push(entry);
        }
        if out.is_empty() {
            return Err("give at least one media type pattern (like image/* or */*)".to_owned());
        }
        Ok(Self(out))
    }
}

impl fmt::Display for AllowedTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(t, s)| match (t.as_str(), s) {
                ("*", _) => "*/*".to_owned(),
                (t, None) => format!("{t}/*"),
                (t, Some(s)) => format!("{t}/{s}"),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n";
    const ZIP: &[u8] = b"PK\x03\x04\x14\x00\x00\x00\x08\x00";

    fn any() -> AllowedTypes {
        AllowedTypes::any()
    }

    #[test]
    fn detects_common_formats() {
        assert_eq!(detect(JPEG), Some("image/jpeg"));
        assert_eq!(detect(PDF), Some("application/pdf"));
        assert_eq!(detect(b"hello, world"), None);
    }

    #[test]
    fn matching_declared_type_is_kept_as_declared() {
        assert_eq!(
            decide(Some("Image/JPEG; q=1"), Some("image/jpeg"), &any()),
            Ok("image/jpeg".to_owned())
        );
        assert_eq!(
            decide(Some("image/jpg"), Some("image/jpeg"), &any()),
            Ok("image/jpg".to_owned())
        );
    }

    #[test]
    fn contradiction_is_refused() {
        assert_eq!(
            decide(Some("image/jpeg"), Some("application/pdf"), &any()),
            Err(TypeError::Contradicts {
                declared: "image/jpeg".into(),
                detected: "application/pdf".into()
            })
        );
    }

    #[test]
    fn octet_stream_and_missing_types_take_the_detected_one() {
        assert_eq!(
            decide(Some("application/octet-stream"), Some("image/png"), &any()),
            Ok("image/png".to_owned())
        );
        assert_eq!(
            decide(None, Some("image/png"), &any()),
            Ok("image/png".to_owned())
        );
        assert_eq!(decide(None, None, &any()), Ok(OCTET_STREAM.to_owned()));
        assert_eq!(
            decide(Some("text/csv"), None, &any()),
            Ok("text/csv".to_owned())
        );
    }

    #[test]
    fn specific_forms_of_a_container_are_not_contradictions() {
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(
            decide(Some(docx), Some("application/zip"), &any()),
            Ok(docx.to_owned())
        );
        assert_eq!(
            decide(Some("application/epub+zip"), detect(ZIP), &any()),
            Ok("application/epub+zip".to_owned())
        );
        assert_eq!(
            decide(Some("audio/mp4"), Some("video/mp4"), &any()),
            Ok("audio/mp4".to_owned())
        );
        assert!(decide(Some("image/png"), Some("application/zip"), &any()).is_err());
    }

    #[test]
    fn allowed_types_apply_to_declared_and_detected() {
        let images: AllowedTypes = "image/*, application/pdf".parse().unwrap();
        assert!(decide(Some("image/png"), None, &images).is_ok());
        assert!(decide(Some("application/pdf"), Some("application/pdf"), &images).is_ok());
        assert_eq!(
            decide(Some("text/plain"), None, &images),
            Err(TypeError::NotAllowed("text/plain".into()))
        );
        assert_eq!(
            decide(None, Some("application/zip"), &images),
            Err(TypeError::NotAllowed("application/zip".into()))
        );
        assert_eq!(
            decide(None, None, &images),
            Err(TypeError::NotAllowed(OCTET_STREAM.into()))
        );
        let jpeg_only: AllowedTypes = "image/jpeg".parse().unwrap();
        assert!(jpeg_only.allows("image/jpg"));
        assert!(!jpeg_only.allows("image/png"));
    }

    #[test]
    fn invalid_declared_type_is_reported() {
        assert_eq!(
            decide(Some("not a type"), None, &any()),
            Err(TypeError::Invalid("not a type".into()))
        );
        assert!(decide(Some("image/*"), None, &any()).is_err());
    }

    #[test]
    fn allowed_types_parse_and_print() {
        let t: AllowedTypes = "image/*,application/pdf".parse().unwrap();
        assert_eq!(t.to_string(), "image/*,application/pdf");
        assert!("".parse::<AllowedTypes>().is_err());
        assert!("images".parse::<AllowedTypes>().is_err());
        assert_eq!("*/*".parse::<AllowedTypes>().unwrap(), AllowedTypes::any());
    }
}
