//! The one error type of the metrics crate. Errors about files name every file involved, so a
//! user evaluating a folder of hundreds of cases knows which pair is wrong.

use std::path::PathBuf;

/// Errors from evaluating segmentations.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Reading or writing a file failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// A folder could not be listed.
    #[error("{path}: {source}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Prediction and reference do not have the same voxel grid size.
    #[error(
        "shape mismatch: prediction {pred} has shape {pred_shape:?}, reference {reference} has shape {ref_shape:?}"
    )]
    ShapeMismatch { pred: PathBuf, reference: PathBuf, pred_shape: [usize; 3], ref_shape: [usize; 3] },
    /// Prediction and reference place their voxels at different world positions.
    #[error("geometry mismatch between prediction {pred} and reference {reference}: {detail}")]
    GeometryMismatch { pred: PathBuf, reference: PathBuf, detail: String },
    /// Files on one side have no partner on the other (nnU-Net treats this as an error too).
    #[error("unpaired cases: only in predictions: [{}]; only in references: [{}]", pred_only.join(", "), ref_only.join(", "))]
    Unpaired { pred_only: Vec<String>, ref_only: Vec<String> },
    /// No image files were found.
    #[error("no cases to evaluate: no .nii, .nii.gz, .mha or .mhd files in {pred} and {reference}")]
    NoCases { pred: PathBuf, reference: PathBuf },
    /// Masks passed to a metric function disagree or are malformed.
    #[error("invalid masks: {0}")]
    InvalidMask(String),
    /// An option is out of range (e.g. a negative tolerance or slice axis 3).
    #[error("invalid evaluation option: {0}")]
    InvalidOption(String),
}

pub type Result<T, E = MetricsError> = std::result::Result<T, E>;
