//! BERT for sequence classification on candle: the teacher and the student are this one type with
//! different configs.
//!
//! Weights keep Hugging Face's names (`bert.encoder.layer.0.attention.self.query.weight`, …,
//! `classifier.weight`), so a saved model is an HF `BertForSequenceClassification` checkpoint
//! that `edgebert-quantize export` (and PyTorch) read as they are. The forward is the network the
//! exporter writes as ONNX, op for op: the same additive mask value, erf GELU, the pooler over the
//! first token.
//!
//! LayerNorm and softmax are written from primitive ops on purpose: candle's fused
//! `layer_norm`/`softmax_last_dim` have no backward pass and would leave most weights without
//! gradients, silently (see ../../shared/NOTES.md and the gradient test).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use edgebert_quantize::checkpoint::{BertConfig, Checkpoint};
use edgebert_quantize::export::MASK_VALUE;
use edgebert_runtime::fsutil::write_atomic;
use edgebert_runtime::text::TextEncoder;

use crate::error::{DistillError, Result};
use crate::rng::Rng;

/// A batch of token ids on the model's device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `u32 [batch, len]`.
    pub ids: Tensor,
    /// `u32 [batch, len]`.
    pub type_ids: Tensor,
    /// `f32 [batch, len]`: 1 for tokens, 0 for padding.
    pub mask: Tensor,
}

impl Batch {
    /// Pads rows of token ids (and type ids) to the longest row with `pad`.
    pub fn new(rows: &[(&[u32], &[u32])], pad: u32, device: &Device) -> Result<Batch> {
        let len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let b = rows.len();
        let (mut ids, mut types, mut mask) =
            (vec![pad; b * len], vec![0u32; b * len], vec![0f32; b * len]);
        for (r, (row_ids, row_types)) in rows.iter().enumerate() {
            for (j, (&id, &t)) in row_ids.iter().zip(row_types.iter()).enumerate() {
                ids[r * len + j] = id;
                types[r * len + j] = t;
                mask[r * len + j] = 1.0;
            }
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (b, len), device)?,
            type_ids: Tensor::from_vec(types, (b, len), device)?,
            mask: Tensor::from_vec(mask, (b, len), device)?,
        })
    }
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct Output {
    /// `[batch, labels]`.
    pub logits: Tensor,
    /// The embeddings' output, then each layer's: `num_hidden_layers + 1` tensors `[batch, len,
    /// hidden]` (HF's `hidden_states`).
    pub hidden: Vec<Tensor>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(DistillError::Usage(format!(
                "unsupported hidden_act `{other}`"
            ))),
        }
    }
}

/// A BERT classifier whose weights are trainable candle variables.
pub struct Bert {
    pub config: BertConfig,
    pub labels: Vec<String>,
    params: BTreeMap<String, Var>,
    activation: Activation,
    device: Device,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("layers", &self.config.num_hidden_layers)
            .field("hidden", &self.config.hidden_size)
            .field("labels", &self.labels)
            .finish()
    }
}

/// Every tensor of a classifier with this config, by HF name, with its shape.
pub fn expected_shapes(cfg: &BertConfig, labels: usize) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut out = vec![
        (
            "bert.embeddings.word_embeddings.weight".to_string(),
            vec![cfg.vocab_size, h],
        ),
        (
            "bert.embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "bert.embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
        ("bert.embeddings.LayerNorm.weight".into(), vec![h]),
        ("bert.embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("bert.encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            out.push((format!("{p}{name}"), shape));
        }
    }
    out.push(("bert.pooler.dense.weight".into(), vec![h, h]));
    out.push(("bert.pooler.dense.bias".into(), vec![h]));
    out.push(("classifier.weight".into(), vec![labels, h]));
    out.push(("classifier.bias".into(), vec![labels]));
    out
}

/// Where a canonical name may sit in a checkpoint: with or without `bert.`, LayerNorm as
/// weight/bias or gamma/beta.
fn checkpoint_names(name: &str) -> Vec<String> {
    let bare = name.strip_prefix("bert.").unwrap_or(name);
    let mut out = vec![name.to_string()];
    if bare != name {
        out.push(bare.to_string());
    }
    if name.contains("LayerNorm.") {
        let old = |n: &str| {
            n.replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta")
        };
        let more: Vec<String> = out.iter().map(|n| old(n)).collect();
        out.extend(more);
    }
    out
}

