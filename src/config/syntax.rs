//! TOML syntax errors in the config file, reported without the file's text.
//!
//! The TOML parser's own report quotes the offending line with a caret under it. In a config file that line is
//! often the very one holding a secret (`token = BareToken…` without quotes, an unterminated `password = "…`),
//! and the report goes to the terminal, the journal and support threads. So the bridge parses the file itself
//! first and reports one line: the key (worked out from the table headers and the `key =` before the error,
//! never from a value), the line and column, the parser's short reason, and the fix.

use std::path::Path;

use super::ConfigError;

/// Checks that `text` (the content of `path`) is TOML; the error never contains any of `text`'s values.
pub fn check(path: &Path, text: &str) -> Result<(), ConfigError> {
    let Err(error) = toml::from_str::<toml::Table>(text) else {
        return Ok(());
    };
    let offset = error.span().map_or(text.len(), |span| span.start.min(text.len()));
    let (line, column) = position(text, offset);
    let key = key_at(text, line);
    let reason = error.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(", ");
    let at = format!("{} line {line}, column {column}", path.display());
    let value_problem = key.is_some() && (reason.contains("string") || reason.contains("expected `\"`"));
    let fix = match &key {
        Some(key) if value_problem => {
            let name = key.rsplit('.').next().unwrap_or(key);
            format!("put the value in quotes on one line, e.g. {name} = \"…\" (the file must be TOML)")
        }
        _ => "fix the TOML syntax there: text values need quotes, tables look like [mqtt] or [[servers]]".to_owned(),
    };
    Err(ConfigError::new(
        key.unwrap_or_else(|| path.display().to_string()),
        format!("is not valid TOML at {at} ({reason})"),
        fix,
    ))
}

/// 1-based line and column (in characters) of byte `offset`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key (`servers[1].token`, `mqtt.password`) of 1-based `line`, if that line starts with `name =`:
/// the table comes from the last header above it, counting `[[servers]]` entries. Values are never looked at.
fn key_at(text: &str, line: usize) -> Option<String> {
    let mut table: Option<String> = None;
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if index + 1 == line {
            let name = bare_key(trimmed)?;
            return Some(match &table {
                Some(table) => format!("{table}.{name}"),
                None => name.to_owned(),
            });
        }
        if let Some(name) = trimmed.strip_prefix("[[").and_then(|rest| rest.split("]]").next()) {
            let name = name.trim().to_owned();
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    array_counts.push((name.clone(), 1));
                    0
                }
            };
            table = Some(format!("{name}[{count}]"));
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|rest| rest.split(']').next()) {
            table = Some(name.trim().to_owned());
        }
    }
    None
}

/// `name` of a line `name = …` (dotted bare keys allowed), or None.
fn bare_key(line: &str) -> Option<&str> {
    let (name, _) = line.split_once('=')?;
    let name = name.trim_end();
    let bare = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    (!name.is_empty() && name.chars().all(bare)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ConfigError {
        check(Path::new("bridge.toml"), text).unwrap_err()
    }

    #[test]
    fn a_bare_or_unterminated_secret_is_named_by_key_and_never_echoed() {
        let cases = [
            ("[[servers]]\nurl = \"http://h:32400\"\ntoken = BareTokenSECRET\n", "servers[0].token", 3),
            (
                "[[servers]]\nurl = \"http://a\"\n[[servers]]\ntoken = \"unterminatedSECRET\nname = \"x\"\n",
                "servers[1].token",
                4,
            ),
            ("[mqtt]\nurl = \"mqtt://b\"\n  password = hunter2SECRET # comment\n", "mqtt.password", 3),
            ("plex.token = SECRETinline\n", "plex.token", 1),
        ];
        for (text, key, line) in cases {
            let e = error(text);
            let shown = e.to_string();
            assert_eq!(e.key, key, "{shown}");
            assert!(shown.contains(&format!("line {line}, column")), "{shown}");
            assert!(shown.contains("put the value in quotes"), "{shown}");
            assert!(!shown.contains("SECRET") && !shown.contains('\n'), "{shown}");
        }
    }

    #[test]
    fn other_syntax_errors_name_the_file_and_position() {
        let e = error("[mqtt\nurl = \"x\"\n");
        assert_eq!(e.key, "bridge.toml");
        assert!(e.problem.contains("line 1, column"), "{e}");
        assert!(check(Path::new("ok.toml"), "[mqtt]\nurl = \"mqtt://x\"\n").is_ok());
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(position("ab\ncdé f", 9), (2, 6));
        assert_eq!(position("", 0), (1, 1));
    }
}
