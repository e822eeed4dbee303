//! Secrets: a reference to where a secret lives (an environment variable or a file),
//! resolved only when needed, and a string type that never prints its value.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Where a secret lives. The config file holds only this reference, never the value,
/// so `validate` works without the secrets and the file can be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// `{env: NAME}`: read from the environment variable `NAME`.
    Env(String),
    /// `{file: PATH}`: read from a file (relative paths are taken from the config
    /// file's directory by [`super::load`]); one trailing newline is dropped.
    File(PathBuf),
}

impl Secret {
    /// Reads the secret's value. `env` looks up an environment variable (pass
    /// `&|name| std::env::var(name).ok()` in production; tests pass a map).
    ///
    /// # Errors
    /// Names the missing variable or the unreadable file, never a value.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<SecretString, ConfigError> {
        match self {
            Secret::Env(name) => match env(name) {
                Some(value) if !value.is_empty() => Ok(SecretString(value)),
                Some(_) => Err(ConfigError::unlocated("", format!("environment variable {name} is set but empty"))),
                None => Err(ConfigError::unlocated("", format!("environment variable {name} is not set"))),
            },
            Secret::File(path) => read_secret_file(path),
        }
    }

    /// How the secret is referenced, for display: `{env: NAME}` or `{file: PATH}`.
    pub fn reference(&self) -> String {
        match self {
            Secret::Env(name) => format!("{{env: {name}}}"),
            Secret::File(path) => format!("{{file: {}}}", path.display()),
        }
    }
}

fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::unlocated("", format!("cannot read secret file {}: {error}", path.display())))?;
    let value = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text);
    if value.is_empty() {
        return Err(ConfigError::unlocated("", format!("secret file {} is empty", path.display())));
    }
    Ok(SecretString(value.to_owned()))
}

/// A resolved secret value. `Debug` and `Display` print `[redacted]`, so a secret that
/// slips into a log line or an error stays hidden; call [`SecretString::expose`] at
/// the one place that must send it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
