//! File-level jobs behind the `edgebert-quantize` subcommands: read inputs, transform, validate
//! with the runtime, write atomically.

use std::path::{Path, PathBuf};

use edgebert_runtime::{Bundle, Classifier, ClassifierOptions, Metric, Quantization};

use crate::data::{read_examples, Columns};
use crate::dynamic::{quantize_dynamic, DynamicOptions, TensorReport};
use crate::error::Error;
use crate::eval::{agreement, evaluate, Evaluation};
use crate::onnx;

/// A model to quantize: a bundle, or a plain ONNX graph (with what a bundle needs when the output
/// is one).
#[derive(Debug, Clone)]
pub struct QuantizeJob {
    pub input: PathBuf,
    pub output: PathBuf,
    /// Also write the plain int8 ONNX here.
    pub onnx_out: Option<PathBuf>,
    /// For an ONNX input written as a bundle.
    pub tokenizer: Option<PathBuf>,
    pub labels: Option<Vec<String>>,
    pub max_len: usize,
    pub options: DynamicOptions,
    /// Measure f32 and int8 accuracy on labelled data, and guard the drop.
    pub eval: Option<EvalSpec>,
    /// Prune the vocabulary to what this corpus uses (plain text lines, or the `text` column of a
    /// CSV/TSV/JSON-lines file) before quantizing.
    pub prune_vocab: Option<PathBuf>,
    /// Without a corpus: cut only the pieces the tokenizer can never produce (lossless).
    pub trim_vocab: bool,
    /// Static int8: activation ranges calibrated on these texts; `None`: dynamic.
    pub calibration: Option<Calibration>,
}

/// Calibration texts and how ranges are chosen from them.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub texts: PathBuf,
    pub method: crate::calibrate::Method,
}

/// Labelled data to evaluate on, and the largest accuracy drop to accept.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    pub data: PathBuf,
    pub columns: Columns,
    /// In accuracy points (0.5 = half a percentage point); `None` measures without guarding.
    pub max_drop: Option<f64>,
}

/// f32 against int8 on the same examples, both through the runtime.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub f32: Evaluation,
    pub int8: Evaluation,
    /// Share of examples where both gave the same label.
    pub agreement: f64,
}

impl EvalReport {
    /// Accuracy lost by int8, in points.
    pub fn drop_points(&self) -> f64 {
        100.0 * (self.f32.accuracy - self.int8.accuracy)
    }
}

/// What a quantization job did.
#[derive(Debug, Clone)]
pub struct QuantizeSummary {
    /// The f32 graph that was quantized (after pruning, when pruned).
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    /// The int8 bundle's bytes (graph, tokenizer, manifest), when one was made.
    pub bundle_bytes: Option<usize>,
    pub tensors: Vec<TensorReport>,
    pub eval: Option<EvalReport>,
    pub prune: Option<crate::prune::PruneReport>,
    /// Nodes left in f32 (asked for, or chosen by `--keep-f32 auto`).
    pub kept_f32: Vec<String>,
    /// Each quantized node's output against f32 on the calibration (else evaluation) texts,
    /// the logits last; empty when no texts were given.
    pub activations: Vec<crate::activation::ActivationError>,
    /// Texts the activation errors were measured on.
    pub activation_texts: usize,
}

/// At most this many texts are run through both graphs for the activation-level table.
pub const ACTIVATION_TEXTS: usize = 200;

