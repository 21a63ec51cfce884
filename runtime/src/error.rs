//! Typed errors of the runtime: what is wrong with a bundle, a model, or one input text.

use std::path::PathBuf;

/// A bundle file that cannot be read as a bundle (container level, before any model is built).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the file is empty (0 bytes), not a bundle")]
    Empty,
    #[error(
        "bad magic bytes: this is not an edgebert bundle (.ebm files start with \"EDGEBERT\")"
    )]
    BadMagic,
    #[error(
        "bundle format version {found} is newer than this edgebert reads (version {supported}); \
         upgrade edgebert"
    )]
    NewerVersion { found: u16, supported: u16 },
    #[error(
        "bundle format version {found} is older than this edgebert reads (version {supported}); \
         rebuild the bundle with `edgebert pack`"
    )]
    OlderVersion { found: u16, supported: u16 },
    #[error("truncated bundle: {expected} bytes expected, {actual} present")]
    Truncated { expected: u64, actual: u64 },
    #[error("{extra} unexpected bytes after the end of the bundle")]
    TrailingBytes { extra: u64 },
    #[error(
        "checksum mismatch, the bundle is corrupt (stored {stored:08x}, computed {computed:08x})"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("corrupt manifest: {0}")]
    Manifest(String),
    #[error("corrupt tokenizer section (it does not inflate): {0}")]
    Tokenizer(String),
}

/// A model, tokenizer and label set that cannot work together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("not a readable ONNX model: {0}")]
    NotOnnx(String),
    #[error("the ONNX graph uses operators that tract does not implement: {}", ops.join(", "))]
    UnsupportedOperators { ops: Vec<String> },
    #[error("the ONNX graph has no input named `{name}` (its inputs: {})", found.join(", "))]
    MissingInput {
        name: &'static str,
        found: Vec<String>,
    },
    #[error(
        "the ONNX graph has an input `{name}` that edgebert cannot feed \
         (it feeds input_ids, attention_mask, token_type_ids)"
    )]
    UnknownInput { name: String },
    #[error("the ONNX graph has no output")]
    NoOutput,
    #[error("tokenizer.json is not a valid tokenizer: {0}")]
    Tokenizer(String),
    #[error("the tokenizer has no `{0}` token")]
    MissingSpecialToken(String),
    #[error(
        "the tokenizer does not match the model: its vocabulary has {vocab} tokens but the model's \
         embedding table has {rows} rows"
    )]
    VocabTooLarge { vocab: usize, rows: usize },
    #[error("{labels} labels were given but the model outputs {logits} logits")]
    LabelCount { labels: usize, logits: usize },
    #[error("the model must have at least two labels")]
    TooFewLabels,
    #[error("label `{0}` appears twice")]
    DuplicateLabel(String),
    #[error("invalid maximum sequence length {0} (must be between 2 and 8192)")]
    MaxLen(usize),
    #[error("the decision rule `{decision}` does not fit the model: its label must be one of {labels}, its threshold between 0 and 1")]
    Decision { decision: String, labels: String },
    #[error("the model's output is not [batch, labels] f32 logits: {0}")]
    BadOutput(String),
    #[error("tract cannot prepare the model: {0}")]
    Tract(String),
    #[error("the compiled graph does not load with this edgebert (tract {tract}): {0}; compile the bundle again from its ONNX form (`edgebert compile`)", tract = crate::TRACT_VERSION)]
    Compiled(String),
    #[error("cannot compile the graph: {0}")]
    Compile(String),
    #[error("the bundle's graph is compiled already")]
    AlreadyCompiled,
}

/// Why one text could not be classified; the other texts of a batch are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("empty text")]
    Empty,
    #[error("the text has no tokens once normalised (only control or whitespace characters)")]
    NoTokens,
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 { valid_up_to: usize },
    #[error("tokenization failed: {0}")]
    Tokenizer(String),
    #[error("not an e-mail: no header block, or neither a subject nor body text")]
    NotEmail,
}

/// Every error the runtime library returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("refusing to write {0}: it is also an input")]
    OutputIsInput(PathBuf),
    #[error("inference failed: {0}")]
    Inference(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the error is the user's input or model (exit code 2) rather than the system (3).
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::IsADirectory
            ),
            Error::Bundle(_) | Error::Model(_) | Error::Input(_) | Error::OutputIsInput(_) => true,
            Error::Inference(_) => false,
        }
    }
}

/// Result of the runtime library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
