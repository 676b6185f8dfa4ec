//! The error type of the render crate.

/// Errors from rendering overlays and writing images.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Writing an image failed (the I/O error names the file).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// Overlay options that do not fit the volume (axis, slice, pixel size, label shape).
    #[error("{0}")]
    InvalidOptions(String),
}

/// Result with [`RenderError`].
pub type Result<T, E = RenderError> = std::result::Result<T, E>;