impl QuantizeSummary {
    /// The per-tensor table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| node | weight | shape | f32 bytes | int8 bytes | SQNR (dB) |\n|---|---|---|---|---|---|\n");
        for t in &self.tensors {
            s.push_str(&format!(
                "| `{}` | `{}` | {:?} | {} | {} | {:.1} |\n",
                t.node, t.weight, t.shape, t.f32_bytes, t.int8_bytes, t.sqnr_db
            ));
        }
        if !self.activations.is_empty() {
            s.push_str(&format!(
                "\nEach quantized node's output, int8 graph against f32 graph, on {} texts \
                 padded as on the device (logits last):\n\n\
                 | node | output | SQNR (dB) | relative error |\n|---|---|---|---|\n",
                self.activation_texts
            ));
            for a in &self.activations {
                s.push_str(&format!(
                    "| `{}` | `{}` | {:.1} | {:.4} |\n",
                    a.node, a.tensor, a.sqnr_db, a.relative_error
                ));
            }
        }
        if let Some(e) = &self.eval {
            s.push_str(&format!(
                "\n| model | examples | accuracy | macro-F1 |\n|---|---|---|---|\n\
                 | f32 | {} | {:.2}% | {:.4} |\n| int8 | {} | {:.2}% | {:.4} |\n\n\
                 Agreement of f32 and int8 labels: {:.2}%; accuracy drop {:.2} points.\n",
                e.f32.examples,
                100.0 * e.f32.accuracy,
                e.f32.macro_f1,
                e.int8.examples,
                100.0 * e.int8.accuracy,
                e.int8.macro_f1,
                100.0 * e.agreement,
                e.drop_points()
            ));
        }
        if !self.kept_f32.is_empty() {
            s.push_str(&format!("\nKept in f32: {}.\n", self.kept_f32.join(", ")));
        }
        let how = match self.prune.as_ref().map(|p| p.corpus_lines) {
            Some(Some(lines)) => format!("pruned to the {lines} corpus lines' pieces"),
            Some(None) => "trimmed (every text tokenizes as before)".into(),
            None => String::new(),
        };
        if let Some(p) = &self.prune {
            s.push_str(&format!(
                "\nVocabulary {how}: {} → {} embedding rows ({} pieces the tokenizer can never \
                 produce among those cut), f32 graph {} → {} bytes.\n",
                p.rows_before, p.rows_after, p.unreachable, p.onnx_bytes_before, p.onnx_bytes_after
            ));
        }
        let original = self
            .prune
            .as_ref()
            .map_or(self.f32_bytes, |p| p.onnx_bytes_before);
        let share = |n: usize| 100.0 * n as f64 / original.max(1) as f64;
        s.push_str(&format!(
            "\nGraph: {} → {} bytes ({:.1}%).\n",
            self.f32_bytes,
            self.int8_bytes,
            100.0 * self.int8_bytes as f64 / self.f32_bytes.max(1) as f64
        ));
        if self.prune.is_some() {
            s.push_str(&format!(
                "Of the original f32 graph ({original} bytes): int8 graph {:.1}%.\n",
                share(self.int8_bytes)
            ));
        }
        if let Some(b) = self.bundle_bytes {
            s.push_str(&format!(
                "Bundle (graph, tokenizer, manifest): {b} bytes, {:.1}% of the original f32 \
                 graph.\n",
                share(b)
            ));
        }
        s
    }
}

impl QuantizeSummary {
    /// Writes the per-tensor SQNR as a bar chart, `{stem}.png` and `{stem}.svg`.
    pub fn plot(&self, stem: &Path) -> Result<Vec<PathBuf>, crate::plot::PlotError> {
        let chart = crate::plot::Chart {
            title: "int8 weight error per tensor (higher is better)".into(),
            x_label: "tensor (layer.part)".into(),
            y_label: "SQNR (dB)".into(),
            categories: self.tensors.iter().map(|t| short_name(&t.node)).collect(),
            series: vec![crate::plot::Series {
                name: "SQNR".into(),
                points: self
                    .tensors
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i as f64, t.sqnr_db.min(99.0)))
                    .collect(),
            }],
            ..Default::default()
        };
        let mut charts = vec![chart];
        if !self.activations.is_empty() {
            charts.push(crate::plot::Chart {
                title: format!(
                    "int8 output error per node on {} texts (higher is better)",
                    self.activation_texts
                ),
                x_label: "node output (layer.part; logits last)".into(),
                y_label: "SQNR (dB)".into(),
                categories: self
                    .activations
                    .iter()
                    .map(|a| short_name(&a.node))
                    .collect(),
                series: vec![crate::plot::Series {
                    name: "output SQNR".into(),
                    points: self
                        .activations
                        .iter()
                        .enumerate()
                        .map(|(i, a)| (i as f64, a.sqnr_db.min(99.0)))
                        .collect(),
                }],
                ..Default::default()
            });
        }
        crate::plot::write_charts(stem, &charts)
    }
}

