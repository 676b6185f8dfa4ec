//! The error type of the data crate. Like `spineseg_io::IoError`, every variant that concerns a
//! file names it, because dataset problems are found in folders of hundreds of files.

use std::path::PathBuf;

/// Errors from opening datasets, mapping labels onto the ontology and related data work.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a volume failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// The operating system refused an operation on a file or folder.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (e.g. nnU-Net's dataset.json) is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A CSV file (e.g. SPIDER's overview.csv) could not be parsed.
    #[error("{path}: invalid CSV: {detail}")]
    Csv { path: PathBuf, detail: String },
    /// A folder is not in any dataset layout spineseg knows.
    #[error("{path}: not a recognised dataset layout: {detail}")]
    UnknownLayout { path: PathBuf, detail: String },
    /// The dataset's description is present but wrong or unsupported (e.g. region-based labels).
    #[error("{path}: {detail}")]
    InvalidDataset { path: PathBuf, detail: String },
    /// A label file holds a value that cannot be mapped onto the ontology.
    #[error("{path}: label value {value}: {detail}")]
    UnmappedLabel { path: PathBuf, value: u16, detail: String },
    /// Two volumes that must share a voxel grid do not.
    #[error("{a} and {b}: {detail}")]
    GridMismatch { a: PathBuf, b: PathBuf, detail: String },
    /// Options or a label mapping that cannot work with the ontology (e.g. lowest vertebra L6).
    #[error("{0}")]
    InvalidMapping(String),
    /// A plan file (plans.json, often edited by hand) or a fingerprint is inconsistent.
    #[error("{path}: invalid plan: {detail}")]
    InvalidPlan { path: PathBuf, detail: String },
    /// A plan cannot be made from a fingerprint (no cases, no usable spacing, ...).
    #[error("cannot plan: {0}")]
    Planning(String),
    /// A case cannot be preprocessed or reverted (channels on different grids, wrong shapes).
    #[error("case {case}: {detail}")]
    Preprocess { case: String, detail: String },
    /// A preprocessed case on disk is incomplete or does not match its header.
    #[error("{path}: invalid preprocessed data: {detail}")]
    InvalidPreprocessed { path: PathBuf, detail: String },
    /// Training patches cannot be sampled (no cases, cases without labels, bad patch size or
    /// augmentation settings).
    #[error("sampling: {0}")]
    Sampling(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl From<spineseg_io::json::JsonFileError> for DataError {
    fn from(error: spineseg_io::json::JsonFileError) -> Self {
        use spineseg_io::json::JsonFileError;
        match error {
            JsonFileError::Read { path, source } => DataError::Os { path, source },
            JsonFileError::Parse { path, source } | JsonFileError::Serialise { path, source } => DataError::Json { path, source },
            JsonFileError::Write(e) => e.into(),
        }
    }
}