impl Bert {
    /// Opens a fine-tuned classifier checkpoint directory (with `classifier.weight`).
    pub fn open(dir: &Path, device: &Device) -> Result<(Bert, Vec<u8>)> {
        let ckpt = Checkpoint::open(dir)?;
        let labels = ckpt.config.labels().ok_or_else(|| {
            DistillError::Usage(format!(
                "{}: config.json has no id2label; is this a fine-tuned classifier?",
                dir.display()
            ))
        })?;
        if !ckpt.has_classifier() {
            return Err(edgebert_quantize::Error::NoClassifier.into());
        }
        let bert = Bert::from_checkpoint(&ckpt, &labels, 0, device)?;
        Ok((bert, ckpt.tokenizer_json))
    }

    /// Builds a classifier from a checkpoint. The pooler and the classifier head are taken from
    /// the checkpoint when present with the right shape, else initialised (normal, σ = 0.02, zero
    /// bias) from `seed`; every other tensor must be there.
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        labels: &[String],
        seed: u64,
        device: &Device,
    ) -> Result<Bert> {
        if labels.len() < 2 {
            return Err(DistillError::Usage(format!(
                "a classifier needs at least 2 labels, got {labels:?}"
            )));
        }
        let mut config = ckpt.config.clone();
        let activation = Activation::parse(&config.hidden_act)?;
        if config.position_embedding_type != "absolute" {
            return Err(DistillError::Usage(format!(
                "position_embedding_type `{}` is not supported (absolute only)",
                config.position_embedding_type
            )));
        }
        let encoder = TextEncoder::from_json(&ckpt.tokenizer_json, config.max_position_embeddings)
            .map_err(edgebert_runtime::Error::from)?;
        if encoder.id_bound() > config.vocab_size {
            return Err(DistillError::TokenizerMismatch {
                id_bound_minus_one: encoder.id_bound() - 1,
                rows: config.vocab_size,
            });
        }
        let mut rng = Rng::derived(seed, "init", 0);
        let mut params = BTreeMap::new();
        for (name, shape) in expected_shapes(&config, labels.len()) {
            let found = checkpoint_names(&name)
                .into_iter()
                .find_map(|n| ckpt.weights.get(&n));
            let fresh = name.starts_with("classifier.") || name.starts_with("bert.pooler.");
            let data = match found {
                Some(w) if w.shape == shape => w.data.clone(),
                Some(w) if !fresh => {
                    return Err(DistillError::BadShape {
                        name,
                        expected: shape,
                        found: w.shape.clone(),
                    })
                }
                None if !fresh => {
                    return Err(DistillError::MissingTensor {
                        name,
                        expected: shape,
                    })
                }
                // A head for other labels (or none yet): start it afresh.
                _ => {
                    let n: usize = shape.iter().product();
                    if name.ends_with(".weight") {
                        (0..n).map(|_| rng.normal() * 0.02).collect()
                    } else {
                        vec![0.0; n]
                    }
                }
            };
            let t = Tensor::from_vec(data, shape.as_slice(), device)?;
            params.insert(name, Var::from_tensor(&t)?);
        }
        config.id2label = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone()))
            .collect();
        config.label2id = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        config.architectures = vec!["BertForSequenceClassification".into()];
        Ok(Bert {
            config,
            labels: labels.to_vec(),
            params,
            activation,
            device: device.clone(),
        })
    }

    /// The student: embeddings, the teacher's layers `layers` (renumbered 0..), pooler and
    /// classifier, copied.
    pub fn student(&self, layers: &[usize]) -> Result<Bert> {
        check_layer_map(layers, self.config.num_hidden_layers)?;
        let mut params = BTreeMap::new();
        for (name, var) in &self.params {
            let copy = || -> Result<Var> { Ok(Var::from_tensor(&var.as_tensor().copy()?)?) };
            match name.strip_prefix("bert.encoder.layer.") {
                Some(rest) => {
                    let (n, tail) = rest.split_once('.').expect("layer names have a tail");
                    let n: usize = n.parse().expect("layer numbers are numbers");
                    if let Some(j) = layers.iter().position(|&l| l == n) {
                        params.insert(format!("bert.encoder.layer.{j}.{tail}"), copy()?);
                    }
                }
                None => {
                    params.insert(name.clone(), copy()?);
                }
            }
        }
        let mut config = self.config.clone();
        config.num_hidden_layers = layers.len();
        config.edgebert_teacher_layers = Some(layers.to_vec());
        Ok(Bert {
            config,
            labels: self.labels.clone(),
            params,
            activation: self.activation,
            device: self.device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable variables, by name (sorted).
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// A weight by its HF name.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| DistillError::MissingTensor {
                name: name.into(),
                expected: vec![],
            })
    }

    /// Number of scalar parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// The forward pass. With `dropout` (training), dropout masks are drawn from it.
    pub fn forward(&self, batch: &Batch, mut dropout: Option<&mut Rng>) -> Result<Output> {
        let cfg = &self.config;
        let (b, l) = batch.ids.dims2()?;
        let h = cfg.hidden_size;
        if l > cfg.max_position_embeddings {
            return Err(DistillError::Usage(format!(
                "sequence of {l} tokens exceeds the model's {} positions",
                cfg.max_position_embeddings
            )));
        }
        let p_hidden = cfg.hidden_dropout_prob as f32;
        let p_attn = cfg.attention_probs_dropout_prob as f32;
        let words = self.tensor("bert.embeddings.word_embeddings.weight")?;
        let x = words
            .embedding(&batch.ids.flatten_all()?)?
            .reshape((b, l, h))?;
        let pos = self
            .tensor("bert.embeddings.position_embeddings.weight")?
            .narrow(0, 0, l)?;
        let types = self
            .tensor("bert.embeddings.token_type_embeddings.weight")?
            .embedding(&batch.type_ids.flatten_all()?)?
            .reshape((b, l, h))?;
        let x = (x.broadcast_add(&pos)? + types)?;
        let x = self.layer_norm(&x, "bert.embeddings.LayerNorm")?;
        let mut x = drop(x, p_hidden, dropout.as_deref_mut())?;
        let mut hidden = vec![x.clone()];
        // Additive mask [batch, 1, 1, len]: 0 for tokens, MASK_VALUE for padding.
        let mask = ((1.0 - &batch.mask)? * f64::from(MASK_VALUE))?.reshape((b, 1, 1, l))?;
        for layer in 0..cfg.num_hidden_layers {
            x = self.layer(&x, &mask, layer, p_attn, p_hidden, dropout.as_deref_mut())?;
            hidden.push(x.clone());
        }
        let first = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.linear(&first, "bert.pooler.dense")?.tanh()?;
        let pooled = drop(pooled, p_hidden, dropout)?;
        let logits = self.linear(&pooled, "classifier")?;
        Ok(Output { logits, hidden })
    }

    fn layer(
        &self,
        x: &Tensor,
        mask: &Tensor,
        layer: usize,
        p_attn: f32,
        p_hidden: f32,
        mut dropout: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, l, h) = x.dims3()?;
        let (heads, size) = (cfg.num_attention_heads, cfg.head_size());
        let p = format!("bert.encoder.layer.{layer}.");
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, heads, size))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(self.linear(x, &format!("{p}attention.self.query"))?)?;
        let k = split(self.linear(x, &format!("{p}attention.self.key"))?)?;
        let v = split(self.linear(x, &format!("{p}attention.self.value"))?)?;
        let scores = (q.matmul(&k.t()?)? / (size as f64).sqrt())?.broadcast_add(mask)?;
        let probs = softmax(&scores)?;
        let probs = drop(probs, p_attn, dropout.as_deref_mut())?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, l, h))?;
        let attn = self.linear(&ctx, &format!("{p}attention.output.dense"))?;
        let attn = drop(attn, p_hidden, dropout.as_deref_mut())?;
        let attn = self.layer_norm(&(attn + x)?, &format!("{p}attention.output.LayerNorm"))?;
        let inter = self.linear(&attn, &format!("{p}intermediate.dense"))?;
        let inter = match self.activation {
            Activation::GeluErf => inter.gelu_erf()?,
            Activation::GeluTanh => inter.gelu()?,
            Activation::Relu => inter.relu()?,
        };
        let out = self.linear(&inter, &format!("{p}output.dense"))?;
        let out = drop(out, p_hidden, dropout)?;
        self.layer_norm(&(out + attn)?, &format!("{p}output.LayerNorm"))
    }

    /// `x · Wᵀ + b` over the last axis.
    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let w = self.tensor(&format!("{name}.weight"))?;
        let bias = self.tensor(&format!("{name}.bias"))?;
        let dims = x.dims().to_vec();
        let inner = *dims.last().expect("linear input has an axis");
        let rows = x.elem_count() / inner;
        let y = x
            .reshape((rows, inner))?
            .matmul(&w.t()?)?
            .broadcast_add(bias)?;
        let mut out = dims;
        *out.last_mut().expect("non-empty") = w.dim(0)?;
        Ok(y.reshape(out)?)
    }

    /// LayerNorm over the last axis from primitive ops (differentiable).
    fn layer_norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let gamma = self.tensor(&format!("{name}.weight"))?;
        let beta = self.tensor(&format!("{name}.bias"))?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.config.layer_norm_eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(gamma)?.broadcast_add(beta)?)
    }

    /// The weights as safetensors bytes (f32, HF names).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let v: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            data.push((name.clone(), var.dims().to_vec(), bytes));
        }
        safetensors_bytes(&data)
    }

    /// Replaces every weight from safetensors bytes written by [`Bert::to_safetensors`].
    pub fn load_safetensors(&self, bytes: &[u8]) -> Result<()> {
        let weights = edgebert_quantize::checkpoint::read_safetensors(bytes)
            .map_err(|m| DistillError::Usage(format!("invalid safetensors: {m}")))?;
        for (name, var) in &self.params {
            let w = weights
                .get(name)
                .ok_or_else(|| DistillError::MissingTensor {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                })?;
            if w.shape != var.dims() {
                return Err(DistillError::BadShape {
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: w.shape.clone(),
                });
            }
            var.set(&Tensor::from_slice(&w.data, var.shape(), &self.device)?)?;
        }
        Ok(())
    }

    /// Writes an HF checkpoint directory: config.json (with id2label/label2id),
    /// model.safetensors and tokenizer.json, each atomically.
    pub fn save(&self, dir: &Path, tokenizer_json: &[u8]) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DistillError::io(dir, e))?;
        let config = serde_json::to_vec_pretty(&self.config).expect("config serialises");
        write_atomic(&dir.join("model.safetensors"), &self.to_safetensors()?, &[])?;
        write_atomic(&dir.join("tokenizer.json"), tokenizer_json, &[])?;
        // config.json last: a directory with a config is a complete checkpoint.
        write_atomic(&dir.join("config.json"), &config, &[])?;
        Ok(())
    }
}

