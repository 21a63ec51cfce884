//! Fixtures for edgebert's cross-crate tests and benches: tiny BERT checkpoints with random
//! weights and a real HF tokenizer.json, built here (no network), and an independent reference
//! forward pass in plain ndarray to check the exported graph against.

pub mod int8;
pub mod reference;

/// Texts in the tiny vocabulary, one long enough to need a 32-token plan: the texts that compare
/// one way of running a model with another.
pub const REVIEW_TEXTS: &[&str] = &[
    "the movie was good",
    "awful plot , boring acting",
    "i love this film and the story is great fun",
    "not bad",
    "it was very very boring and i hate it, it was very very boring and i hate it, so boring",
];

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

/// The shape and seed of a tiny BERT checkpoint.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub labels: Vec<String>,
    pub seed: u64,
    /// Write a bare `BertModel` (no `bert.` prefix, no classifier), like sentence-transformers.
    pub bare: bool,
    /// `hidden_act` in config.json.
    pub activation: String,
    /// Rows of the word-embedding table; defaults to the tokenizer's vocabulary size.
    pub vocab_rows: Option<usize>,
    /// Pieces appended to the tiny vocabulary (after [`WORDS`]).
    pub extra_vocab: Vec<String>,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            layers: 2,
            hidden: 32,
            heads: 4,
            intermediate: 64,
            max_positions: 128,
            labels: vec!["negative".into(), "positive".into()],
            seed: 7,
            bare: false,
            activation: "gelu".into(),
            vocab_rows: None,
            extra_vocab: Vec::new(),
        }
    }
}

/// Words of the tiny vocabulary (besides special tokens, letters and `##` letters).
const WORDS: &[&str] = &[
    "the", "a", "and", "not", "was", "is", "it", "this", "movie", "film", "plot", "acting",
    "story", "good", "bad", "great", "awful", "boring", "fun", "love", "hate", "very", "##s",
    "##ing", "##ed", ".", ",", "!", "?", "'",
];

/// The tiny vocabulary: `[PAD] [UNK] [CLS] [SEP] [MASK]`, a–z, ##a–##z, 0–9, then [`WORDS`].
pub fn vocab() -> Vec<String> {
    vocab_with(&[])
}

/// [`vocab`] followed by `extra`.
pub fn vocab_with(extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(('a'..='z').map(|c| c.to_string()));
    v.extend(('a'..='z').map(|c| format!("##{c}")));
    v.extend(('0'..='9').map(|c| c.to_string()));
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v.extend(extra.iter().cloned());
    v
}

/// A HF tokenizer.json for [`vocab`]: uncased BERT WordPiece, as HF writes it.
pub fn tokenizer_json() -> String {
    tokenizer_json_with(&[])
}

/// [`tokenizer_json`] for [`vocab_with`]`(extra)`.
pub fn tokenizer_json_with(extra: &[String]) -> String {
    let vocab = vocab_with(extra);
    let ids: BTreeMap<&str, usize> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let added: Vec<_> = vocab[..5]
        .iter()
        .enumerate()
        .map(|(id, t)| {
            json!({"id": id, "content": t, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]"),
                {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": ids}
    })
    .to_string()
}

/// Deterministic xorshift random numbers, so the same seed gives the same checkpoint everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.uniform()).collect()
    }
}

/// Writes config.json, model.safetensors and tokenizer.json for `spec` into `dir`.
pub fn write_checkpoint(dir: &Path, spec: &TinySpec) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let vocab_rows = spec
        .vocab_rows
        .unwrap_or(vocab_with(&spec.extra_vocab).len());
    let (h, i) = (spec.hidden, spec.intermediate);
    let mut rng = Rng::new(spec.seed);
    let p = if spec.bare { "" } else { "bert." };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n = shape.iter().product();
        tensors.push((name, shape, rng.vec(n, scale, offset)));
    };
    add(
        format!("{p}embeddings.word_embeddings.weight"),
        vec![vocab_rows, h],
        0.5,
        0.0,
    );
    add(
        format!("{p}embeddings.position_embeddings.weight"),
        vec![spec.max_positions, h],
        0.5,
        0.0,
    );
    add(
        format!("{p}embeddings.token_type_embeddings.weight"),
        vec![2, h],
        0.5,
        0.0,
    );
    add(format!("{p}embeddings.LayerNorm.weight"), vec![h], 0.2, 1.0);
    add(format!("{p}embeddings.LayerNorm.bias"), vec![h], 0.1, 0.0);
    for l in 0..spec.layers {
        let w = format!("{p}encoder.layer.{l}");
        let lin = |name: &str, o: usize, inp: usize| {
            vec![
                (format!("{w}.{name}.weight"), vec![o, inp]),
                (format!("{w}.{name}.bias"), vec![o]),
            ]
        };
        for (name, shape) in [
            lin("attention.self.query", h, h),
            lin("attention.self.key", h, h),
            lin("attention.self.value", h, h),
            lin("attention.output.dense", h, h),
            lin("intermediate.dense", i, h),
            lin("output.dense", h, i),
        ]
        .concat()
        {
            let fan_in = *shape.last().unwrap_or(&1) as f32;
            add(name, shape, 1.5 / fan_in.sqrt(), 0.0);
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{w}.{ln}.weight"), vec![h], 0.2, 1.0);
            add(format!("{w}.{ln}.bias"), vec![h], 0.1, 0.0);
        }
    }
    add(
        format!("{p}pooler.dense.weight"),
        vec![h, h],
        1.5 / (h as f32).sqrt(),
        0.0,
    );
    add(format!("{p}pooler.dense.bias"), vec![h], 0.1, 0.0);
    if !spec.bare {
        add(
            "classifier.weight".into(),
            vec![spec.labels.len(), h],
            1.0,
            0.0,
        );
        add("classifier.bias".into(), vec![spec.labels.len()], 0.1, 0.0);
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))?;

    let id2label: BTreeMap<String, String> = spec
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone()))
        .collect();
    let label2id: BTreeMap<String, usize> = spec
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i))
        .collect();
    let mut config = json!({
        "architectures": [if spec.bare { "BertModel" } else { "BertForSequenceClassification" }],
        "model_type": "bert",
        "vocab_size": vocab_rows,
        "hidden_size": h,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "intermediate_size": i,
        "hidden_act": spec.activation,
        "max_position_embeddings": spec.max_positions,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    });
    if !spec.bare {
        config["id2label"] = json!(id2label);
        config["label2id"] = json!(label2id);
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(
        dir.join("tokenizer.json"),
        tokenizer_json_with(&spec.extra_vocab),
    )?;
    Ok(())
}

