//! File names as clients send them (`fileName`), and the fileId derived from a name.
//!
//! The rule, as the README states it: a name that is itself a valid fileId is the fileId.
//! Any other name gives a slug of the name (accents dropped from letters, every other character
//! outside `A-Z a-z 0-9 . _ -` replaced by `-`, runs of `-` made one, `-` and `.` trimmed from
//! both ends, the extension kept), then `-` and the first 8 hex digits of the SHA-256 of the
//! NFC name, so that two names whose slugs agree still get two fileIds.

use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::decompose_canonical;

use super::{FileId, validate_ident};

/// The longest name taken, in characters as sent (without the path part): file systems allow
/// 255 bytes (Linux, APFS) or 255 UTF-16 units (Windows, HFS+), never more characters.
pub const MAX_NAME_CHARS: usize = 255;

/// An extension is kept apart from the slug when it is this many ASCII letters and digits or
/// fewer (`pdf`, `jpeg`, `docx`).
const MAX_EXTENSION: usize = 16;

/// How many hex digits of the name's SHA-256 a derived fileId carries.
const HASH_DIGITS: usize = 8;

/// Why a string is not a file name; the message is safe to show to a client after the name of
/// the field that carried it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must name a file")]
    Empty,
    #[error("must not contain control characters")]
    Control,
    #[error("must be at most {MAX_NAME_CHARS} characters")]
    TooLong,
}

/// A file's name as its client sent it: NFC, without any path part, free of control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

