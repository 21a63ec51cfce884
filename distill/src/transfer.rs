//! The teacher's logits on a transfer set (unlabelled text, one per line), the part of
//! Hinton-style distillation that scales out: `teacher-logits --shard K/N` computes the lines
//! `K, K+N, K+2N, …` on one machine, and [`merge`] checks that N shards of the same teacher and
//! texts cover every line exactly once and joins them (docs/transfer-logits.md has the recipe
//! for a batch scheduler).
//!
//! A logits file is JSON lines: a [`Header`], then one [`Row`] per line of the texts, in line
//! order (`logits: null` for a blank line or one with no tokens). JSON keeps the f32 values exact
//! (shortest round-trip form) and the file readable; 2 labels cost ~40 bytes a line.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::data::Tokens;
use crate::error::{DistillError, Result};
use crate::model::Bert;
use crate::train::progress_bar;
use crate::train::Transfer;
use edgebert_runtime::fsutil::write_atomic;

/// What the first line of a logits file says.
pub const FORMAT: &str = "edgebert-teacher-logits 1";

/// One of `count` shards: the lines `index, index + count, …` (0-based) of the texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole file in one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether 0-based line `ix` is this shard's.
    pub fn holds(self, ix: usize) -> bool {
        ix % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a shard K/N with 0 ≤ K < N (e.g. 0/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a logits file was computed from; shards of one pass differ only in `shard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// CRC-32 of the teacher's config.json, model.safetensors and tokenizer.json.
    pub teacher: String,
    /// CRC-32 of the texts file.
    pub texts: String,
    /// Lines of the texts file.
    pub lines: usize,
    /// The teacher's labels, in logit order.
    pub labels: Vec<String>,
    /// Texts were cut at this many tokens.
    pub max_len: usize,
    /// Shards of the pass.
    pub shards: usize,
    /// This file's shard; `None` once merged.
    pub shard: Option<usize>,
}

/// One line's logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// 0-based line of the texts file.
    pub line: usize,
    /// `None`: the line is blank or has no tokens.
    pub logits: Option<Vec<f32>>,
}

/// A logits file read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub header: Header,
    pub rows: Vec<Row>,
}

/// The lines of a texts file (without their `\n` or `\r\n`); invalid UTF-8 is an error naming
/// the line.
pub fn read_texts(path: &Path) -> Result<(Vec<String>, u32)> {
    let bytes = std::fs::read(path).map_err(|e| DistillError::io(path, e))?;
    let crc = crc32fast::hash(&bytes);
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return Err(bad(path, "no texts in the file".into()));
    }
    let lines = body
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            String::from_utf8(l.to_vec()).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((lines, crc))
}

fn bad(path: &Path, message: String) -> DistillError {
    DistillError::BadData {
        path: path.to_path_buf(),
        message,
    }
}

/// CRC-32 of the files that make a teacher what it is.
fn teacher_crc(dir: &Path) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        let p = dir.join(name);
        h.update(&std::fs::read(&p).map_err(|e| DistillError::io(&p, e))?);
    }
    Ok(h.finalize())
}

/// `teacher-logits`: the teacher's logits on `shard`'s lines of `texts`, written to `out`.
pub fn teacher_logits(
    teacher_dir: &Path,
    texts: &Path,
    shard: Shard,
    max_len: usize,
    batch_size: usize,
    device: &Device,
    out: &Path,
) -> Result<Header> {
    let (lines, texts_crc) = read_texts(texts)?;
    let (teacher, tokenizer_json) = Bert::open(teacher_dir, device)?;
    let encoder = edgebert_runtime::text::TextEncoder::from_json(&tokenizer_json, max_len)
        .map_err(edgebert_runtime::Error::from)?;
    let mine: Vec<usize> = (0..lines.len()).filter(|&i| shard.holds(i)).collect();
    // Blank lines and lines without tokens get no logits (the same in every shard and run).
    let mut tokens = Vec::new();
    let mut encoded = Vec::new();
    for &i in &mine {
        if let Ok(e) = encoder.encode(&lines[i]) {
            encoded.push(i);
            tokens.push(Tokens::from(&e));
        }
    }
    let bar = progress_bar(tokens.len() as u64, &format!("teacher logits {shard}"));
    let logits = crate::eval::logits(&teacher, &tokens, batch_size.max(1), &bar)?;
    bar.finish_and_clear();
    let mut by_line = encoded.into_iter().zip(logits).peekable();
    let rows: Vec<Row> = mine
        .into_iter()
        .map(|line| Row {
            line,
            logits: by_line.next_if(|(l, _)| *l == line).map(|(_, x)| x),
        })
        .collect();
    let header = Header {
        format: FORMAT.into(),
        teacher: format!("{:08x}", teacher_crc(teacher_dir)?),
        texts: format!("{texts_crc:08x}"),
        lines: lines.len(),
        labels: teacher.labels.clone(),
        max_len,
        shards: shard.count,
        shard: Some(shard.index),
    };
    let inputs = [
        texts,
        &teacher_dir.join("model.safetensors"),
        &teacher_dir.join("config.json"),
        &teacher_dir.join("tokenizer.json"),
    ];
    let logits = Logits { header, rows };
    write(out, &logits, &inputs)?;
    Ok(logits.header)
}

/// Reads a logits file, checking that its rows are its shard's lines, in order, each once.
pub fn read(path: &Path) -> Result<Logits> {
    let f = std::fs::File::open(path).map_err(|e| DistillError::io(path, e))?;
    let mut lines = BufReader::new(f).lines();
    let mut next = |n: usize| -> Result<Option<String>> {
        lines
            .next()
            .transpose()
            .map_err(|e| bad(path, format!("line {n}: {e}")))
    };
    let first = next(1)?.ok_or_else(|| bad(path, "empty file".into()))?;
    let header: Header = serde_json::from_str(&first)
        .map_err(|e| bad(path, format!("not a teacher-logits file: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(
            path,
            format!("format `{}`, this edgebert reads `{FORMAT}`", header.format),
        ));
    }
    let shard = match header.shard {
        Some(index) if index < header.shards => Shard {
            index,
            count: header.shards,
        },
        None if header.shards > 0 => Shard::ALL,
        _ => return Err(bad(path, "the header's shard is out of range".into())),
    };
    let mut rows = Vec::new();
    let mut expected = (0..header.lines).filter(|&i| shard.holds(i));
    while let Some(line) = next(rows.len() + 2)? {
        let n = rows.len() + 2;
        let row: Row =
            serde_json::from_str(&line).map_err(|e| bad(path, format!("line {n}: {e}")))?;
        if expected.next() != Some(row.line) {
            return Err(bad(
                path,
                format!(
                    "line {n}: text line {} is not the next of shard {shard}",
                    row.line
                ),
            ));
        }
        if row
            .logits
            .as_ref()
            .is_some_and(|l| l.len() != header.labels.len() || l.iter().any(|x| !x.is_finite()))
        {
            return Err(bad(
                path,
                format!("line {n}: not {} finite logits", header.labels.len()),
            ));
        }
        rows.push(row);
    }
    if let Some(missing) = expected.next() {
        return Err(bad(
            path,
            format!("truncated: text line {missing} of shard {shard} is missing"),
        ));
    }
    Ok(Logits { header, rows })
}

fn write(out: &Path, logits: &Logits, inputs: &[&Path]) -> Result<()> {
    let mut bytes = serde_json::to_vec(&logits.header).expect("a header serialises");
    bytes.push(b'\n');
    for row in &logits.rows {
        serde_json::to_writer(&mut bytes, row).expect("a row serialises");
        bytes.push(b'\n');
    }
    write_atomic(out, &bytes, inputs).map_err(DistillError::from)
}

/// `merge-logits`: the shards of one pass joined into one file, after checking they are all
/// there, once each, of the same teacher, texts and settings.
pub fn merge(shards: &[PathBuf], out: &Path) -> Result<Header> {
    let first = shards
        .first()
        .ok_or_else(|| DistillError::Usage("no shards to merge".into()))?;
    let parts = shards.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
    let base = Header {
        shard: None,
        ..parts[0].header.clone()
    };
    let mut seen = vec![None; base.shards];
    for (path, part) in shards.iter().zip(&parts) {
        let h = &part.header;
        if (Header {
            shard: None,
            ..h.clone()
        }) != base
        {
            return Err(bad(
                path,
                format!(
                    "not of the same pass as {}: teacher {} / {}, texts {} / {}, shards {} / {}, max length {} / {}",
                    first.display(), h.teacher, base.teacher, h.texts, base.texts, h.shards,
                    base.shards, h.max_len, base.max_len
                ),
            ));
        }
        let Some(k) = h.shard else {
            return Err(bad(path, "already merged".into()));
        };
        if let Some(other) = seen[k].replace(path) {
            return Err(bad(
                path,
                format!("shard {k}/{} is also in {}", base.shards, other.display()),
            ));
        }
    }
    if let Some(k) = seen.iter().position(Option::is_none) {
        return Err(DistillError::Usage(format!(
            "shard {k}/{} is missing: every shard 0..{} is needed",
            base.shards, base.shards
        )));
    }
    let mut rows: Vec<Row> = parts.into_iter().flat_map(|p| p.rows).collect();
    rows.sort_by_key(|r| r.line);
    let inputs: Vec<&Path> = shards.iter().map(PathBuf::as_path).collect();
    let merged = Logits { header: base, rows };
    write(out, &merged, &inputs)?;
    Ok(merged.header)
}

/// The transfer set for training: the lines of `texts` that have logits in `file`, tokenized with
/// `encoder` (cut at `max_len`), after checking that `file` is whole (merged, or a single shard
/// of one) and was made from these texts, the teacher in `teacher_dir` and the same `max_len`.
pub fn training_set(
    file: &Path,
    texts: &Path,
    teacher_dir: &Path,
    labels: &[String],
    encoder: &edgebert_runtime::text::TextEncoder,
    max_len: usize,
) -> Result<Transfer> {
    let logits = read(file)?;
    let h = &logits.header;
    let (lines, crc) = read_texts(texts)?;
    let teacher = format!("{:08x}", teacher_crc(teacher_dir)?);
    let problem = if h.shard.is_some() && h.shards > 1 {
        Some(format!(
            "one shard of {}: merge them first (merge-logits)",
            h.shards
        ))
    } else if h.texts != format!("{crc:08x}") || h.lines != lines.len() {
        Some(format!("made from other texts than {}", texts.display()))
    } else if h.teacher != teacher {
        Some(format!(
            "made by another teacher than {} (CRC {} instead of {teacher})",
            teacher_dir.display(),
            h.teacher
        ))
    } else if h.labels != labels {
        Some(format!(
            "labels {:?}, the teacher's are {labels:?}",
            h.labels
        ))
    } else if h.max_len != max_len {
        Some(format!(
            "texts cut at {} tokens, training cuts at {max_len} (--max-len)",
            h.max_len
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(bad(file, p));
    }
    let mut tokens = Vec::new();
    let mut kept = Vec::new();
    for row in logits.rows {
        if let Some(l) = row.logits {
            let e = encoder
                .encode(&lines[row.line])
                .map_err(|e| bad(texts, format!("line {}: {e}", row.line + 1)))?;
            tokens.push(Tokens::from(&e));
            kept.push(l);
        }
    }
    Ok(Transfer {
        tokens,
        logits: kept,
        source: format!(
            "teacher {} texts {} max_len {}",
            h.teacher, h.texts, h.max_len
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_lines_between_them() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert_eq!(s.to_string(), "1/3");
        let mine: Vec<usize> = (0..8).filter(|&i| s.holds(i)).collect();
        assert_eq!(mine, [1, 4, 7]);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
