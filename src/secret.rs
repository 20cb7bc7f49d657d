//! A string that must never be shown: Plex tokens and MQTT passwords.
//!
//! Every way of formatting or serialising a [`Secret`] prints `***`, so a secret that ends up in a log line, an
//! error, a panic message or `--print-config` output by accident reveals nothing. The only way to read the value
//! is [`Secret::expose`], which makes each real use easy to find in review.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every formatting of a secret prints.
pub const MASK: &str = "***";

/// A secret value; see the module documentation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; surrounding whitespace (a trailing newline in a secret file) is removed.
    pub fn new(value: impl AsRef<str>) -> Self {
        Secret(value.as_ref().trim().to_owned())
    }

    /// The real value, for the one place that must send it (an HTTP header, the MQTT CONNECT packet).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (an empty token or password is treated as missing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::lenient::string(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_formatting_is_masked() {
        let secret = Secret::new("hunter2\n");
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{secret}"), MASK);
        assert_eq!(format!("{secret:?}"), MASK);
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
    }
}