/// A compact label for an exported node name: `/encoder/layer.2/attention/query/MatMul` → `2.q`.
pub fn short_name(node: &str) -> String {
    let n = node.trim_start_matches('/').trim_end_matches("/MatMul");
    let (layer, rest) = match n.strip_prefix("encoder/layer.") {
        Some(r) => match r.split_once('/') {
            Some((l, rest)) => (format!("{l}."), rest),
            None => (String::new(), r),
        },
        None => (String::new(), n),
    };
    let part = match rest {
        "attention/query" => "q",
        "attention/key" => "k",
        "attention/value" => "v",
        "attention/output" | "attention/output/dense" => "attn",
        "intermediate" | "intermediate/dense" => "ff1",
        "output" | "output/dense" => "ff2",
        "pooler" | "pooler/dense" => "pool",
        "classifier" => "cls",
        "embeddings/word" => "emb",
        "embeddings/position" => "pos",
        other => other,
    };
    format!("{layer}{part}")
}

fn is_bundle(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "ebm")
}

/// Quantizes `job.input` dynamically and writes `job.output` (bundle or ONNX, by extension).
/// The result is loaded by the runtime, and evaluated when asked, before anything is written;
/// a model over the accuracy guard is not written at all.
pub fn quantize_to_file(job: &QuantizeJob) -> Result<QuantizeSummary, Error> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    // The f32 model as a bundle when we can make one (needed for a bundle output or evaluation).
    let f32_bundle = if is_bundle(&job.input) {
        Some(Bundle::read(&job.input)?)
    } else if let (Some(tokenizer), Some(labels)) = (&job.tokenizer, &job.labels) {
        Some(edgebert_runtime::pack(
            read(&job.input)?,
            read(tokenizer)?,
            labels.clone(),
            job.max_len,
            "classification",
        )?)
    } else {
        None
    };
    // Pruning happens on the f32 model; the guard below compares the original f32 model with
    // the pruned int8 one, so it covers both losses.
    let corpus = job.prune_vocab.as_deref().map(read_corpus).transpose()?;
    let (source_bundle, prune) = match (&corpus, job.trim_vocab, &f32_bundle) {
        (None, false, _) => (f32_bundle.clone(), None),
        (_, _, Some(b)) => {
            let (pruned, report) = crate::prune::prune_vocab(b, corpus.as_deref())?;
            (Some(pruned), Some(report))
        }
        (_, _, None) => {
            return Err(Error::Usage(
                "--prune-vocab and --trim-vocab need the tokenizer: give a bundle, or \
                 --tokenizer and --labels"
                    .into(),
            ))
        }
    };
    let f32_onnx = match &source_bundle {
        Some(b) => b.graph.clone(),
        None => read(&job.input)?,
    };
    let proto = onnx::decode(&f32_onnx).map_err(|e| {
        edgebert_runtime::Error::from(edgebert_runtime::ModelError::NotOnnx(e.to_string()))
    })?;
    // `--keep-f32 auto`: quantize everything, then keep the tensors with the worst SQNR in f32,
    // one at a time, until the accuracy guard is met (mixed precision chosen by measurement).
    let auto = job.options.keep_f32.iter().any(|k| k == "auto");
    let max_drop = job.eval.as_ref().and_then(|e| e.max_drop);
    if auto && max_drop.is_none() {
        return Err(Error::Usage(
            "--keep-f32 auto needs --eval DATA and --max-drop POINTS to know when to stop".into(),
        ));
    }
    let mut options = job.options.clone();
    options.keep_f32.retain(|k| k != "auto");
    let examples = match (&job.eval, &f32_bundle) {
        (Some(spec), Some(b)) => Some(read_examples(
            &spec.data,
            &spec.columns,
            &b.manifest.labels,
        )?),
        _ => None,
    };
    let f32_eval = match (&examples, &f32_bundle) {
        (Some(ex), Some(b)) => Some(evaluate_bundle(b, ex, "f32")?),
        _ => None,
    };
    let ranges = match (&job.calibration, &source_bundle) {
        (Some(c), Some(b)) => {
            let acts = crate::dynamic::activation_inputs(&proto, &options)?;
            let bar = edgebert_runtime::progress::bar(0, "calibrating");
            let r = crate::calibrate::calibrate(b, &acts, &read_corpus(&c.texts)?, c.method, &bar)?;
            bar.finish_and_clear();
            Some(r)
        }
        (Some(_), None) => {
            return Err(Error::Usage(
                "static quantization runs the model on text: give a bundle, or --tokenizer and --labels"
                    .into(),
            ))
        }
        (None, _) => None,
    };
    let (scheme, tool) = match &job.calibration {
        Some(c) => (
            Quantization::StaticInt8 {
                method: c.method.name().into(),
            },
            "edgebert-quantize static",
        ),
        None => (Quantization::DynamicInt8, "edgebert-quantize dynamic"),
    };
    let mut candidates: Option<Vec<TensorReport>> = None;
    let (int8_onnx, int8_bundle, mut summary) = loop {
        let (int8, tensors) = match &ranges {
            Some(r) => crate::dynamic::quantize_static(&proto, &options, r)?,
            None => quantize_dynamic(&proto, &options)?,
        };
        let int8_onnx = onnx::encode(&int8);
        let mut summary = QuantizeSummary {
            f32_bytes: f32_onnx.len(),
            int8_bytes: int8_onnx.len(),
            bundle_bytes: None,
            tensors,
            eval: None,
            prune: prune.clone(),
            kept_f32: options.keep_f32.clone(),
            activations: Vec::new(),
            activation_texts: 0,
        };
        let needs_bundle = is_bundle(&job.output) || job.eval.is_some();
        let int8_bundle = match (&source_bundle, needs_bundle) {
            (Some(source), _) => {
                let mut b = source.clone();
                b.graph = int8_onnx.clone();
                let p = &mut b.manifest.provenance;
                b.manifest.quantization = scheme.clone();
                p.created_by = tool.into();
                p.tool_version = env!("CARGO_PKG_VERSION").into();
                set_metric(&mut p.metrics, "onnx_f32_bytes", summary.f32_bytes as f64);
                set_metric(&mut p.metrics, "onnx_int8_bytes", summary.int8_bytes as f64);
                // Never write a model the device cannot run.
                Classifier::from_bundle(&b, ClassifierOptions::default())?;
                Some(b)
            }
            (None, true) => return Err(Error::Usage(
                "an ONNX input needs --tokenizer and --labels to be written as a bundle or evaluated"
                    .into(),
            )),
            (None, false) => {
                edgebert_runtime::engine::Engine::load(&int8_onnx, 1)
                    .map_err(edgebert_runtime::Error::from)?;
                None
            }
        };
        if let (Some(ex), Some(f32), Some(b)) = (&examples, &f32_eval, &int8_bundle) {
            let int8 = evaluate_bundle(b, ex, "int8")?;
            let report = EvalReport {
                agreement: agreement(&f32.predictions, &int8.predictions),
                f32: f32.clone(),
                int8,
            };
            let drop = report.drop_points();
            summary.eval = Some(report.clone());
            if let Some(max) = max_drop.filter(|&max| drop > max) {
                let order = candidates.get_or_insert_with(|| {
                    let mut t = summary.tensors.clone();
                    t.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
                    t.reverse();
                    t
                });
                // Never the last one: a graph with nothing quantized is just the f32 model.
                match order.pop() {
                    Some(worst) if auto && !order.is_empty() => {
                        eprintln!(
                            "int8 is {drop:.2} points below f32 (allowed {max:.2}): keeping {} \
                             (SQNR {:.1} dB) in f32",
                            worst.node, worst.sqnr_db
                        );
                        options.keep_f32.push(worst.node);
                        continue;
                    }
                    _ => {
                        return Err(Error::AccuracyDrop {
                            f32: 100.0 * report.f32.accuracy,
                            int8: 100.0 * report.int8.accuracy,
                            drop,
                            max,
                        })
                    }
                }
            }
        }
        break (int8_onnx, int8_bundle, summary);
    };
    summary.kept_f32 = options.keep_f32.clone();

    // The activation-level table: the texts the model was calibrated on, else evaluated on.
    let texts: Vec<String> = match (&job.calibration, &examples) {
        (Some(c), _) => read_corpus(&c.texts)?,
        (None, Some(ex)) => ex.iter().map(|e| e.text.clone()).collect(),
        (None, None) => Vec::new(),
    };
    let texts: Vec<String> = texts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .take(ACTIVATION_TEXTS)
        .collect();
    if let (Some(f32), false) = (&source_bundle, texts.is_empty()) {
        let nodes: Vec<(String, String)> = summary
            .tensors
            .iter()
            .filter(|t| !summary.kept_f32.contains(&t.node))
            .map(|t| (t.node.clone(), t.output.clone()))
            .collect();
        let bar = edgebert_runtime::progress::bar(0, "comparing activations");
        summary.activations =
            crate::activation::activation_errors(f32, &int8_onnx, &nodes, &texts, &bar)?;
        summary.activation_texts = texts.len();
        bar.finish_and_clear();
    }

    let mut inputs: Vec<&Path> = vec![&job.input];
    inputs.extend(job.tokenizer.as_deref());
    if let Some(spec) = &job.eval {
        inputs.push(&spec.data);
    }
    inputs.extend(job.prune_vocab.as_deref());
    inputs.extend(job.calibration.as_ref().map(|c| c.texts.as_path()));
    match int8_bundle {
        Some(mut b) if is_bundle(&job.output) => {
            if let Some(e) = &summary.eval {
                let m = &mut b.manifest.provenance.metrics;
                set_metric(m, "f32_accuracy", e.f32.accuracy);
                set_metric(m, "int8_accuracy", e.int8.accuracy);
                set_metric(m, "f32_macro_f1", e.f32.macro_f1);
                set_metric(m, "int8_macro_f1", e.int8.macro_f1);
                set_metric(m, "f32_int8_agreement", e.agreement);
                set_metric(m, "eval_examples", e.f32.examples as f64);
            }
            let bytes = b.to_bytes();
            summary.bundle_bytes = Some(bytes.len());
            edgebert_runtime::fsutil::write_atomic(&job.output, &bytes, &inputs)?;
        }
        _ => write_onnx(&job.output, &int8_onnx, &source_bundle, &prune, &inputs)?,
    }
    if let Some(path) = &job.onnx_out {
        write_onnx(path, &int8_onnx, &source_bundle, &prune, &inputs)?;
    }
    Ok(summary)
}

