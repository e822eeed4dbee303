//! The client's error type. Every variant names the endpoint, and the methods answer the two
//! questions callers have: whose fault is it, and is it worth retrying later.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{endpoint}: the integration key was refused or lacks write access (HTTP 403): {message}")]
    Forbidden { endpoint: String, message: String },
    #[error("{endpoint}: not found (HTTP 404)")]
    NotFound { endpoint: String },
    #[error("{endpoint}: request rejected (HTTP {status}): {message}")]
    Rejected { endpoint: String, status: u16, message: String },
    #[error("{endpoint}: still throttled (HTTP 429) after {attempts} attempts")]
    Throttled { endpoint: String, attempts: u32, retry_after: Option<Duration> },
    #[error("{endpoint}: server error (HTTP {status}) after {attempts} attempts: {message}")]
    Server { endpoint: String, status: u16, attempts: u32, message: String },
    #[error("{endpoint}: transport error after {attempts} attempts: {source}")]
    Transport {
        endpoint: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: the response broke off after {rows} rows: {source}")]
    Interrupted {
        endpoint: String,
        rows: u64,
        #[source]
        source: reqwest::Error,
    },
    #[error("{endpoint}: response larger than the {limit}-byte cap")]
    TooLarge { endpoint: String, limit: usize },
    #[error("{endpoint}: could not decode the response ({source}); body starts {snippet:?}")]
    Decode {
        endpoint: String,
        snippet: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("invalid aggregation: {0}")]
    Pipeline(String),
}

/// Who has to act on an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Configuration or request content: fix the input.
    Caller,
    /// The service (or the network to it) misbehaved.
    Remote,
}

impl Error {
    /// Whether the same call may succeed later without changes (throttling, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::Server { .. } | Error::Transport { .. } | Error::Interrupted { .. }
        )
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::Throttled { .. }
            | Error::Server { .. }
            | Error::Transport { .. }
            | Error::Interrupted { .. }
            | Error::Decode { .. } => Fault::Remote,
            _ => Fault::Caller,
        }
    }

    /// For a response that broke off ([`Error::Interrupted`]), the rows read before the break.
    pub fn rows_before_break(&self) -> Option<u64> {
        match self {
            Error::Interrupted { rows, .. } => Some(*rows),
            _ => None,
        }
    }

    /// The HTTP status behind the error, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Rejected { status, .. } | Error::Server { status, .. } => Some(*status),
            Error::Throttled { .. } => Some(429),
            _ => None,
        }
    }
}
