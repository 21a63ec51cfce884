//! The classifier: a bundle made runnable. All checks and preparation happen in the constructor;
//! `classify` only tokenizes, pads and runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::bundle::Bundle;
use crate::engine::{Engine, OpTime, TokenBatch};
use crate::error::{Error, InputError, ModelError, Result};
use crate::manifest::{Decision, Manifest, Provenance, Quantization, TokenizerSettings};
use crate::text::{Encoded, LongText, Reading, TextEncoder};

/// Sequence lengths that plans are prepared for; a text is padded to the smallest that fits.
pub const LENGTH_BUCKETS: [usize; 6] = [16, 32, 64, 128, 256, 512];

/// How a classifier runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierOptions {
    /// Threads for matrix products (1: single-threaded).
    pub threads: usize,
    /// Texts of the same length bucket run together, this many at a time.
    pub batch_size: usize,
    /// How a text longer than the model's maximum length is read (none: as the bundle says, or
    /// else [`LongText::default`]).
    pub long: Option<LongText>,
    /// The rule that picks the answer (none: as the bundle says, or else the most probable
    /// label).
    pub decision: Option<Decision>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            threads: 1,
            batch_size: 8,
            long: None,
            decision: None,
        }
    }
}

/// One label and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub probability: f32,
}

/// The answer for one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The answer: the most probable label, or the one the decision rule picks
    /// ([`ClassifierOptions::decision`]).
    pub label: String,
    /// Its probability.
    pub probability: f32,
    /// Every label, most probable first.
    pub scores: Vec<LabelScore>,
    /// Tokens the model saw, special tokens included (in all its windows).
    pub tokens: usize,
    /// Inputs the text was read in: more than one for a long text read in chunks
    /// ([`LongText::Chunks`]), whose logits were averaged.
    pub windows: usize,
    /// Some of the text was not read: it was longer than the model's maximum and was cut.
    pub truncated: bool,
    /// Raw logits, in label order (averaged over the windows).
    #[serde(skip)]
    pub logits: Vec<f32>,
}

/// Told when the classifier starts work and what it answered: how a board shows answers on GPIO
/// pins (see `edgebert_boards::LabelSignal`) without the classifier knowing about pins.
pub trait Observer: Send {
    /// A call to `classify`/`classify_batch` begins.
    fn started(&mut self);
    /// It ended; `last` is the answer for its last text (`None`: that text failed, or the model).
    fn finished(&mut self, last: Option<&Prediction>);
}

/// A model ready to classify text.
#[derive(Debug)]
pub struct Classifier {
    manifest: Manifest,
    encoder: TextEncoder,
    engine: Engine,
    buckets: Vec<usize>,
    options: Settings,
    observer: ObserverSlot,
}

/// [`ClassifierOptions`] with the bundle's defaults applied and checked against the model.
#[derive(Debug, Clone)]
struct Settings {
    batch_size: usize,
    long: LongText,
    /// The decision rule's label and threshold.
    decision: Option<(usize, f32)>,
}

/// An optional observer; its own type only so that `Classifier` stays `Debug`.
#[derive(Default)]
struct ObserverSlot(Option<Box<dyn Observer>>);

impl std::fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Classifier {
    /// Reads a bundle file and prepares it.
    pub fn open(path: impl AsRef<Path>, options: ClassifierOptions) -> Result<Classifier> {
        let bytes = crate::fsutil::read(path.as_ref())?;
        let loaded = {
            let b = Bundle::parse(&bytes)?;
            Classifier::load(b.manifest, &b.tokenizer_json, b.graph, options)?
        };
        // tract holds its own copy of the weights now: the file's bytes go before the first plan.
        drop(bytes);
        loaded.prepared()
    }

