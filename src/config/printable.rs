//! `--print-config`: the validated configuration as TOML. Secrets are [`Secret`](crate::secret::Secret)s, which
//! serialize as `***`, so printing needs no masking of its own.

use std::fmt;

use super::Config;

impl Config {
    /// The effective configuration as TOML, secrets masked: what `--print-config` shows.
    pub fn to_printable_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Prints a value (a URL) by its `Display`, as the user would write it.
pub(super) fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
