//! `Content-Disposition` with a file's name (RFC 6266, RFC 8187): written on downloads, read
//! from uploads that name their file.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::name::unaccented;

/// RFC 8187's `attr-char` stays as it is in `filename*`; everything else is percent-encoded.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename="…"; filename*=UTF-8''…`: the quoted `filename` an ASCII fallback for
/// clients without RFC 8187 (accents dropped, other characters and `"`, `\`, `%` as `_`), the
/// `filename*` the name itself. Always a valid header value.
#[must_use]
pub fn attachment(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' => '_',
            ' '..='~' => c,
            _ => unaccented(c).unwrap_or('_'),
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

/// Why a request's `Content-Disposition` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Content-Disposition must be like `attachment; filename*=UTF-8''name` or `attachment; filename=\"name\"`"
)]
pub struct DispositionError;

/// The file name a request's `Content-Disposition` gives: `filename*` (RFC 8187, UTF-8) when
/// present, else `filename` (a token or a quoted string; raw UTF-8 in it is taken as sent).
/// `None` when the header names no file.
pub fn file_name(header: &[u8]) -> Result<Option<String>, DispositionError> {
    let header = std::str::from_utf8(header).map_err(|_| DispositionError)?;
    let mut params = header.splitn(2, ';');
    let kind = params.next().unwrap_or_default().trim();
    if kind.is_empty() || kind.contains(['=', '"']) {
        return Err(DispositionError);
    }
    let (mut plain, mut extended) = (None, None);
    let mut rest = params.next().unwrap_or_default();
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=').ok_or(DispositionError)?;
        let key = key.trim().to_ascii_lowercase();
        let (value, after) = value(after.trim_start())?;
        rest = after;
        match key.as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = Some(ext_value(&value)?),
            _ => {}
        }
    }
    Ok(extended.or(plain))
}

/// One parameter value (a quoted string with its escapes, or a token) and what follows it.
fn value(s: &str) -> Result<(String, &str), DispositionError> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((out, after_value(&quoted[i + 1..])?)),
                '\\' => out.push(chars.next().ok_or(DispositionError)?.1),
                c => out.push(c),
            }
        }
        return Err(DispositionError);
    }
    let end = s.find(';').unwrap_or(s.len());
    let token = s[..end].trim();
    if token.is_empty() || token.contains(['"', ' ']) {
        return Err(DispositionError);
    }
    Ok((token.to_owned(), &s[end..]))
}

/// After a value: nothing, or the next parameter.
fn after_value(s: &str) -> Result<&str, DispositionError> {
    let s = s.trim_start();
    if s.is_empty() || s.starts_with(';') {
        Ok(s)
    } else {
        Err(DispositionError)
    }
}

/// RFC 8187 `ext-value`: `UTF-8'language'percent-encoded`; only UTF-8 is taken.
fn ext_value(v: &str) -> Result<String, DispositionError> {
    let mut parts = v.splitn(3, '\'');
    let (charset, _language, encoded) = (
        parts.next().ok_or(DispositionError)?,
        parts.next().ok_or(DispositionError)?,
        parts.next().ok_or(DispositionError)?,
    );
    if !charset.eq_ignore_ascii_case("utf-8") {
        return Err(DispositionError);
    }
    percent_decode_str(encoded)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| DispositionError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parameters_and_the_name_comes_back() {
        let name = "R\u{f6}ntgen \"Befund\" 2026 \\ 100%.pdf";
        let h = attachment(name);
        assert_eq!(
            h,
            "attachment; filename=\"Rontgen _Befund_ 2026 _ 100_.pdf\"; \
             filename*=UTF-8''R%C3%B6ntgen%20%22Befund%22%202026%20%5C%20100%25.pdf"
        );
        assert!(axum::http::HeaderValue::from_str(&h).is_ok());
        assert_eq!(file_name(h.as_bytes()).unwrap().as_deref(), Some(name));
        let emoji = "\u{1f600} party.jpg";
        let h = attachment(emoji);
        assert!(
            h.starts_with("attachment; filename=\"_ party.jpg\";"),
            "{h}"
        );
        assert_eq!(file_name(h.as_bytes()).unwrap().as_deref(), Some(emoji));
    }

    #[test]
    fn reads_what_clients_send() {
        for (header, name) in [
            ("attachment; filename=\"a b.txt\"", Some("a b.txt")),
            ("attachment; filename=plain.txt", Some("plain.txt")),
            ("attachment; FILENAME=\"a\\\"q.txt\"", Some("a\"q.txt")),
            (
                "attachment; filename=\"fallback.txt\"; filename*=utf-8'de'R%C3%B6ntgen.pdf",
                Some("R\u{f6}ntgen.pdf"),
            ),
            (
                "attachment;filename*=UTF-8''x%20y.txt;filename=\"z\"",
                Some("x y.txt"),
            ),
            (
                "attachment; filename=\"R\u{f6}ntgen.pdf\"",
                Some("R\u{f6}ntgen.pdf"),
            ),
            ("attachment", None),
            ("inline; size=3", None),
        ] {
            assert_eq!(
                file_name(header.as_bytes()).unwrap().as_deref(),
                name,
                "{header}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for header in [
            "",
            "filename=\"a\"",
            "attachment; filename=\"open",
            "attachment; filename=\"a\" junk",
            "attachment; filename",
            "attachment; filename*=ISO-8859-1''a%E4.txt",
            "attachment; filename*=UTF-8''%FF.txt",
            "attachment; filename*=a.txt",
        ] {
            assert_eq!(
                file_name(header.as_bytes()),
                Err(DispositionError),
                "{header}"
            );
        }
        assert_eq!(
            file_name(b"attachment; filename=\"\xff\""),
            Err(DispositionError)
        );
    }
}
