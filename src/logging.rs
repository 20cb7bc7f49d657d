//! Log output: tracing with an env-filter level, as text or one JSON object per line, on stderr.
//!
//! Records of the `log` crate (emitted by rumqttc, tungstenite and reqwest) are deliberately not captured:
//! at trace level they include raw packets, which can carry the MQTT password. The bridge logs every connection
//! event itself.

use std::io::IsTerminal;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::debug_fn;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// Installs the global subscriber; call once, before anything logs.
pub fn init(config: &LoggingConfig) {
    let filter = EnvFilter::builder().parse_lossy(&config.level);
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(|| JsonControlEscaper(std::io::stderr()))
            .try_init(),
        LogFormat::Text => {
            // Every value is written with its control characters escaped: strings from a Plex server (its
            // friendlyName, a Close reason, a frame's start) must not start a forged log line with a newline or
            // drive the terminal with escape sequences. (JSON lines are escaped by the JSON encoder.)
            let fields = debug_fn(|writer, field, value| {
                let text = format!("{value:?}");
                if field.name() == "message" {
                    write_escaped(writer, &text)
                } else {
                    write!(writer, "{field}=")?;
                    write_escaped(writer, &text)
                }
            })
            .delimited(" ");
            builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .fmt_fields(fields)
                .try_init()
        }
    };
}

/// Writes `text` with line breaks, tabs and every other control character (C0, DEL, C1) escaped as `\n`,
/// `\r`, `\t` or `\u{…}`, so one event is always one line.
fn write_escaped(out: &mut impl std::fmt::Write, text: &str) -> std::fmt::Result {
    for c in text.chars() {
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Writes JSON log lines with DEL and the C1 control characters (U+0080–U+009F, which some terminals read as
/// escape sequences) escaped as `\u00XX`; the JSON encoder escapes only C0. Inside a JSON document these can
/// only stand in strings, where the escape means the same character, and in UTF-8 their two-byte form (`C2 80`
/// – `C2 9F`) cannot be part of another character, so the bytes can be rewritten without parsing.
struct JsonControlEscaper<W>(W);

impl<W: std::io::Write> std::io::Write for JsonControlEscaper<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut start = 0;
        let mut i = 0;
        while i < buf.len() {
            let escape = match buf[i] {
                0x7f => Some((0x7f, 1)),
                0xc2 if buf.get(i + 1).is_some_and(|b| (0x80..=0x9f).contains(b)) => Some((buf[i + 1], 2)),
                _ => None,
            };
            match escape {
                Some((code, len)) => {
                    self.0.write_all(&buf[start..i])?;
                    write!(self.0, "\\u{code:04x}")?;
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::{write_escaped, JsonControlEscaper};

    #[test]
    fn json_lines_get_c1_and_del_escaped() {
        let mut out = JsonControlEscaper(Vec::new());
        out.write_all("{\"a\":\"x\u{9b}2J\u{7f} é \u{80}\"}\n".as_bytes()).unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert_eq!(text, "{\"a\":\"x\\u009b2J\\u007f é \\u0080\"}\n");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["a"], "x\u{9b}2J\u{7f} é \u{80}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write_escaped(&mut out, "Fake\nWARN forged line\r\x1b[31mred\u{9b}2J\u{7f} é").unwrap();
        assert_eq!(out, "Fake\\nWARN forged line\\r\\u{1b}[31mred\\u{9b}2J\\u{7f} é");
    }
}
