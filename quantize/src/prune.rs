//! Vocabulary pruning: keep the word pieces a corpus uses (plus special tokens and every
//! single-character piece, so any text still tokenizes without `[UNK]`), and cut the embedding
//! rows and the tokenizer.json vocabulary together so token ids stay consistent.
//!
//! Most of a small BERT's bytes are its 30k-row word-embedding table; a task's corpus uses a
//! fraction of it. A text whose pieces were all kept gets exactly the same ids (renumbered) and
//! so exactly the same logits; a word whose pieces were cut is split into smaller kept pieces.
//!
//! Without a corpus, only the pieces the tokenizer can never produce are cut (trimming): BERT's
//! 994 `[unusedN]` and the `##` forms of punctuation and CJK characters, 1,331 of
//! all-MiniLM-L6-v2's 30,522 rows. Every text then gets the same pieces, so the same logits.

use std::collections::{BTreeMap, BTreeSet};

use edgebert_runtime::text::TextEncoder;
use edgebert_runtime::Bundle;
use serde_json::Value;
use tract_onnx::pb::tensor_proto::DataType;

use crate::error::Error;
use crate::onnx;

/// What pruning did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PruneReport {
    /// Lines of the corpus that tokenized (`None`: trimmed without a corpus).
    pub corpus_lines: Option<usize>,
    /// Pieces dropped because the tokenizer can never produce them.
    pub unreachable: usize,
    pub rows_before: usize,
    pub rows_after: usize,
    /// Bytes of the f32 ONNX before and after.
    pub onnx_bytes_before: usize,
    pub onnx_bytes_after: usize,
}

fn unsupported(m: impl Into<String>) -> Error {
    Error::Unsupported(format!("vocabulary pruning: {}", m.into()))
}

/// Prunes an f32 bundle's vocabulary to what `corpus` uses, or, without a corpus, cuts only the
/// pieces its tokenizer can never produce.
pub fn prune_vocab(
    bundle: &Bundle,
    corpus: Option<&[String]>,
) -> Result<(Bundle, PruneReport), Error> {
    let mut tok: Value = serde_json::from_slice(&bundle.tokenizer_json)
        .map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
    if tok["model"]["type"] != "WordPiece" {
        return Err(unsupported(format!(
            "only WordPiece tokenizers are supported (this one is {})",
            tok["model"]["type"]
        )));
    }
    let vocab: BTreeMap<String, u32> = serde_json::from_value(tok["model"]["vocab"].clone())
        .map_err(|e| unsupported(format!("tokenizer vocab: {e}")))?;
    // Special and added tokens and the unknown token stay, whatever they look like.
    let mut special: BTreeSet<u32> = BTreeSet::new();
    if let Some(added) = tok["added_tokens"].as_array() {
        special.extend(
            added
                .iter()
                .filter_map(|t| t["id"].as_u64().map(|i| i as u32)),
        );
    }
    if let Some(unk) = tok["model"]["unk_token"]
        .as_str()
        .and_then(|u| vocab.get(u))
    {
        special.insert(*unk);
    }
    let prefix = tok["model"]["continuing_subword_prefix"]
        .as_str()
        .unwrap_or("##")
        .to_string();
    // Built first: it checks the tokenizer under the runtime's panic guard.
    let encoder = TextEncoder::from_json(&bundle.tokenizer_json, 1 << 20)
        .map_err(edgebert_runtime::Error::from)?;
    let unreachable = unreachable_pieces(&bundle.tokenizer_json, &vocab, &prefix, &special)?;
    let mut keep = special;
    let lines = match corpus {
        None => {
            keep.extend(vocab.values().filter(|id| !unreachable.contains(id)));
            None
        }
        Some(corpus) => {
            // Single characters and their ## forms, so any text still tokenizes without [UNK].
            for (piece, &id) in &vocab {
                if piece.strip_prefix(&prefix).unwrap_or(piece).chars().count() == 1
                    && !unreachable.contains(&id)
                {
                    keep.insert(id);
                }
            }
            // What the corpus uses.
            let mut lines = 0;
            for line in corpus {
                if let Ok(e) = encoder.encode(line) {
                    keep.extend(e.ids.iter().map(|&i| i as u32));
                    lines += 1;
                }
            }
            if lines == 0 {
                return Err(Error::Usage("the pruning corpus has no text".into()));
            }
            Some(lines)
        }
    };
    let new_id: BTreeMap<u32, u32> = keep
        .iter()
        .enumerate()
        .map(|(n, &old)| (old, n as u32))
        .collect();
    let remap = |v: &mut Value| {
        if let Some(old) = v.as_u64() {
            if let Some(n) = new_id.get(&(old as u32)) {
                *v = Value::from(*n);
            }
        }
    };

    // tokenizer.json: vocabulary, added tokens, post-processor and padding ids.
    let pruned_vocab: serde_json::Map<String, Value> = vocab
        .iter()
        .filter_map(|(p, id)| new_id.get(id).map(|n| (p.clone(), Value::from(*n))))
        .collect();
    tok["model"]["vocab"] = Value::Object(pruned_vocab);
    if let Some(added) = tok["added_tokens"].as_array_mut() {
        for t in added {
            remap(&mut t["id"]);
        }
    }
    let post = &mut tok["post_processor"];
    match post["type"].as_str() {
        Some("TemplateProcessing") => {
            if let Some(specials) = post["special_tokens"].as_object_mut() {
                for s in specials.values_mut() {
                    if let Some(ids) = s["ids"].as_array_mut() {
                        ids.iter_mut().for_each(remap);
                    }
                }
            }
        }
        Some("BertProcessing") | Some("RobertaProcessing") => {
            for key in ["sep", "cls"] {
                remap(&mut post[key][1]);
            }
        }
        None => {}
        Some(other) => return Err(unsupported(format!("post-processor {other}"))),
    }
    if tok["padding"].is_object() {
        remap(&mut tok["padding"]["pad_id"]);
    }
    let tokenizer_json = serde_json::to_vec(&tok).expect("JSON serialises");

    // ONNX: the rows of the table gathered by input_ids.
    let mut model = onnx::decode(&bundle.graph).map_err(|e| unsupported(e.to_string()))?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| unsupported("ONNX model has no graph"))?;
    let table = graph
        .node
        .iter()
        .find(|n| n.op_type == "Gather" && n.input.get(1).map(String::as_str) == Some("input_ids"))
        .and_then(|n| n.input.first().cloned())
        .ok_or_else(|| unsupported("no Gather of input_ids (the word embeddings)"))?;
    let init = graph
        .initializer
        .iter_mut()
        .find(|t| t.name == table)
        .ok_or_else(|| unsupported(format!("`{table}` is not a constant")))?;
    if init.data_type != DataType::Float as i32 || init.dims.len() != 2 || init.raw_data.is_empty()
    {
        return Err(unsupported(format!(
            "`{table}` is not an f32 table (prune before quantizing)"
        )));
    }
    let (rows, cols) = (init.dims[0] as usize, init.dims[1] as usize);
    if keep.last().is_some_and(|&m| m as usize >= rows) {
        return Err(unsupported(format!(
            "the tokenizer has ids beyond the {rows} embedding rows"
        )));
    }
    let row_bytes = cols * 4;
    let mut data = Vec::with_capacity(keep.len() * row_bytes);
    for &old in &keep {
        let at = old as usize * row_bytes;
        data.extend_from_slice(&init.raw_data[at..at + row_bytes]);
    }
    init.raw_data = data;
    init.dims[0] = keep.len() as i64;
    let onnx_bytes = onnx::encode(&model);

    let m = &bundle.manifest;
    let mut pruned = edgebert_runtime::pack(
        onnx_bytes,
        tokenizer_json,
        m.labels.clone(),
        m.max_seq_len as usize,
        &m.task,
    )?;
    pruned.manifest.provenance = m.provenance.clone();
    let report = PruneReport {
        corpus_lines: lines,
        unreachable: unreachable.len(),
        rows_before: rows,
        rows_after: keep.len(),
        onnx_bytes_before: bundle.graph.len(),
        onnx_bytes_after: pruned.graph.len(),
    };
    Ok((pruned, report))
}

