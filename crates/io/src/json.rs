//! The one way spineseg reads and writes its JSON files (plans, fingerprints, model folders,
//! checkpoint state, encoder configs): errors name the file, writes are atomic and end in a
//! newline. Each crate maps [`JsonFileError`] into its own error enum.

use crate::IoError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a JSON file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JsonFileError {
    /// The file could not be read (missing, permissions).
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON, or not the expected structure.
    #[error("{path}: invalid JSON: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The value could not be serialised (a map with non-string keys, say).
    #[error("{path}: cannot serialise: {source}")]
    Serialise {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Writing the file failed; nothing was left at the target.
    #[error(transparent)]
    Write(#[from] IoError),
}

/// `impl From<JsonFileError> for $error`, for a crate's error enum that has the variants
/// `Os { path, source: std::io::Error }`, `Json { path, source: serde_json::Error }` and a
/// `From<IoError>`: a read failure becomes `Os`, a parse or serialisation failure `Json`, a write
/// failure the I/O error. One mapping for every crate, so the messages agree.
#[macro_export]
macro_rules! json_file_error_into {
    ($error:ident) => {
        impl From<$crate::json::JsonFileError> for $error {
            fn from(error: $crate::json::JsonFileError) -> Self {
                use $crate::json::JsonFileError;
                match error {
                    JsonFileError::Read { path, source } => $error::Os { path, source },
                    JsonFileError::Parse { path, source } | JsonFileError::Serialise { path, source } => {
                        $error::Json { path, source }
                    }
                    JsonFileError::Write(e) => e.into(),
                }
            }
        }
    };
}

impl JsonFileError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            JsonFileError::Read { path, .. } | JsonFileError::Parse { path, .. } | JsonFileError::Serialise { path, .. } => path,
            JsonFileError::Write(e) => e.path(),
        }
    }
}

/// Reads `path` as JSON into `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, JsonFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| JsonFileError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| JsonFileError::Parse { path: path.to_path_buf(), source })
}

/// Writes `value` as pretty JSON plus a newline, atomically (temporary file, then rename).
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), JsonFileError> {
    let text = serde_json::to_string_pretty(value).map_err(|source| JsonFileError::Serialise { path: path.to_path_buf(), source })?;
    crate::atomic::write_atomically(path, |w| {
        w.write_all(text.as_bytes())?;
        w.write_all(b"\n")
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_json(&path, &vec![1, 2, 3]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2,\n  3\n]\n");
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), [1, 2, 3]);

        let missing = read_json::<Vec<i32>>(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(&missing, JsonFileError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        assert!(missing.to_string().contains("missing.json"), "{missing}");
        std::fs::write(&path, "{not json").unwrap();
        let bad = read_json::<Vec<i32>>(&path).unwrap_err();
        assert!(bad.to_string().contains("a.json") && bad.to_string().contains("invalid JSON"), "{bad}");
        assert_eq!(bad.path(), path);
    }
}
