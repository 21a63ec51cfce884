//! File-level jobs behind the `edgebert-quantize` subcommands: read inputs, transform, validate
//! with the runtime, write atomically.

use std::path::{Path, PathBuf};

use edgebert_runtime::{Bundle, Classifier, ClassifierOptions, Metric, Quantization};

use crate::dynamic::{quantize_dynamic, DynamicOptions, TensorReport};
use crate::error::ExportError;
use crate::onnx;

/// A model to quantize: a bundle, or a plain ONNX graph (with what a bundle needs when the output
/// is one).
#[derive(Debug, Clone)]
pub struct DynamicJob {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Also write the plain int8 ONNX here.
    pub onnx_out: Option<PathBuf>,
    /// For an ONNX input written as a bundle.
    pub tokenizer: Option<PathBuf>,
    pub labels: Option<Vec<String>>,
    pub max_len: usize,
    pub options: DynamicOptions,
}

/// What a quantization job did.
#[derive(Debug, Clone)]
pub struct DynamicSummary {
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    pub tensors: Vec<TensorReport>,
}

impl DynamicSummary {
    /// The per-tensor table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| node | weight | shape | f32 bytes | int8 bytes | SQNR (dB) |\n|---|---|---|---|---|---|\n");
        for t in &self.tensors {
            s.push_str(&format!(
                "| `{}` | `{}` | {:?} | {} | {} | {:.1} |\n",
                t.node, t.weight, t.shape, t.f32_bytes, t.int8_bytes, t.sqnr_db
            ));
        }
        s.push_str(&format!(
            "\nGraph: {} → {} bytes ({:.1}%).\n",
            self.f32_bytes,
            self.int8_bytes,
            100.0 * self.int8_bytes as f64 / self.f32_bytes.max(1) as f64
        ));
        s
    }
}

fn is_bundle(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "ebm")
}

/// Quantizes `job.input` dynamically and writes `job.output` (bundle or ONNX, by extension).
/// The result is loaded by the runtime before anything is written.
pub fn dynamic_to_file(job: &DynamicJob) -> Result<DynamicSummary, ExportError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| ExportError::io(p, e));
    let (mut bundle, f32_onnx) = if is_bundle(&job.input) {
        let b = Bundle::read(&job.input)?;
        let onnx = b.onnx.clone();
        (Some(b), onnx)
    } else {
        (None, read(&job.input)?)
    };
    let proto = onnx::decode(&f32_onnx).map_err(|e| {
        edgebert_runtime::Error::from(edgebert_runtime::ModelError::NotOnnx(e.to_string()))
    })?;
    let (int8, tensors) = quantize_dynamic(&proto, &job.options)?;
    let int8_onnx = onnx::encode(&int8);
    let summary = DynamicSummary {
        f32_bytes: f32_onnx.len(),
        int8_bytes: int8_onnx.len(),
        tensors,
    };

    let mut inputs: Vec<&Path> = vec![&job.input];
    inputs.extend(job.tokenizer.as_deref());
    if is_bundle(&job.output) {
        let mut b = match bundle.take() {
            Some(b) => b,
            None => {
                let (Some(tokenizer), Some(labels)) = (&job.tokenizer, &job.labels) else {
                    return Err(ExportError::Usage(
                        "an ONNX input written as a bundle needs --tokenizer and --labels".into(),
                    ));
                };
                edgebert_runtime::pack(
                    Vec::new(),
                    read(tokenizer)?,
                    labels.clone(),
                    job.max_len,
                    "classification",
                )?
            }
        };
        b.onnx = int8_onnx.clone();
        b.manifest.quantization = Quantization::DynamicInt8;
        b.manifest.provenance.created_by = "edgebert-quantize dynamic".into();
        b.manifest.provenance.tool_version = env!("CARGO_PKG_VERSION").into();
        b.manifest
            .provenance
            .metrics
            .retain(|m| m.name != "onnx_f32_bytes" && m.name != "onnx_int8_bytes");
        b.manifest.provenance.metrics.push(Metric {
            name: "onnx_f32_bytes".into(),
            value: summary.f32_bytes as f64,
        });
        b.manifest.provenance.metrics.push(Metric {
            name: "onnx_int8_bytes".into(),
            value: summary.int8_bytes as f64,
        });
        // Never write a bundle the device cannot run.
        Classifier::from_bundle(&b, ClassifierOptions::default())?;
        b.write(&job.output, &inputs)?;
    } else {
        edgebert_runtime::engine::Engine::load(&int8_onnx, 1)
            .map_err(edgebert_runtime::Error::from)?;
        edgebert_runtime::fsutil::write_atomic(&job.output, &int8_onnx, &inputs)?;
    }
    if let Some(path) = &job.onnx_out {
        edgebert_runtime::fsutil::write_atomic(path, &int8_onnx, &inputs)?;
    }
    Ok(summary)
}