    /// Checks and prepares a bundle held in memory (the built-in model), without copying its
    /// model first.
    pub fn from_bundle_bytes(bytes: &[u8], options: ClassifierOptions) -> Result<Classifier> {
        let b = Bundle::parse(bytes)?;
        let loaded = Classifier::load(b.manifest, &b.tokenizer_json, b.graph, options)?;
        // Once tract holds the weights, the built-in model's pages are no longer needed.
        if crate::embedded_model().is_some_and(|e| std::ptr::eq(e, bytes)) {
            crate::release_embedded_model()
        }
        loaded.prepared()
    }

    /// Checks that the bundle's model, tokenizer and labels fit together, and prepares it.
    pub fn from_bundle(bundle: &Bundle, options: ClassifierOptions) -> Result<Classifier> {
        Classifier::load(
            bundle.manifest.clone(),
            &bundle.tokenizer_json,
            &bundle.graph,
            options,
        )?
        .prepared()
    }

    /// Builds the tokenizer and the graph from a bundle's sections and checks that they fit
    /// together; no plan is prepared yet ([`Classifier::prepared`]), so the caller can let the
    /// sections go first.
    fn load(
        manifest: Manifest,
        tokenizer_json: &[u8],
        onnx: &[u8],
        options: ClassifierOptions,
    ) -> Result<Classifier> {
        let max_len = manifest.max_seq_len as usize;
        if !(2..=8192).contains(&max_len) {
            return Err(ModelError::MaxLen(max_len).into());
        }
        check_labels(&manifest.labels)?;
        // The tokenizer (15–30 k-piece maps) is built on a second core while tract loads the
        // graph; the int8 tile is timed there first (well under a millisecond), off the path.
        let (encoder, engine) = std::thread::scope(|scope| {
            let encoder = scope.spawn(|| {
                crate::cpu::choose_int8_tile();
                TextEncoder::from_json(tokenizer_json, max_len)
            });
            let engine = Engine::load(onnx, options.threads.max(1));
            let encoder = encoder.join().unwrap_or_else(|_| {
                Err(ModelError::Tokenizer(
                    "the tokenizer parser panicked".into(),
                ))
            });
            (encoder, engine)
        });
        let encoder = encoder?;
        let engine = engine?;
        if engine.logits() != manifest.labels.len() {
            return Err(ModelError::LabelCount {
                labels: manifest.labels.len(),
                logits: engine.logits(),
            }
            .into());
        }
        if let Some(rows) = engine.embedding_rows() {
            if encoder.id_bound() > rows {
                return Err(ModelError::VocabTooLarge {
                    vocab: encoder.id_bound(),
                    rows,
                }
                .into());
            }
        }
        let mut buckets: Vec<usize> = LENGTH_BUCKETS
            .iter()
            .copied()
            .filter(|&b| b < max_len)
            .collect();
        buckets.push(max_len);
        let decision = options
            .decision
            .as_ref()
            .or(manifest.defaults.decision.as_ref())
            .map(|d| {
                let label = manifest.labels.iter().position(|l| *l == d.label);
                match label {
                    Some(ix) if (0.0..=1.0).contains(&d.threshold) => Ok((ix, d.threshold)),
                    _ => Err(ModelError::Decision {
                        decision: d.to_string(),
                        labels: manifest.labels.join(", "),
                    }),
                }
            })
            .transpose()?;
        let options = Settings {
            batch_size: options.batch_size.max(1),
            long: options.long.or(manifest.defaults.long).unwrap_or_default(),
            decision,
        };
        Ok(Classifier {
            manifest,
            encoder,
            engine,
            buckets,
            options,
            observer: ObserverSlot::default(),
        })
    }

    /// Prepares the smallest length bucket's plan: proves that tract can optimise the graph at
    /// all, and the first short text answers without waiting for it.
    fn prepared(mut self) -> Result<Classifier> {
        self.engine.prepare(1, self.buckets[0])?;
        Ok(self)
    }