/// Writes a plain ONNX output; when the vocabulary was cut, the renumbered tokenizer goes beside
/// it as `NAME.tokenizer.json` (the original tokenizer no longer matches the graph's rows).
fn write_onnx(
    path: &Path,
    onnx: &[u8],
    source: &Option<Bundle>,
    prune: &Option<crate::prune::PruneReport>,
    inputs: &[&Path],
) -> Result<(), Error> {
    edgebert_runtime::fsutil::write_atomic(path, onnx, inputs)?;
    if let (Some(b), Some(_)) = (source, prune) {
        let tokenizer = path.with_extension("tokenizer.json");
        edgebert_runtime::fsutil::write_atomic(&tokenizer, &b.tokenizer_json, inputs)?;
        eprintln!(
            "the vocabulary was cut: its tokenizer is {}",
            tokenizer.display()
        );
    }
    Ok(())
}

/// Lines of a corpus: the `text` column of a CSV/TSV/JSON-lines file, else each line.
fn read_corpus(path: &Path) -> Result<Vec<String>, Error> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "csv" | "tsv" | "jsonl" | "json") {
        Ok(crate::data::read_table(path, &["text"])?
            .into_iter()
            .filter_map(|r| r.fields.into_iter().next())
            .collect())
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(text.lines().map(String::from).collect())
    }
}

