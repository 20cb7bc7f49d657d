//! [`ConfigError`], and the translation of figment's errors into it, so every problem names the key the way the
//! user wrote it: `servers[1].name` for the file, `PLEX_MQTT_BRIDGE_MQTT__QOS` for the environment.

/// The figment metadata name of values from the environment (errors name the variable, not the key).
pub(super) const ENV_METADATA_NAME: &str = "environment variable";
/// The figment metadata name of values from the add-on's options (errors name the option, not the key).
pub(super) const ADDON_METADATA_NAME: &str = "add-on option";

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{key}` {problem}; {fix}")]
pub struct ConfigError {
    /// The key as the user wrote it (`mqtt.url`, `servers[0].token`, `PLEX_MQTT_BRIDGE_MQTT__QOS`, `--config`).
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    pub(super) fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into(), fix: fix.into() }
    }
}

/// Turns figment's error into ours, naming the key as the user wrote it.
pub(super) fn from_figment(error: &figment::Error) -> ConfigError {
    use figment::error::Kind;
    let mut path: Vec<String> = error.path.clone();
    if let Kind::UnknownField(field, _) = &error.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let key = match (&error.metadata, &error.profile) {
        // The environment's variable, the add-on's option: named as the user wrote them.
        (Some(md), Some(profile))
            if (md.name == ENV_METADATA_NAME || md.name == ADDON_METADATA_NAME) && !path.is_empty() =>
        {
            md.interpolate(profile, &path)
        }
        _ => dotted(&path),
    };
    let source = error
        .metadata
        .as_ref()
        .map(|md| match &md.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", md.name),
        })
        .unwrap_or_default();
    match &error.kind {
        Kind::UnknownField(_, expected) => ConfigError::new(
            key,
            format!("is not a known setting{source}"),
            format!("remove it or correct its spelling; known keys here: {}", expected.join(", ")),
        ),
        Kind::InvalidType(actual, expected) => ConfigError::new(
            key,
            format!("has the wrong type: found {}, expected {expected}{source}", found(actual)),
            "change the value to the expected type (durations are strings such as \"30s\" or \"500ms\")",
        ),
        Kind::InvalidValue(actual, expected) => ConfigError::new(
            key,
            format!("is invalid: found {}, expected {expected}{source}", found(actual)),
            "correct the value",
        ),
        other if path.is_empty() => ConfigError::new(
            error.metadata.as_ref().and_then(|md| md.source.as_ref()).map_or("configuration".into(), |s| s.to_string()),
            format!("cannot be read: {}", other.to_string().trim()),
            "fix the syntax at the position shown (the file must be TOML)",
        ),
        other => ConfigError::new(key, format!("is invalid: {other}{source}"), "correct the value"),
    }
}

/// What a wrong value is, without its text: a string may be a token, a password or a URL with credentials (a
/// malformed `PLEX_MQTT_BRIDGE_SERVERS` arrives as one string, token and all), so only numbers and booleans are
/// shown as written.
fn found(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(_) | Actual::Other(_) => "text".to_owned(),
        Actual::Char(_) => "a character".to_owned(),
        Actual::Bytes(_) => "bytes".to_owned(),
        shown => shown.to_string(),
    }
}

/// `servers.0.token` → `servers[0].token`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_indices_are_written_in_brackets() {
        let path = |parts: &[&str]| dotted(&parts.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>());
        assert_eq!(path(&["servers", "0", "token"]), "servers[0].token");
        assert_eq!(path(&["mqtt", "url"]), "mqtt.url");
        assert_eq!(path(&[]), "");
    }

    #[test]
    fn wrong_values_are_described_without_their_text() {
        use figment::error::{Actual, Kind};
        let secret = "SECRETtok";
        for kind in [
            Kind::InvalidType(Actual::Str(format!("[{{token=\"{secret}\"")), "a sequence".into()),
            Kind::InvalidValue(Actual::Str(format!("mqtt://u:{secret}@[x")), "a URL".into()),
            Kind::InvalidType(Actual::Other(secret.into()), "a map".into()),
            Kind::InvalidType(Actual::Bytes(secret.as_bytes().to_vec()), "a map".into()),
        ] {
            let mut error = figment::Error::from(kind);
            error.path = vec!["servers".into()];
            let text = from_figment(&error).to_string();
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains("`servers`"), "{text}");
        }
        let mut error = figment::Error::from(Kind::InvalidValue(Actual::Unsigned(3), "0, 1 or 2".into()));
        error.path = vec!["mqtt".into(), "qos".into()];
        assert!(from_figment(&error).to_string().contains("found unsigned int `3`"));
    }
}
