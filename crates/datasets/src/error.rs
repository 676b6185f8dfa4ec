//! The error type of the datasets crate. Like `spineseg_io::IoError`, every variant that concerns
//! a file names it, because dataset problems are found in folders of hundreds of files.

use std::path::PathBuf;

/// Errors from opening datasets, mapping labels onto the ontology and checking datasets.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
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
    /// A merge that cannot be done as asked (bad or repeated source names, output overlapping an
    /// input).
    #[error("dataset merge: {0}")]
    Merge(String),
    /// The output folder exists and is not empty, and replacing it was not asked for.
    #[error("{path}: exists and is not empty (pass --overwrite to replace it)")]
    OutputExists { path: PathBuf },
}

/// Result with [`DatasetError`].
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

spineseg_io::json_file_error_into!(DatasetError);