/// What `annotate` records in a bundle's manifest.
#[derive(Debug, Clone, Default)]
pub struct Annotation {
    pub teacher: Option<String>,
    pub data: Option<String>,
    /// Metrics to set (replacing any of the same name).
    pub metrics: Vec<(String, f64)>,
}

/// Copies a bundle to `output` with provenance and metrics added to its manifest (atomically,
/// never over the input); the model itself is untouched.
pub fn annotate(input: &Path, output: &Path, a: &Annotation) -> Result<(), Error> {
    let mut b = Bundle::read(input)?;
    let p = &mut b.manifest.provenance;
    if a.teacher.is_some() {
        p.teacher = a.teacher.clone();
    }
    if a.data.is_some() {
        p.data = a.data.clone();
    }
    for (name, value) in &a.metrics {
        if !value.is_finite() {
            return Err(Error::Usage(format!(
                "metric {name} = {value} is not a number"
            )));
        }
        set_metric(&mut p.metrics, name, *value);
    }
    b.write(output, &[input])?;
    Ok(())
}

pub(crate) fn set_metric(metrics: &mut Vec<Metric>, name: &str, value: f64) {
    metrics.retain(|m| m.name != name);
    metrics.push(Metric {
        name: name.into(),
        value,
    });
}

fn evaluate_bundle(
    bundle: &Bundle,
    examples: &[crate::data::Example],
    name: &str,
) -> Result<Evaluation, Error> {
    let mut classifier = Classifier::from_bundle(bundle, ClassifierOptions::default())?;
    let bar = edgebert_runtime::progress::bar(examples.len() as u64, name);
    let e = evaluate(&mut classifier, examples, &bar)?;
    bar.finish_and_clear();
    Ok(e)
}
