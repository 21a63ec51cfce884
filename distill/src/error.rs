//! Typed errors of distillation.

use std::path::PathBuf;

/// Why a teacher, a student, data or a run could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistillError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading a checkpoint or exporting one (config.json, safetensors, missing tensors).
    #[error(transparent)]
    Checkpoint(#[from] edgebert_quantize::Error),
    #[error(transparent)]
    Data(#[from] edgebert_quantize::data::DataError),
    #[error(transparent)]
    Runtime(#[from] edgebert_runtime::Error),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor { name: String, expected: Vec<usize> },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error(
        "the tokenizer can emit token id {id_bound_minus_one} but the model has {rows} embedding rows: \
         tokenizer.json does not belong to this model"
    )]
    TokenizerMismatch {
        id_bound_minus_one: usize,
        rows: usize,
    },
    #[error("layer map names layer {layer}, but the teacher has {layers} layers (0..{layers})")]
    NoSuchLayer { layer: usize, layers: usize },
    #[error("layer map {0:?}: layers must be distinct and increasing")]
    BadLayerMap(Vec<usize>),
    #[error("{path}: {message}")]
    BadData { path: PathBuf, message: String },
    #[error(
        "{dir} holds a finished run; pass --force to train again (its files will be replaced)"
    )]
    Finished { dir: PathBuf },
    #[error("{dir}: cannot resume: {message}")]
    Resume { dir: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

impl DistillError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DistillError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = DistillError> = std::result::Result<T, E>;
