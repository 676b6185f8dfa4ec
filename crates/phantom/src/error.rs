//! The error type of the phantom crate; variants concerning a file name it.

use std::path::PathBuf;

/// Errors from generating phantoms and writing them as a dataset.
#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    /// Writing a volume or file failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// The operating system refused an operation on a file or folder.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A phantom configuration value is out of range (the message names the field).
    #[error("{0}")]
    InvalidConfig(String),
}

/// Result with [`PhantomError`].
pub type Result<T, E = PhantomError> = std::result::Result<T, E>;