    /// The bundle with its ONNX graph replaced by the compiled graph ([`Engine::compile`]): it
    /// loads without parsing and analysing ONNX, most of a cold start. Checked before it is
    /// returned: the compiled bundle loads, and answers texts of two length buckets with the
    /// same logits as `bundle` (within 1e-5).
    pub fn compile(bundle: &Bundle, options: ClassifierOptions) -> Result<Bundle> {
        if crate::engine::is_compiled(&bundle.graph) {
            return Err(ModelError::AlreadyCompiled.into());
        }
        let mut original = Classifier::from_bundle(bundle, options.clone())?;
        let compiled_bundle = Bundle {
            manifest: bundle.manifest.clone(),
            tokenizer_json: bundle.tokenizer_json.clone(),
            graph: original.engine.compile()?,
        };
        let mut compiled = Classifier::from_bundle(&compiled_bundle, options)?;
        let long = "a film of many small pleasures and one long, tiresome middle act. ".repeat(8);
        for text in ["a gorgeous, moving film", long.as_str()] {
            let (a, b) = (original.classify(text)?, compiled.classify(text)?);
            let same = a.logits.len() == b.logits.len()
                && a.logits
                    .iter()
                    .zip(&b.logits)
                    .all(|(x, y)| (x - y).abs() <= 1e-5);
            if !same {
                return Err(ModelError::Compile(format!(
                    "the compiled graph answers differently: logits {:?} instead of {:?}",
                    b.logits, a.logits
                ))
                .into());
            }
        }
        Ok(compiled_bundle)
    }

