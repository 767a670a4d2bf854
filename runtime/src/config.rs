//! What every node's configuration check reports: the field that is wrong and why, or
//! the listener that could not be bound. Checked before any socket is bound.

use std::net::SocketAddr;

/// Configuration that cannot work, named by field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The configuration key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ConfigError {
    /// `Err(Invalid { field, reason })`, for validation chains.
    pub fn invalid<T>(field: &'static str, reason: &str) -> Result<T, Self> {
        Err(Self::Invalid {
            field,
            reason: reason.to_owned(),
        })
    }
}
