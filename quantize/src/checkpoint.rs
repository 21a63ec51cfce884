//! A Hugging Face BERT checkpoint directory: `config.json`, `model.safetensors`, `tokenizer.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// BERT's `config.json`, with HF's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    #[serde(default)]
    pub label2id: BTreeMap<String, usize>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    /// For a distilled student: the teacher layers its layers were copied from (edgebert's own
    /// key; other tools ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edgebert_teacher_layers: Option<Vec<usize>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}
fn default_model_type() -> String {
    "bert".into()
}

impl BertConfig {
    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Label names in id order, from `id2label`; `None` when the config has none.
    pub fn labels(&self) -> Option<Vec<String>> {
        if self.id2label.is_empty() {
            return None;
        }
        let mut pairs: Vec<(usize, &String)> = self
            .id2label
            .iter()
            .filter_map(|(k, v)| k.parse().ok().map(|k| (k, v)))
            .collect();
        pairs.sort();
        Some(pairs.into_iter().map(|(_, v)| v.clone()).collect())
    }
}

/// A tensor read from safetensors, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint directory, read into memory.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub weights: HashMap<String, Weight>,
    /// The tokenizer.json, as bytes.
    pub tokenizer_json: Vec<u8>,
}

impl Checkpoint {
    /// Reads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint, Error> {
        let dir = dir.as_ref().to_path_buf();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| Error::io(path, e))
        };
        let config_path = dir.join("config.json");
        let config: BertConfig =
            serde_json::from_slice(&read("config.json")?).map_err(|e| Error::Config {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        if config.hidden_size == 0
            || config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Config {
                path: config_path,
                message: format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            });
        }
        let weights_path = dir.join("model.safetensors");
        let weights = read_safetensors(&read("model.safetensors")?).map_err(|message| {
            Error::Safetensors {
                path: weights_path,
                message,
            }
        })?;
        let tokenizer_json = read("tokenizer.json")?;
        Ok(Checkpoint {
            dir,
            config,
            weights,
            tokenizer_json,
        })
    }

    /// A weight by name, checked against the expected shape.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<&Weight, Error> {
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| Error::MissingWeight(name.into()))?;
        if w.shape != shape {
            return Err(Error::BadShape {
                name: name.into(),
                expected: shape.to_vec(),
                found: w.shape.clone(),
            });
        }
        Ok(w)
    }

    /// The weight-name prefix of the encoder: `bert.` for `BertForSequenceClassification`,
    /// empty for a bare `BertModel`.
    pub fn prefix(&self) -> &'static str {
        if self
            .weights
            .contains_key("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        }
    }

    /// Whether the checkpoint has a classification head.
    pub fn has_classifier(&self) -> bool {
        self.weights.contains_key("classifier.weight")
    }
}

/// Reads every tensor of a safetensors file as f32.
pub fn read_safetensors(bytes: &[u8]) -> Result<HashMap<String, Weight>, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            // Integer buffers (e.g. `position_ids`) are not weights; skip them.
            Dtype::I64 | Dtype::I32 | Dtype::U8 | Dtype::BOOL => continue,
            other => return Err(format!("tensor `{name}` has unsupported dtype {other:?}")),
        };
        out.insert(
            name,
            Weight {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}
