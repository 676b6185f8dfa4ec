//! `TextError`: every failure names the file (or text) it concerns.

use std::path::PathBuf;

/// Errors of loading and running the text encoder, and of embedding a plan's class prompts.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file that could not be read (absent, permissions, ...).
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that could not be written (test support only).
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON configuration that is not valid JSON, lacks a field or holds an impossible value.
    #[error("{path}: unreadable config: {message}")]
    Config { path: PathBuf, message: String },
    /// A configuration asking for something this encoder does not implement (pooling mode,
    /// activation, sentence-transformers module, model type).
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// A weights file that is not a valid safetensors file.
    #[error("{path}: not a readable safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// A tensor the model needs is not in the weights file.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor whose shape does not fit the configuration.
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?} (from config.json)")]
    WrongShape { path: PathBuf, name: String, expected: Vec<usize>, actual: Vec<usize> },
    /// A tensor stored in a dtype other than F32, F16 or BF16.
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    /// A tokenizer file (tokenizer.json or vocab.txt) that could not be loaded.
    #[error("{path}: cannot build the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// Tokenising an input text failed.
    #[error("cannot tokenise {text:?}: {message}")]
    Encode { text: String, message: String },
    /// Reading a result back from the device failed.
    #[error("reading the embeddings back from the device: {0}")]
    Readback(String),
    /// A plan class whose label value is not an ontology structure, so it has no class prompt.
    #[error("{path}: class {class} (value {value}) is not an ontology structure")]
    NotAStructure { path: PathBuf, class: usize, value: u16 },
    /// Reading a plan failed (names the file).
    #[error(transparent)]
    Plan(#[from] spineseg_preprocessing::error::PreprocessError),
    /// Writing a model folder's file failed (names the file).
    #[error(transparent)]
    ModelFolder(#[from] spineseg_infer::InferError),
}

pub type Result<T, E = TextError> = std::result::Result<T, E>;