    /// Tells `observer` about every call from now on (replacing any earlier one).
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) {
        self.observer = ObserverSlot(Some(observer));
    }

    /// Builds a classifier from a plain ONNX file, a tokenizer.json and label names, as other
    /// tools export them.
    pub fn from_parts(
        onnx: Vec<u8>,
        tokenizer_json: Vec<u8>,
        labels: Vec<String>,
        max_seq_len: usize,
        options: ClassifierOptions,
    ) -> Result<Classifier> {
        let bundle = pack(onnx, tokenizer_json, labels, max_seq_len, "classification")?;
        Classifier::from_bundle(&bundle, options)
    }

    /// The manifest of the loaded model.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The label names, in logit order.
    pub fn labels(&self) -> &[String] {
        &self.manifest.labels
    }

    /// The sequence lengths that inputs are padded to.
    pub fn buckets(&self) -> &[usize] {
        &self.buckets
    }

    /// Tokenizes a text into one input, cut at the maximum length.
    pub fn encode(&self, text: &str) -> Result<Encoded, InputError> {
        self.encoder.encode(text)
    }

    /// Tokenizes a text into the inputs the model runs for it (see [`ClassifierOptions::long`]):
    /// what [`Classifier::classify_read`] takes.
    pub fn read(&self, text: &str) -> Result<Reading, InputError> {
        self.encoder.read(text, self.options.long)
    }

    /// How this classifier reads long texts.
    pub fn long(&self) -> LongText {
        self.options.long
    }

    /// The model's tokenizer.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// Prepares the plans for every length bucket now rather than on first use.
    pub fn prepare_all(&mut self) -> Result<()> {
        for &len in &self.buckets {
            self.engine.prepare(1, len)?;
            if self.options.batch_size > 1 {
                self.engine.prepare(self.options.batch_size, len)?;
            }
        }
        Ok(())
    }

    /// Classifies one text.
    pub fn classify(&mut self, text: &str) -> Result<Prediction> {
        let mut out = self.classify_batch(&[text])?;
        out.pop()
            .unwrap_or(Err(InputError::Empty))
            .map_err(Error::from)
    }

    /// Times every operator of the plan that `text` runs through (see [`Engine::profile`]).
    pub fn profile(&mut self, text: &str, runs: usize) -> Result<Vec<OpTime>> {
        let encoded = self.encoder.encode(text)?;
        let batch = self.padded(&[&encoded], self.bucket_for(encoded.ids.len()));
        self.engine.profile(&batch, runs).map_err(Error::Inference)
    }

    /// Classifies many texts. A text that cannot be classified gets its own error and does not
    /// stop the others; the outer error is a failure of the model itself.
    pub fn classify_batch<S: AsRef<str>>(
        &mut self,
        texts: &[S],
    ) -> Result<Vec<Result<Prediction, InputError>>> {
        let readings: Vec<_> = texts.iter().map(|t| self.read(t.as_ref())).collect();
        self.classify_read(&readings)
    }

    /// Classifies texts already tokenized by [`Classifier::read`] (for a caller that needed
    /// their sizes first), as [`Classifier::classify_batch`].
    pub fn classify_read(
        &mut self,
        readings: &[Result<Reading, InputError>],
    ) -> Result<Vec<Result<Prediction, InputError>>> {
        if let Some(o) = &mut self.observer.0 {
            o.started();
        }
        let results = self.classify_unobserved(readings);
        if let Some(o) = &mut self.observer.0 {
            let last = match &results {
                Ok(r) => r.last().and_then(|p| p.as_ref().ok()),
                Err(_) => None,
            };
            o.finished(last);
        }
        results
    }

    fn classify_unobserved(
        &mut self,
        readings: &[Result<Reading, InputError>],
    ) -> Result<Vec<Result<Prediction, InputError>>> {
        // Every input of every text, by the length it is padded to.
        let mut by_bucket: BTreeMap<usize, Vec<(usize, &Encoded)>> = BTreeMap::new();
        for (ix, r) in readings.iter().enumerate() {
            for window in r.iter().flat_map(|r| &r.windows) {
                by_bucket
                    .entry(self.bucket_for(window.ids.len()))
                    .or_default()
                    .push((ix, window));
            }
        }
        // Each text's logits: its windows' weighted by their share of its tokens (a text of one
        // window gets that window's logits exactly).
        let mut logits = vec![vec![0f32; self.engine.logits()]; readings.len()];
        for (len, inputs) in by_bucket {
            for chunk in inputs.chunks(self.options.batch_size) {
                // Full chunks share one plan; a remainder runs input by input on the batch-1
                // plan rather than preparing a plan for every remainder size.
                let groups: Vec<&[(usize, &Encoded)]> = if chunk.len() == self.options.batch_size {
                    vec![chunk]
                } else {
                    chunk.chunks(1).collect()
                };
                for group in groups {
                    let rows: Vec<&Encoded> = group.iter().map(|&(_, e)| e).collect();
                    for (&(ix, e), row) in group.iter().zip(self.run_padded(&rows, len)?) {
                        let tokens = readings[ix].as_ref().map_or(1, Reading::tokens);
                        let weight = e.ids.len() as f32 / tokens as f32;
                        for (sum, x) in logits[ix].iter_mut().zip(row) {
                            *sum += weight * x;
                        }
                    }
                }
            }
        }
        Ok(readings
            .iter()
            .zip(logits)
            .map(|(r, logits)| match r {
                Err(e) => Err(e.clone()),
                Ok(r) => Ok(self.prediction(logits, r)),
            })
            .collect())
    }

    fn bucket_for(&self, len: usize) -> usize {
        self.buckets
            .iter()
            .copied()
            .find(|&b| b >= len)
            .unwrap_or(self.manifest.max_seq_len as usize)
    }

    fn padded(&self, rows: &[&Encoded], len: usize) -> TokenBatch {
        let (_, pad_id) = self.encoder.pad();
        TokenBatch::padded(rows, len, i64::from(pad_id))
    }

    /// Each row's logits.
    fn run_padded(&mut self, rows: &[&Encoded], len: usize) -> Result<Vec<Vec<f32>>> {
        let batch = self.padded(rows, len);
        let logits = self.engine.run(&batch).map_err(Error::Inference)?;
        Ok(logits
            .chunks(self.engine.logits())
            .map(<[f32]>::to_vec)
            .collect())
    }

    fn prediction(&self, logits: Vec<f32>, reading: &Reading) -> Prediction {
        let probs = softmax(&logits);
        let mut scores: Vec<LabelScore> = self
            .manifest
            .labels
            .iter()
            .zip(probs)
            .map(|(label, probability)| LabelScore {
                label: label.clone(),
                probability,
            })
            .collect();
        scores.sort_by(|a, b| b.probability.total_cmp(&a.probability));
        let answer = match self.options.decision {
            None => 0,
            Some((label, threshold)) => {
                let label = &self.manifest.labels[label];
                let at = |pick: &dyn Fn(&LabelScore) -> bool| scores.iter().position(pick);
                // Every label has a score, so both searches find one (two labels at least).
                match at(&|s| s.label == *label) {
                    Some(i) if scores[i].probability >= threshold => i,
                    _ => at(&|s| s.label != *label).unwrap_or(0),
                }
            }
        };
        Prediction {
            label: scores[answer].label.clone(),
            probability: scores[answer].probability,
            scores,
            tokens: reading.tokens(),
            windows: reading.windows.len(),
            truncated: reading.truncated,
            logits,
        }
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn check_labels(labels: &[String]) -> Result<(), ModelError> {
    if labels.len() < 2 {
        return Err(ModelError::TooFewLabels);
    }
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        if !seen.insert(l) {
            return Err(ModelError::DuplicateLabel(l.clone()));
        }
    }
    Ok(())
}

