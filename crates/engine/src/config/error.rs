//! Config errors: one located problem, and the full list reported at once.

use std::fmt;

/// One problem in the config: where it is (1-based line and column of the key, when
/// known), which key (dotted path, `workflows.engagement.matching[1].field`) and what
/// is wrong. Messages never contain a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// An error not tied to a place in a file (a missing environment variable, say).
    pub fn unlocated(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { line: None, column: None, key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
            f.write_str(" ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config source, in file order. `Display` prints one line
/// per error: `usagesync.yaml:14:5: workflows.engagement.window_days: must be ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file name used in messages; empty when the errors are not about a file.
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn single(origin: &str, error: ConfigError) -> Self {
        Self { origin: origin.to_owned(), errors: vec![error] }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            if !self.origin.is_empty() {
                write!(f, "{}:", self.origin)?;
                if error.line.is_none() {
                    f.write_str(" ")?;
                }
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