/// Checks a layer map against a teacher's depth.
pub fn check_layer_map(layers: &[usize], teacher_layers: usize) -> Result<()> {
    if layers.is_empty() || layers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DistillError::BadLayerMap(layers.to_vec()));
    }
    if let Some(&layer) = layers.iter().find(|&&l| l >= teacher_layers) {
        return Err(DistillError::NoSuchLayer {
            layer,
            layers: teacher_layers,
        });
    }
    Ok(())
}

/// DistilBERT's default: every other layer, starting at the first (`[0, 2, 4]` of 6).
pub fn every_other_layer(teacher_layers: usize) -> Vec<usize> {
    (0..teacher_layers).step_by(2).collect()
}

/// Softmax over the last axis from primitive ops (differentiable, unlike the fused one).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// Inverted dropout with a mask drawn from `rng`; identity without one.
fn drop(x: Tensor, p: f32, rng: Option<&mut Rng>) -> Result<Tensor> {
    let Some(rng) = rng else { return Ok(x) };
    if p <= 0.0 {
        return Ok(x);
    }
    let scale = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.uniform() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok((x * mask)?)
}

/// Serialises f32 tensors `(name, shape, little-endian bytes)` as safetensors.
pub(crate) fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| DistillError::Usage(format!("safetensors: {e}")))?;
    safetensors::serialize(views, None)
        .map_err(|e| DistillError::Usage(format!("safetensors: {e}")))
}

/// Whether a tensor holds only finite values.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(v.iter().all(|x| x.is_finite()))
}
