//! The diagnostic log on stderr: text or JSON, colours only on a terminal, control characters escaped.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Starts the diagnostic log, filtered by `PF_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes are noise in a file or a pipe, and a log shipper keeps them.
        .with_ansi(terminal)
        .with_writer(Escaped { colours: terminal });
    match format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
}

/// Makes [`EscapingWriter`]s over stderr.
#[derive(Debug, Clone, Copy)]
struct Escaped {
    /// Whether the formatter writes colour codes, whose ESC must pass.
    colours: bool,
}

impl<'a> MakeWriter<'a> for Escaped {
    type Writer = EscapingWriter<std::io::StderrLock<'static>>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: std::io::stderr().lock(),
            colours: self.colours,
        }
    }
}

/// Writes each log event with every control character but its final newline escaped as
/// `\xNN`. tracing-subscriber escapes ESC and a few others in field values, but not CR or LF,
/// so a value holding a newline would otherwise start a line of its own. JSON lines are
/// already escaped by serde and pass unchanged. With colours on, ESC passes: tracing-subscriber
/// then escapes it in values itself, and the colour codes are the formatter's own.
pub struct EscapingWriter<W> {
    inner: W,
    colours: bool,
}

impl<W> EscapingWriter<W> {
    pub fn new(inner: W, colours: bool) -> Self {
        Self { inner, colours }
    }
}

impl<W: Write> Write for EscapingWriter<W> {
    /// The fmt layer writes one whole event per call, so only the call's last byte is the
    /// event's end.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        let mut out = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            let control = (b < 0x20 && b != b'\t') || b == 0x7f;
            if control && !(self.colours && b == 0x1b) {
                write!(out, "\\x{b:02x}")?;
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(end);
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(input: &[u8], colours: bool) -> Vec<u8> {
        let mut w = EscapingWriter::new(Vec::new(), colours);
        w.write_all(input).unwrap();
        w.inner
    }

    #[test]
    fn control_characters_are_escaped_but_the_line_end_is_kept() {
        assert_eq!(
            escaped(b"a\nb\r\x1b[31mc\x00\td\n", false),
            b"a\\x0ab\\x0d\\x1b[31mc\\x00\td\n"
        );
        assert_eq!(escaped(b"no end\n\n", false), b"no end\\x0a\n");
        assert_eq!(
            escaped(b"\x1b[1mINFO\x1b[0m x\ny\n", true),
            b"\x1b[1mINFO\x1b[0m x\\x0ay\n"
        );
        assert_eq!(
            escaped("caf\u{e9}\n".as_bytes(), false),
            "caf\u{e9}\n".as_bytes()
        );
    }
}