impl FileName {
    /// Takes a name as sent: everything up to the last `/` or `\` goes (a browser or a CLI may
    /// send a path), the rest is normalized to NFC.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        if raw.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
        if base.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooLong);
        }
        let name: String = base.nfc().collect();
        if name.is_empty() || name == "." || name == ".." {
            return Err(NameError::Empty);
        }
        Ok(Self(name))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }

    /// The fileId this name gives when a client sends no fileId (the module's rule).
    #[must_use]
    pub fn file_id(&self) -> FileId {
        if validate_ident(&self.0).is_ok() {
            return FileId::parse(&self.0).expect("checked");
        }
        let (stem, extension) = split_extension(&self.0);
        let hash = hex::encode(&Sha256::digest(self.0.as_bytes())[..HASH_DIGITS / 2]);
        let suffix = extension.map_or(0, |e| e.len() + 1);
        // Room for the slug beside `-`, the hash and the extension, within 255.
        let room = 255 - 1 - HASH_DIGITS - suffix;
        let slug = slug(stem);
        let slug = slug[..slug.len().min(room)].trim_end_matches(['-', '.']);
        let mut id = String::with_capacity(255);
        id.push_str(slug);
        if !slug.is_empty() {
            id.push('-');
        }
        id.push_str(&hash);
        if let Some(e) = extension {
            id.push('.');
            id.push_str(e);
        }
        FileId::parse(&id).expect("a slug with a hash is an identifier")
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name` as stem and extension, when it has one the slug keeps as it is.
fn split_extension(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.len() <= MAX_EXTENSION
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            (stem, Some(ext))
        }
        _ => (name, None),
    }
}

/// The ASCII letter or digit a character is once its accents are dropped (`ö` is `o`), when
/// its canonical decomposition starts with one.
pub(crate) fn unaccented(c: char) -> Option<char> {
    let mut base = None;
    decompose_canonical(c, |d| {
        if base.is_none() {
            base = Some(d);
        }
    });
    base.filter(|b| *b != c && b.is_ascii_alphanumeric())
}

/// Only `A-Z a-z 0-9 . _ -`, runs of `-` made one, no `-` or `.` at either end. ASCII, so any
/// byte offset in it is a character boundary.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            unaccented(c).unwrap_or('-')
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches(['-', '.']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> String {
        FileName::parse(name).unwrap().file_id().to_string()
    }

    fn hash(name: &str) -> String {
        hex::encode(&Sha256::digest(name.as_bytes())[..4])
    }

    #[test]
    fn a_valid_file_id_is_its_own_id() {
        for name in ["photo-1.jpg", "a--b", "notes.", &"x".repeat(255)] {
            assert_eq!(id(name), name);
        }
    }

    #[test]
    fn other_names_give_a_slug_and_a_hash() {
        assert_eq!(
            id("IMG 0001 (1).jpg"),
            format!("IMG-0001-1-{}.jpg", hash("IMG 0001 (1).jpg"))
        );
        assert_eq!(
            id("my notes (1).txt"),
            format!("my-notes-1-{}.txt", hash("my notes (1).txt"))
        );
        assert_eq!(
            id("R\u{f6}ntgen.pdf"),
            format!("Rontgen-{}.pdf", hash("R\u{f6}ntgen.pdf"))
        );
        assert_eq!(id("self"), format!("self-{}", hash("self")));
        assert_eq!(id(".bashrc"), ".bashrc");
        assert_eq!(id(".my notes"), format!("my-notes-{}", hash(".my notes")));
        // Nothing of the stem is left: the hash alone, with the extension.
        assert_eq!(
            id("\u{1f600}.png"),
            format!("{}.png", hash("\u{1f600}.png"))
        );
        assert_eq!(id("\u{65e5}\u{8a18}"), hash("\u{65e5}\u{8a18}"));
        // An extension that is not letters and digits stays in the slug.
        assert_eq!(id("a b.t-z"), format!("a-b.t-z-{}", hash("a b.t-z")));
    }

    #[test]
    fn the_readme_examples_hold() {
        for (sent, name, file_id) in [
            ("photo-1.jpg", "photo-1.jpg", "photo-1.jpg"),
            (
                "IMG 0001 (1).jpg",
                "IMG 0001 (1).jpg",
                "IMG-0001-1-1297e5fe.jpg",
            ),
            (
                "my notes (1).txt",
                "my notes (1).txt",
                "my-notes-1-d783a646.txt",
            ),
            (
                "R\u{f6}ntgen.pdf",
                "R\u{f6}ntgen.pdf",
                "Rontgen-aa9460c7.pdf",
            ),
            (
                "Ro\u{308}ntgen.pdf",
                "R\u{f6}ntgen.pdf",
                "Rontgen-aa9460c7.pdf",
            ),
            (
                "\u{1f389} Party 2026.png",
                "\u{1f389} Party 2026.png",
                "Party-2026-e4bd5f18.png",
            ),
            ("\u{65e5}\u{8a18}", "\u{65e5}\u{8a18}", "1130700c"),
            ("self", "self", "self-06c604b3"),
            ("C:\\fakepath\\scan.pdf", "scan.pdf", "scan.pdf"),
        ] {
            let parsed = FileName::parse(sent).unwrap();
            assert_eq!(parsed.as_str(), name);
            assert_eq!(parsed.file_id().as_str(), file_id);
        }
    }

    #[test]
    fn nfc_and_nfd_are_one_name_and_one_id() {
        let nfc = "R\u{f6}ntgen \u{e9}t\u{e9}.pdf";
        let nfd = "Ro\u{308}ntgen e\u{301}te\u{301}.pdf";
        assert_ne!(nfc, nfd);
        assert_eq!(FileName::parse(nfd).unwrap().as_str(), nfc);
        assert_eq!(id(nfd), id(nfc));
    }

    #[test]
    fn names_that_differ_only_outside_the_slug_get_different_ids() {
        assert_ne!(id("a b.txt"), id("a_b.txt"));
        assert_ne!(id("a b.txt"), id("a  b.txt"));
        assert_ne!(id("\u{1f600}"), id("\u{1f601}"));
    }

    #[test]
    fn long_names_are_kept_and_their_ids_bounded() {
        // 255 bytes of UTF-8, as a file system allows: 127 two-byte letters and one more byte.
        let name = format!("{}a", "\u{e9}".repeat(127));
        assert_eq!(name.len(), 255);
        assert_eq!(FileName::parse(&name).unwrap().as_str(), name);
        let got = id(&name);
        assert!(got.len() <= 255, "{}", got.len());
        assert!(got.ends_with(&hash(&name)));
        let long = format!("{}.jpeg", "word ".repeat(49));
        let got = id(&long);
        assert!(
            got.len() <= 255 && got.rsplit_once('.').unwrap().1 == "jpeg",
            "{got}"
        );
        assert!(!got.contains("-."), "{got}");
        let ascii = format!("{}!", "y".repeat(254));
        assert_eq!(id(&ascii).len(), 255);
        // Counted as sent: macOS's NFD of the 255-byte name is 255 characters.
        let nfd = format!("{}a", "e\u{301}".repeat(127));
        assert_eq!(nfd.chars().count(), MAX_NAME_CHARS);
        assert_eq!(FileName::parse(&nfd).unwrap().as_str(), name);
        assert!(FileName::parse(&"\u{1f600}".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(FileName::parse(&format!("dir/{}", "x".repeat(MAX_NAME_CHARS))).is_ok());
        assert_eq!(
            FileName::parse(&"x".repeat(MAX_NAME_CHARS + 1)),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn path_parts_go() {
        for sent in [
            "photo.jpg",
            "/home/a/photo.jpg",
            "C:\\Users\\a\\photo.jpg",
            "../../photo.jpg",
            "a/b\\photo.jpg",
        ] {
            assert_eq!(FileName::parse(sent).unwrap().as_str(), "photo.jpg");
        }
    }

    #[test]
    fn control_characters_empty_names_and_dots_are_refused() {
        for bad in ["a\nb.txt", "a\0", "\u{7f}x", "x\u{85}", "tab\there"] {
            assert_eq!(FileName::parse(bad), Err(NameError::Control), "{bad:?}");
        }
        for empty in ["", "dir/", ".", "..", "a/..", "a\\."] {
            assert_eq!(FileName::parse(empty), Err(NameError::Empty), "{empty:?}");
        }
    }

    #[test]
    fn derived_ids_are_never_reserved() {
        for name in ["self", "-.-", "..a", "(.)", " . "] {
            let got = id(name);
            assert!(
                !matches!(got.as_str(), "." | ".." | "self"),
                "{name}: {got}"
            );
        }
    }
}
