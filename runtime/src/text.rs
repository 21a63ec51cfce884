//! Text → token ids, with the bundled HF tokenizer.json.

use tokenizers::{Tokenizer, TruncationParams};

use crate::contain::caught;
use crate::error::{InputError, ModelError};

/// One text as token ids, before padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    /// The text had more tokens than the model's maximum and was cut.
    pub truncated: bool,
}

/// The tokenizer of a model, set to truncate at its maximum length.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad_token: String,
    id_bound: usize,
    lowercase: bool,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("pad", &self.pad_token)
            .field("id_bound", &self.id_bound)
            .finish()
    }
}

impl TextEncoder {
    /// Reads a tokenizer.json; the model's sequences are at most `max_len` tokens.
    pub fn from_json(json: &[u8], max_len: usize) -> Result<TextEncoder, ModelError> {
        let mut tokenizer =
            caught(|| Tokenizer::from_bytes(json)).map_err(ModelError::Tokenizer)?;
        let (pad_id, pad_token) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => ["[PAD]", "<pad>"]
                .iter()
                .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.to_string())))
                .ok_or_else(|| ModelError::MissingSpecialToken("[PAD]".into()))?,
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let id_bound = tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let lowercase = normalizer_lowercases(json);
        Ok(TextEncoder {
            tokenizer,
            pad_id,
            pad_token,
            id_bound,
            lowercase,
        })
    }

    /// One more than the largest token id the tokenizer can emit.
    pub fn id_bound(&self) -> usize {
        self.id_bound
    }

    /// Tokenizes texts and pads them into one batch of `len` tokens per row.
    pub fn batch(
        &self,
        texts: &[&str],
        len: usize,
    ) -> Result<crate::engine::TokenBatch, InputError> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<&Encoded> = rows.iter().collect();
        Ok(crate::engine::TokenBatch::padded(
            &rows,
            len,
            i64::from(self.pad_id),
        ))
    }

    /// The padding token and its id.
    pub fn pad(&self) -> (&str, u32) {
        (&self.pad_token, self.pad_id)
    }

    /// Whether the normaliser lowercases text.
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// Tokenizes one text, special tokens included, cut at the maximum length.
    pub fn encode(&self, text: &str) -> Result<Encoded, InputError> {
        if text.trim().is_empty() {
            return Err(InputError::Empty);
        }
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(|e| InputError::Tokenizer(e.to_string()))?;
        if encoding.get_special_tokens_mask().iter().all(|&s| s == 1) {
            return Err(InputError::NoTokens);
        }
        Ok(Encoded {
            ids: encoding.get_ids().iter().map(|&i| i64::from(i)).collect(),
            type_ids: encoding
                .get_type_ids()
                .iter()
                .map(|&i| i64::from(i))
                .collect(),
            truncated: !encoding.get_overflowing().is_empty(),
        })
    }
}

/// Reads the normaliser's `lowercase` flag (BertNormalizer, or a Lowercase step in a Sequence).
fn normalizer_lowercases(json: &[u8]) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v.get("type").and_then(|t| t.as_str()) {
            Some("BertNormalizer") => v
                .get("lowercase")
                .and_then(|l| l.as_bool())
                .unwrap_or(false),
            Some("Lowercase") => true,
            Some("Sequence") => v
                .get("normalizers")
                .and_then(|n| n.as_array())
                .is_some_and(|a| a.iter().any(walk)),
            _ => false,
        }
    }
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("normalizer").map(walk))
        .unwrap_or(false)
}
