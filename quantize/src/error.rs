//! Typed errors of the host-side tools.

use std::path::PathBuf;

/// Why a checkpoint could not be read, exported or quantized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid config.json: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error(
        "this checkpoint is a bare BertModel with no classification head (no `classifier.weight`); \
         fine-tune it for a task first (edgebert-distill finetune-teacher)"
    )]
    NoClassifier,
    #[error("missing weight `{0}` in model.safetensors")]
    MissingWeight(String),
    #[error("weight `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("weight `{name}` has dtype {dtype}; edgebert reads F32, F16 and BF16")]
    BadDtype { name: String, dtype: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Runtime(#[from] edgebert_runtime::Error),
    #[error(transparent)]
    Quantize(#[from] crate::dynamic::QuantizeError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(
        "int8 accuracy {int8:.2}% is {drop:.2} points below f32 {f32:.2}% (allowed: {max:.2}); \
         nothing written (try --keep-f32)"
    )]
    AccuracyDrop {
        f32: f64,
        int8: f64,
        drop: f64,
        max: f64,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
