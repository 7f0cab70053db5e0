//! Checks of the request parsers: page sizes, media types, upload requests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::post::{media_type_syntax, parse_upload_request};
use super::*;
use crate::sniff;

#[test]
fn page_size_bounds() {
    assert_eq!(page_size(None), Ok(50));
    assert_eq!(page_size(Some("5")), Ok(5));
    assert_eq!(page_size(Some("100")), Ok(100));
    for bad in ["4", "101", "-1", "ten", "", "5.0"] {
        assert!(page_size(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn media_type_syntax_is_the_documented_pattern() {
    for ok in [
        "text/plain",
        "image/jpeg",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "text/plain; charset=utf-8",
        "text/plain;charset=utf-8",
        "a/b; x=1; y=2",
        "Application/Octet-Stream",
        "x!#$&^_.+-/y",
    ] {
        assert!(media_type_syntax(ok), "{ok}");
        assert!(sniff::essence(ok).is_some(), "{ok} does not parse");
    }
    for bad in [
        "",
        "text",
        "text/",
        "/plain",
        " text/plain",
        "text/plain ",
        "*/*",
        "text/*",
        "text/plain; charset",
        "text/plain;  charset=utf-8",
        "text/plain; charset=\"utf-8\"",
        "text/pl ain",
        "-text/plain",
        "a/b/c",
        "t\u{e9}xt/plain",
        &format!("{}/plain", "a".repeat(128)),
    ] {
        assert!(!media_type_syntax(bad), "{bad}");
    }
    assert!(media_type_syntax(&format!("{}/plain", "a".repeat(127))));
}

#[test]
fn upload_request_validation() {
    let ok = parse_upload_request(br#"{"mimeType":"image/jpeg","size":3}"#).unwrap();
    assert_eq!(ok.mime_type.as_deref(), Some("image/jpeg"));
    assert_eq!(ok.size, Some(3));
    let sha = STANDARD.encode([7u8; 32]);
    let with_sha =
        parse_upload_request(format!(r#"{{"mimeType":"text/plain","sha256":"{sha}"}}"#).as_bytes())
            .unwrap();
    assert_eq!(with_sha.sha256, Some(sha));
    // JSON Schema's `integer` takes 3.0; so does the service (schemathesis found the 400).
    let float = parse_upload_request(br#"{"mimeType":"text/plain","size":13187.0}"#).unwrap();
    assert_eq!(float.size, Some(13187));
    let named = parse_upload_request(
        r#"{"mimeType":"text/plain","fileName":"a/Ro\u0308ntgen.pdf"}"#.as_bytes(),
    )
    .unwrap();
    assert_eq!(named.file_name.as_deref(), Some("R\u{f6}ntgen.pdf"));
    for bad in [
        &b""[..],
        b"[]",
        b"{",
        b"{}",
        br#"{"mimeType":""}"#,
        br#"{"mimeType":"jpeg"}"#,
        br#"{"mimeType":" text/plain"}"#,
        br#"{"mimeType":"text/*"}"#,
        br#"{"mimeType":5}"#,
        br#"{"mimeType":"image/jpeg","size":-1}"#,
        br#"{"mimeType":"image/jpeg","size":"3"}"#,
        br#"{"mimeType":"image/jpeg","size":3.5}"#,
        br#"{"mimeType":"image/jpeg","size":-1.0}"#,
        br#"{"mimeType":"image/jpeg","size":1e30}"#,
        br#"{"mimeType":"image/jpeg","sha256":"abc"}"#,
        br#"{"mimeType":"image/jpeg","fileName":"a\u0007.txt"}"#,
        br#"{"mimeType":"image/jpeg","fileName":""}"#,
        br#"{"mimeType":"image/jpeg","fileName":5}"#,
        format!(r#"{{"mimeType":"image/jpeg; x={}"}}"#, "a".repeat(3000)).as_bytes(),
    ] {
        let err = parse_upload_request(bad).unwrap_err();
        assert_eq!(
            err.kind,
            "InvalidEntityException",
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}
