//! The error type of the dataloading crate.

/// Errors from loading preprocessed cases and sampling training patches.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// Reading a preprocessed case failed (names the file).
    #[error(transparent)]
    Preprocess(#[from] spineseg_preprocessing::error::PreprocessError),
    /// Training patches cannot be sampled (no cases, cases without labels, bad patch size or
    /// augmentation settings).
    #[error("sampling: {0}")]
    Sampling(String),
}

/// Result with [`SamplingError`].
pub type Result<T, E = SamplingError> = std::result::Result<T, E>;
