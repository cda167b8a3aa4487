//! Errors of the batch I/O layer. A job whose input or spec is wrong must be
//! told apart from one that hit a failing disk: the first is the user's to fix
//! and is not worth a retry, the second may pass on another attempt.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The input or the request is wrong (unknown format, bad column index,
    /// unsupported dtype, a file that is not what it claims to be...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An object store refused or failed a request.
    #[error("{url}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// Arrow failed where no per-row fallback exists (writers, casts).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file could not be decoded or written.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl IoError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        IoError::Invalid(msg.into())
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn store(url: &str, source: object_store::Error) -> Self {
        IoError::Store {
            url: url.to_string(),
            source,
        }
    }

    /// True when retrying cannot help: the input or the spec must change.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, IoError::Invalid(_))
    }
}

/// A row that could not be turned into model input. `row` is the global
/// 0-based row id, so error files can point users at the exact input line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RowError {
    pub row: u64,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}: {}", self.row, self.reason)
    }
}
