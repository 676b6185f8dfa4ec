//! The error type of the planning crate; variants concerning a file name it.

use std::path::PathBuf;

/// Errors from fingerprinting a dataset and deriving a plan from a fingerprint.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    /// Reading or writing a volume or file failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// The operating system refused an operation on a file or folder.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or misses fields.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Opening a dataset case or mapping its labels failed.
    #[error(transparent)]
    Dataset(#[from] spineseg_datasets::error::DatasetError),
    /// Reading or cropping a case failed.
    #[error(transparent)]
    Preprocess(#[from] spineseg_preprocessing::error::PreprocessError),
    /// A fingerprint file is inconsistent (same wording as a bad plan: both are planning input).
    #[error("{path}: invalid plan: {detail}")]
    InvalidFingerprint { path: PathBuf, detail: String },
    /// A case does not fit the dataset (e.g. another number of image channels).
    #[error("case {case}: {detail}")]
    Case { case: String, detail: String },
    /// A plan cannot be made from a fingerprint (no cases, no usable spacing, ...).
    #[error("cannot plan: {0}")]
    Planning(String),
}

/// Result with [`PlanningError`].
pub type Result<T, E = PlanningError> = std::result::Result<T, E>;

spineseg_io::json_file_error_into!(PlanningError);
