//! The error type of the preprocessing crate; variants concerning a file name it.

use std::path::PathBuf;

/// Errors from cropping, resampling and normalising cases, from reading and writing
/// preprocessed cases and from reading a plan.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
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
    /// A plan file (plans.json, often edited by hand) is inconsistent.
    #[error("{path}: invalid plan: {detail}")]
    InvalidPlan { path: PathBuf, detail: String },
    /// A case cannot be preprocessed or reverted (channels on different grids, wrong shapes).
    #[error("case {case}: {detail}")]
    Preprocess { case: String, detail: String },
    /// An image holds NaN or infinite voxels: normalisation and resampling would spread them
    /// over the case, so the image is refused rather than silently repaired.
    #[error("{path}: {count} voxel(s) are NaN or infinite (first at voxel {first:?}); spineseg does not guess values for them: replace them (for example with the image minimum) and retry")]
    NonFiniteVoxels { path: PathBuf, count: usize, first: [usize; 3] },
    /// A preprocessed case on disk is incomplete or does not match its header.
    #[error("{path}: invalid preprocessed data: {detail}")]
    InvalidPreprocessed { path: PathBuf, detail: String },
    /// Preprocessing a planned dataset cannot start (no worker threads).
    #[error("cannot plan: {0}")]
    Planning(String),
}

/// Result with [`PreprocessError`].
pub type Result<T, E = PreprocessError> = std::result::Result<T, E>;

spineseg_io::json_file_error_into!(PreprocessError);
