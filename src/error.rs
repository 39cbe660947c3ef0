//! Typed errors for the library. The CLI adds context with anyhow; the library
//! never panics on input it did not create itself.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is in the message and not also a `source()`, so a
    /// cause chain (anyhow's `{:#}`) says it once.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a valid IDX file: {problem}")]
    Idx { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Dataset { path: PathBuf, problem: String },
    #[error("{path}: {problem}")]
    Table { path: PathBuf, problem: String },
    #[error("{path}: checkpoint problem: {problem}")]
    Checkpoint { path: PathBuf, problem: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("non-finite loss {loss} at epoch {epoch}, step {step}; the last good checkpoint is kept")]
    NonFinite { epoch: usize, step: usize, loss: f64 },
    #[error("device problem: {0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io { path: path.into(), error }
    }
}
