//! The error type of the inference crate.

/// What a [`crate::PatchPredictor`] may fail with (a network, a device, a shape check).
pub type PredictorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of sliding-window prediction and of writing a prediction back onto the input grid.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Sliding-window or post-processing options that cannot work (zero patch side, step size
    /// outside `(0, 1]`, mirror axis out of range, ...).
    #[error("invalid prediction options: {0}")]
    InvalidOptions(String),
    /// The input volumes do not fit together or do not fit the options.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The predictor failed.
    #[error("the predictor failed: {0}")]
    Predictor(#[source] PredictorError),
    /// The predictor returned a buffer of the wrong size.
    #[error(
        "the predictor returned {got} values for input shape {input_shape:?}; expected {expected} ({classes} classes)"
    )]
    PredictorOutput { input_shape: Vec<usize>, classes: usize, expected: usize, got: usize },
    /// A trained model folder is incomplete or inconsistent (missing or invalid file, weights
    /// that do not fit the network, plan and network that disagree); names the file.
    #[error("{path}: {detail}")]
    Model { path: std::path::PathBuf, detail: String },
    /// Reading the plan or reverting a prediction to the input grid failed (the error names the
    /// case or file).
    #[error(transparent)]
    Preprocess(#[from] spineseg_preprocessing::error::PreprocessError),
}

pub type Result<T, E = InferError> = std::result::Result<T, E>;
