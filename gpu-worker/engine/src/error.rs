use thiserror::Error;

/// Why the engine refused or failed a request. Each variant maps to one row
/// of DESIGN.md's error table; servers translate it to their protocol.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// The run needed more memory than the device's budget allows; retrying
    /// with a smaller batch may succeed. The session remains usable.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("deadline exceeded before the request ran")]
    DeadlineExceeded,
    #[error("{0}")]
    Unavailable(String),
    #[error("model failed: {0}")]
    Internal(String),
    #[error("cannot load: {0}")]
    Runtime(String),
}
