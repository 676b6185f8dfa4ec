//! The one error type of the I/O crate. Every variant names the file it concerns, because a user
//! running over a folder of hundreds of scans needs to know which one is bad.

use std::path::PathBuf;

/// Errors from reading, writing or converting medical volumes.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused an operation (missing file, permissions, disk full).
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file name does not end in a supported extension.
    #[error("{path}: unknown file type; expected .nii, .nii.gz, .mha or .mhd")]
    UnknownFormat { path: PathBuf },
    /// The file ends before the header or the voxel data is complete.
    #[error("{path}: file is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    /// The header is not the one the format requires (wrong magic, bad field values).
    #[error("{path}: invalid header: {detail}")]
    InvalidHeader { path: PathBuf, detail: String },
    /// The header is valid but describes something spineseg does not read (data type, dimensions).
    #[error("{path}: unsupported: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    /// gzip or zlib data could not be decompressed.
    #[error("{path}: corrupt compressed data: {detail}")]
    Decompress { path: PathBuf, detail: String },
    /// The amount of voxel data does not match what the header announces.
    #[error("{path}: header/data size mismatch: {detail}")]
    SizeMismatch { path: PathBuf, detail: String },
    /// Spacing, origin or direction are not finite, not positive or not invertible.
    #[error("{path}: invalid geometry: {detail}")]
    InvalidGeometry { path: PathBuf, detail: String },
    /// Voxel values cannot be represented in the requested type (e.g. a label of 3.5).
    #[error("{path}: {detail}")]
    InvalidValues { path: PathBuf, detail: String },
    /// The header announces more voxel data than the volume-size limit allows
    /// ([`crate::limits`]); refused before anything that large is allocated or decompressed.
    #[error("{path}: the header announces {what} = {bytes} bytes of voxel data, more than the limit of {limit} bytes (raise it with --max-volume-gib or SPINESEG_MAX_VOLUME_GIB)")]
    TooLarge { path: PathBuf, what: String, bytes: u128, limit: u64 },
}

impl IoError {
    /// The file this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IoError::Os { path, .. }
            | IoError::UnknownFormat { path }
            | IoError::Truncated { path, .. }
            | IoError::InvalidHeader { path, .. }
            | IoError::Unsupported { path, .. }
            | IoError::Decompress { path, .. }
            | IoError::SizeMismatch { path, .. }
            | IoError::InvalidGeometry { path, .. }
            | IoError::InvalidValues { path, .. }
            | IoError::TooLarge { path, .. } => path,
        }
    }
}

/// A geometry error that is not (yet) tied to a file; readers attach the path with
/// [`GeometryError::at`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct GeometryError(pub String);

impl GeometryError {
    pub fn at(self, path: impl Into<PathBuf>) -> IoError {
        IoError::InvalidGeometry { path: path.into(), detail: self.0 }
    }
}

pub type Result<T, E = IoError> = std::result::Result<T, E>;