/// Writes a tiny checkpoint into `dir` and exports it: returns (`model.onnx`, `model.ebm`).
pub fn build_model(dir: &Path, spec: &TinySpec, max_len: usize) -> Result<(PathBuf, PathBuf)> {
    let ckpt = dir.join("checkpoint");
    write_checkpoint(&ckpt, spec)?;
    let onnx = dir.join("model.onnx");
    let ebm = dir.join("model.ebm");
    edgebert_quantize::export_to_file(&ckpt, &onnx, max_len).context("export to ONNX")?;
    edgebert_quantize::export_to_file(&ckpt, &ebm, max_len).context("export to bundle")?;
    Ok((onnx, ebm))
}

/// Path of a workspace binary (`edgebert`, `edgebert-quantize`), built by `cargo test --workspace`
/// next to the test executables.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A tiny model in a temporary directory: checkpoint, ONNX export and bundle.
pub struct TinyModel {
    pub dir: tempfile::TempDir,
    pub checkpoint: PathBuf,
    pub onnx: PathBuf,
    pub bundle: PathBuf,
}

impl TinyModel {
    /// Builds the default tiny model with a maximum length of 64.
    pub fn new() -> TinyModel {
        TinyModel::with(&TinySpec::default(), 64)
    }

    /// Builds a tiny model from `spec`.
    pub fn with(spec: &TinySpec, max_len: usize) -> TinyModel {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (onnx, bundle) = build_model(dir.path(), spec, max_len).expect("tiny model");
        TinyModel {
            checkpoint: dir.path().join("checkpoint"),
            onnx,
            bundle,
            dir,
        }
    }

    /// The tokenizer.json of the checkpoint.
    pub fn tokenizer(&self) -> PathBuf {
        self.checkpoint.join("tokenizer.json")
    }

    /// A path inside the model's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a copy of the ONNX model changed by `edit`, returning its path.
    pub fn edited_onnx(
        &self,
        name: &str,
        edit: impl FnOnce(&mut edgebert_quantize::onnx::pb::ModelProto),
    ) -> PathBuf {
        let bytes = std::fs::read(&self.onnx).expect("onnx");
        let mut model = edgebert_quantize::onnx::decode(&bytes).expect("decode onnx");
        edit(&mut model);
        let path = self.path(name);
        std::fs::write(&path, edgebert_quantize::onnx::encode(&model)).expect("write onnx");
        path
    }
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel::new()
    }
}

/// Runs the `edgebert` binary with `envs` set; checks it exits 0 and returns its stdout.
pub fn edgebert_ok(envs: &[(&str, &str)], args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(workspace_bin("edgebert"))
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .expect("run edgebert");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The operators of each plan `edgebert --threads 1 bench [BUNDLE] --profile` runs (one run per
/// length of `lengths`, e.g. `"16,64"`), with `envs` set; the built-in model without a bundle.
pub fn profiled_operators(
    envs: &[(&str, &str)],
    bundle: Option<&Path>,
    lengths: &str,
) -> Vec<Vec<String>> {
    let mut args = vec!["--threads", "1", "bench"];
    if let Some(bundle) = bundle {
        args.push(bundle.to_str().expect("UTF-8 path"));
    }
    args.extend([
        "--profile",
        "--json",
        "--iterations",
        "1",
        "--lengths",
        lengths,
    ]);
    let profile: serde_json::Value =
        serde_json::from_slice(&edgebert_ok(envs, &args)).expect("profile JSON");
    profile["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|l| {
            l["ops"]
                .as_array()
                .expect("ops")
                .iter()
                .map(|o| o["op"].as_str().expect("op name").to_string())
                .collect()
        })
        .collect()
}

/// `model`'s ONNX quantized as the shipped model is (dynamic int8; `texts` at 32 tokens for the
/// ranges), packed with its tokenizer and labels.
pub fn int8_bundle(model: &TinyModel, texts: &[&str]) -> edgebert_runtime::Bundle {
    use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};
    let f32_bundle = Bundle::read(&model.bundle).expect("f32 bundle");
    let f32_model =
        Classifier::from_bundle(&f32_bundle, ClassifierOptions::default()).expect("classifier");
    let batch = f32_model.encoder().batch(texts, 32).expect("batch");
    let proto = edgebert_quantize::onnx::decode(&std::fs::read(&model.onnx).expect("onnx"))
        .expect("decode");
    edgebert_runtime::pack(
        edgebert_quantize::onnx::encode(
            &int8::quantize(&proto, int8::Form::Dynamic, &batch).expect("quantize"),
        ),
        f32_bundle.tokenizer_json.clone(),
        f32_bundle.manifest.labels.clone(),
        64,
        "int8",
    )
    .expect("pack")
}

/// Says, in the test output, that a test skipped what this CPU does not run (written to the
/// process's stderr directly, past the test harness's capture: a pass without the kernel must be
/// visibly not a pass of the kernel).
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}