/// Makes a bundle from a plain ONNX graph, a tokenizer.json and labels, reading what it can
/// (lowercasing, vocabulary, precision) from the inputs themselves. Nothing is validated against
/// the model here: [`Classifier::from_bundle`] does that.
pub fn pack(
    onnx: Vec<u8>,
    tokenizer_json: Vec<u8>,
    labels: Vec<String>,
    max_seq_len: usize,
    task: &str,
) -> Result<Bundle> {
    let encoder = TextEncoder::from_json(&tokenizer_json, max_seq_len.max(2))?;
    let manifest = Manifest {
        task: task.to_string(),
        labels,
        max_seq_len: u32::try_from(max_seq_len).map_err(|_| ModelError::MaxLen(max_seq_len))?,
        tokenizer: TokenizerSettings {
            lowercase: encoder.lowercase(),
            pad_token: encoder.pad().0.to_string(),
            vocab_size: encoder.id_bound() as u32,
        },
        quantization: detect_quantization(&onnx),
        provenance: Provenance {
            created_by: "edgebert pack".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        },
        defaults: Default::default(),
    };
    Ok(Bundle {
        manifest,
        tokenizer_json,
        graph: onnx,
    })
}

/// Reads the precision off the operators a graph uses.
pub fn detect_quantization(onnx: &[u8]) -> Quantization {
    use tract_onnx::prelude::Framework;
    let Ok(proto) = tract_onnx::onnx().proto_model_for_read(&mut &onnx[..]) else {
        return Quantization::F32;
    };
    let ops: Vec<&str> = proto
        .graph
        .iter()
        .flat_map(|g| g.node.iter().map(|n| n.op_type.as_str()))
        .collect();
    if ops.contains(&"DynamicQuantizeLinear") {
        Quantization::DynamicInt8
    } else if ops
        .iter()
        .any(|op| matches!(*op, "QuantizeLinear" | "QLinearMatMul"))
    {
        Quantization::StaticInt8 {
            method: "unknown".into(),
        }
    } else {
        Quantization::F32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 999.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[1] && p[1] > p[2]);
    }

    #[test]
    fn labels_are_checked() {
        assert!(matches!(
            check_labels(&["a".into()]),
            Err(ModelError::TooFewLabels)
        ));
        assert!(matches!(
            check_labels(&["a".into(), "a".into()]),
            Err(ModelError::DuplicateLabel(_))
        ));
    }
}
