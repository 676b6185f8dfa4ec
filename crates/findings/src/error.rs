//! The one error type of the findings crate. Every variant about a file names it, and the line
//! (1-based, the header is line 1) and column where the problem is, so a user can open the CSV
//! and see the cell.

use std::path::PathBuf;

/// Errors from reading or writing gradings and findings tables, cutting disc regions of
/// interest and evaluating findings.
#[derive(Debug, thiserror::Error)]
pub enum FindingsError {
    /// Writing a file failed (the I/O error names the file; nothing was left at the target).
    #[error(transparent)]
    Io(#[from] spineseg_io::IoError),
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or serialised.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The CSV itself is malformed (unequal row lengths, bad UTF-8, unreadable).
    #[error("{path}: line {line}: {detail}")]
    Csv { path: PathBuf, line: u64, detail: String },
    /// A column the format needs is absent from the header.
    #[error("{path}: line 1: missing column '{column}' (the header has: {header})")]
    MissingColumn { path: PathBuf, column: String, header: String },
    /// The header is neither a SPIDER gradings file nor a spineseg findings file.
    #[error("{path}: line 1: not a SPIDER gradings.csv nor a spineseg findings CSV (header: {header})")]
    UnknownFormat { path: PathBuf, header: String },
    /// A cell holds a value the column does not allow.
    #[error("{path}: line {line}, column '{column}': {detail}")]
    InvalidValue { path: PathBuf, line: u64, column: String, detail: String },
    /// The same (case, level) appears twice in one table.
    #[error("{path}: line {line}: case '{case}' level {level} already appeared on line {first_line}")]
    DuplicateLevel { path: PathBuf, line: u64, first_line: u64, case: String, level: String },
    /// A region of interest cannot be cut: too few disc pixels, mismatched sizes, bad directions.
    #[error("disc region of interest: {0}")]
    Roi(String),
    /// An ROI set's files disagree (a block index past the pixels, a truncated pixels file).
    #[error("{path}: {detail}")]
    InvalidRoiSet { path: PathBuf, detail: String },
    /// Arguments to an evaluation are inconsistent (e.g. lengths differ).
    #[error("invalid evaluation input: {0}")]
    InvalidInput(String),
}

spineseg_io::json_file_error_into!(FindingsError);

pub type Result<T, E = FindingsError> = std::result::Result<T, E>;
