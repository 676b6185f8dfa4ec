//! The error type of the training crate; variants concerning a file name it.

use std::path::PathBuf;

/// Errors from setting up, running or resuming a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the plan or the preprocessed cases failed.
    #[error(transparent)]
    Preprocess(#[from] spineseg_preprocessing::error::PreprocessError),
    /// Loading cases for training or sampling patches failed.
    #[error(transparent)]
    Sampling(#[from] spineseg_dataloading::error::SamplingError),
    /// Rendering or writing the progress plot failed.
    #[error(transparent)]
    Render(#[from] spineseg_render::error::RenderError),
    /// Writing a file failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// The operating system refused an operation on a file or folder.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is missing fields or is not valid JSON.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// burn could not save or load weights or optimiser state.
    #[error("{path}: {detail}")]
    Record { path: PathBuf, detail: String },
    /// A training step's loss or gradient norm was not finite (and skipping was not asked for).
    #[error(
        "epoch {epoch}, step {step}: the training {what} is {value} (not finite); the run stopped with nothing written for this epoch. Last good state: {last_good}. Lower the learning rate, or pass --skip-non-finite-steps to skip such steps"
    )]
    NonFinite { epoch: usize, step: usize, what: &'static str, value: f64, last_good: String },
    /// A file or folder the run needs is not there.
    #[error("{path}: {detail}")]
    Missing { path: PathBuf, detail: String },
    /// Inconsistent settings or inputs (fold out of range, no cases, bad config values).
    #[error("{0}")]
    Invalid(String),
    /// A model-folder file (such as `prompt_embeddings.json`) is invalid; names the file.
    #[error(transparent)]
    ModelFolder(#[from] spineseg_infer::error::InferError),
    /// A model folder or checkpoint does not fit the run (other plan, other network).
    #[error("{path}: {detail}")]
    Incompatible { path: PathBuf, detail: String },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn os(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Os { path: path.to_path_buf(), source }
}

spineseg_io::json_file_error_into!(TrainError);
