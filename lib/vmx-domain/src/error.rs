//! The domain's one error type. Adapters convert their own failures into it; the HTTP layer
//! maps it to status codes in exactly one place (`vmx_api::error`).

/// Result alias for the domain and its ports.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; `field` is the JSON path of the offending field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("a connection named '{0}' already exists")]
    NameTaken(String),
    #[error(
        "version conflict: the connection was changed by someone else (current version {current})"
    )]
    VersionConflict { current: u64 },
    /// A dependency (store, key service) is throttling or temporarily unreachable.
    /// `detail` is for logs only; it never reaches a client.
    #[error("temporarily unavailable: {detail}")]
    Unavailable {
        retry_after_secs: Option<u64>,
        detail: String,
    },
    /// A key or ciphertext could not be used (wrong context, tampered, key disabled).
    /// `detail` is for logs only.
    #[error("credential decryption failed: {detail}")]
    Crypto { detail: String },
    /// Anything else. `detail` is for logs only.
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            detail: detail.to_string(),
        }
    }

    pub fn unavailable(retry_after_secs: Option<u64>, detail: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            retry_after_secs,
            detail: detail.to_string(),
        }
    }
}