/// Ids of the pieces this tokenizer can never produce. WordPiece only picks pieces inside the
/// words that the normalizer and pre-tokenizer make, so a piece (for a continuation, `a` followed
/// by it) that normalization changes or pre-tokenization splits is never picked: `[unused0]`
/// (split at the brackets), `##!` and `##中` (punctuation and CJK characters are always words
/// of their own), accented pieces under accent stripping. Special tokens are never counted.
fn unreachable_pieces(
    tokenizer_json: &[u8],
    vocab: &BTreeMap<String, u32>,
    prefix: &str,
    special: &BTreeSet<u32>,
) -> Result<BTreeSet<u32>, Error> {
    use tokenizers::{
        Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer,
    };
    let tk = Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| unsupported(format!("tokenizer.json: {e}")))?;
    let one_word = |s: &str| -> Result<bool, Error> {
        let fail = |e: tokenizers::Error| unsupported(format!("tokenizer: {e}"));
        let mut pre = PreTokenizedString::from(s);
        if let Some(n) = tk.get_normalizer() {
            pre.normalize(|ns| n.normalize(ns)).map_err(fail)?;
        }
        if let Some(p) = tk.get_pre_tokenizer() {
            p.pre_tokenize(&mut pre).map_err(fail)?;
        }
        let words = pre.get_splits(OffsetReferential::Original, OffsetType::Byte);
        Ok(words.len() == 1 && words[0].0 == s)
    };
    let mut out = BTreeSet::new();
    for (piece, &id) in vocab {
        if special.contains(&id) {
            continue;
        }
        let probe = match piece.strip_prefix(prefix) {
            Some(rest) if !rest.is_empty() => format!("a{rest}"),
            _ => piece.clone(),
        };
        if !one_word(&probe)? {
            out.insert(id);
        }
    }
    Ok(out)
}
