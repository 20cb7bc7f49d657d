//! Secrets kept in files (Docker and systemd secrets), so they need not sit in the config file or the environment.

use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::secret::Secret;

/// Reads a secret from a file; a relative path is looked up in `$CREDENTIALS_DIRECTORY` first (systemd
/// `LoadCredential=`). `key` names the setting in the error.
pub(super) fn read_secret_file(path: &Path, key: &str) -> Result<Secret, ConfigError> {
    let resolved = resolve_credential(path);
    let text = std::fs::read_to_string(&resolved).map_err(|e| {
        ConfigError::new(
            key,
            format!("cannot be read ({}: {e})", resolved.display()),
            "point it at a readable file that holds only the secret",
        )
    })?;
    let secret = Secret::new(text);
    if secret.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("names an empty file ({})", resolved.display()),
            "put the secret in it",
        ));
    }
    Ok(secret)
}

/// A relative secret path is resolved in systemd's `$CREDENTIALS_DIRECTORY` when that holds it.
pub fn resolve_credential(path: &Path) -> PathBuf {
    if path.is_relative() {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let candidate = Path::new(&dir).join(path);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    path.to_owned()
}
