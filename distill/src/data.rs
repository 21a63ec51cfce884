//! Training data: labelled texts from CSV/TSV/JSON lines, split into train/dev/test
//! deterministically (grouped by a column when asked), tokenized, and cut into length-bucketed
//! batches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use edgebert_quantize::data::{read_table, Record};
use edgebert_runtime::text::{Encoded, LongText, TextEncoder};

use crate::error::{DistillError, Result};
use crate::rng::Rng;

/// Where the examples are and how to read them.
#[derive(Debug, Clone)]
pub struct DataSpec {
    pub path: PathBuf,
    pub text_column: String,
    pub label_column: String,
    /// Rows sharing this column's value stay in one split (e.g. `movie_name`).
    pub group_by: Option<String>,
    /// A column that already says `train`, `dev` (or `validation`) or `test`; no split is made.
    pub split_column: Option<String>,
    /// Label renames applied first (`fresh` → `positive`).
    pub rename: Vec<(String, String)>,
    /// Rows whose label (after renaming) is one of these are left out.
    pub drop: Vec<String>,
    /// Seed of the split.
    pub seed: u64,
}

impl DataSpec {
    pub fn new(path: impl Into<PathBuf>) -> DataSpec {
        DataSpec {
            path: path.into(),
            text_column: "text".into(),
            label_column: "label".into(),
            group_by: None,
            split_column: None,
            rename: vec![],
            drop: vec![],
            seed: 13,
        }
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line in the source file.
    pub line: usize,
    pub text: String,
    /// Index into the labels.
    pub label: usize,
    pub group: String,
}

/// The examples, split.
#[derive(Debug, Clone)]
pub struct Splits {
    pub labels: Vec<String>,
    pub train: Vec<Row>,
    pub dev: Vec<Row>,
    pub test: Vec<Row>,
    /// Rows left out by `drop`.
    pub dropped: usize,
}

/// Share of rows (by groups) for train and dev; test gets the rest.
pub const TRAIN_SHARE: f64 = 0.8;
pub const DEV_SHARE: f64 = 0.1;

/// Reads and splits the data. With `labels`, the data's labels (names, or integer ids) must be
/// among them; without, the labels are the distinct values found, sorted (numerically when all
/// are integers).
pub fn load(spec: &DataSpec, labels: Option<&[String]>) -> Result<Splits> {
    let bad = |message: String| DistillError::BadData {
        path: spec.path.clone(),
        message,
    };
    let mut columns = vec![spec.text_column.as_str(), spec.label_column.as_str()];
    if let Some(g) = &spec.group_by {
        columns.push(g);
    }
    if let Some(s) = &spec.split_column {
        columns.push(s);
    }
    let records = read_table(&spec.path, &columns)?;
    let rename: BTreeMap<&str, &str> = spec
        .rename
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let mut kept: Vec<(Record, String)> = Vec::new();
    let mut dropped = 0;
    for r in records {
        let raw = r.fields[1].trim();
        let label = rename.get(raw).copied().unwrap_or(raw).to_string();
        if spec.drop.contains(&label) {
            dropped += 1;
            continue;
        }
        if r.fields[0].trim().is_empty() {
            return Err(bad(format!("line {}: row has no text", r.line)));
        }
        if label.is_empty() {
            return Err(bad(format!("line {}: row has no label", r.line)));
        }
        kept.push((r, label));
    }
    if kept.is_empty() {
        return Err(bad("no examples".into()));
    }
    let labels: Vec<String> = match labels {
        Some(l) => l.to_vec(),
        None => {
            let found: BTreeSet<&str> = kept.iter().map(|(_, l)| l.as_str()).collect();
            let mut found: Vec<String> = found.into_iter().map(String::from).collect();
            if found.iter().all(|l| l.parse::<u64>().is_ok()) {
                found.sort_by_key(|l| l.parse::<u64>().unwrap_or(0));
            }
            found
        }
    };
    let mut rows = Vec::with_capacity(kept.len());
    let mut split_of = Vec::new();
    for (r, label) in &kept {
        let index = edgebert_quantize::data::label_index(&labels, label).ok_or_else(|| {
            bad(format!(
                "line {}: label `{label}` is not one of the model's labels ({})",
                r.line,
                labels.join(", ")
            ))
        })?;
        let group = match &spec.group_by {
            Some(_) => r.fields[2].clone(),
            None => format!("#{}", r.line),
        };
        if spec.split_column.is_some() {
            split_of.push(r.fields.last().cloned().unwrap_or_default());
        }
        rows.push(Row {
            line: r.line,
            text: r.fields[0].clone(),
            label: index,
            group,
        });
    }
    let classes: BTreeSet<usize> = rows.iter().map(|r| r.label).collect();
    if classes.len() < 2 {
        return Err(bad(format!(
            "the label column `{}` has one class ({}); a classifier needs at least two",
            spec.label_column,
            labels[*classes.iter().next().unwrap_or(&0)]
        )));
    }
    let (train, dev, test) = match &spec.split_column {
        Some(col) => {
            let (mut train, mut dev, mut test) = (vec![], vec![], vec![]);
            for (row, s) in rows.into_iter().zip(split_of) {
                match s.trim().to_ascii_lowercase().as_str() {
                    "train" => train.push(row),
                    "dev" | "validation" | "valid" | "val" => dev.push(row),
                    "test" => test.push(row),
                    other => {
                        return Err(bad(format!(
                            "line {}: split column `{col}` says `{other}` (expected train, dev or test)",
                            row.line
                        )))
                    }
                }
            }
            (train, dev, test)
        }
        None => split(rows, spec.seed),
    };
    if train.is_empty() || dev.is_empty() {
        return Err(bad(format!(
            "too few examples (or groups) to split: {} train, {} dev",
            train.len(),
            dev.len()
        )));
    }
    Ok(Splits {
        labels,
        train,
        dev,
        test,
        dropped,
    })
}

/// Splits by group: groups in a seeded random order fill train to 80% of the rows, then dev to
/// 90%, then test. A group never straddles two splits.
pub fn split(rows: Vec<Row>, seed: u64) -> (Vec<Row>, Vec<Row>, Vec<Row>) {
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *sizes.entry(r.group.as_str()).or_default() += 1;
    }
    let mut groups: Vec<(&str, usize)> = sizes.into_iter().collect();
    Rng::derived(seed, "split", 0).shuffle(&mut groups);
    let total = rows.len() as f64;
    let mut which: BTreeMap<String, u8> = BTreeMap::new();
    let mut seen = 0usize;
    for (g, n) in groups {
        let at = seen as f64 / total;
        let s = if at < TRAIN_SHARE {
            0
        } else if at < TRAIN_SHARE + DEV_SHARE {
            1
        } else {
            2
        };
        which.insert(g.to_string(), s);
        seen += n;
    }
    let (mut train, mut dev, mut test) = (vec![], vec![], vec![]);
    for r in rows {
        match which[&r.group] {
            0 => train.push(r),
            1 => dev.push(r),
            _ => test.push(r),
        }
    }
    (train, dev, test)
}

/// Token ids of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
}

impl From<&Encoded> for Tokens {
    fn from(e: &Encoded) -> Tokens {
        Tokens {
            ids: e.ids.iter().map(|&i| i as u32).collect(),
            types: e.type_ids.iter().map(|&i| i as u32).collect(),
        }
    }
}

/// Tokenizes rows with the model's tokenizer (cut at its maximum length).
pub fn tokenize(encoder: &TextEncoder, rows: &[Row]) -> Result<Vec<Tokens>> {
    rows.iter()
        .map(|r| {
            let e = encoder.encode(&r.text).map_err(|e| DistillError::BadData {
                path: PathBuf::from(format!("line {}", r.line)),
                message: e.to_string(),
            })?;
            Ok(Tokens::from(&e))
        })
        .collect()
}

/// Rows as the runtime reads them: every input of every row.
pub struct Windows {
    pub tokens: Vec<Tokens>,
    /// Per input: its row, and its share of the row's tokens (the weight of its logits).
    pub owners: Vec<(usize, f32)>,
}

/// Tokenizes rows into the inputs the runtime would run for them (`long`: how a long text is
/// read).
pub fn tokenize_windows(encoder: &TextEncoder, rows: &[Row], long: LongText) -> Result<Windows> {
    let mut windows = Vec::new();
    let mut owners = Vec::new();
    for (ix, r) in rows.iter().enumerate() {
        let reading = encoder
            .read(&r.text, long)
            .map_err(|e| DistillError::BadData {
                path: PathBuf::from(format!("line {}", r.line)),
                message: e.to_string(),
            })?;
        let total = reading.tokens() as f32;
        for w in reading.windows {
            owners.push((ix, w.ids.len() as f32 / total));
            windows.push(Tokens::from(&w));
        }
    }
    Ok(Windows {
        tokens: windows,
        owners,
    })
}

/// Batches of example indices for one epoch: shuffled, then sorted by length inside windows of
/// 50 batches and cut, then the batches shuffled, so a batch holds texts of similar length (little
/// padding) while the order still changes every epoch. Deterministic in `(seed, epoch)`.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::derived(seed, "epoch", epoch as u64);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let window = batch_size.max(1) * 50;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(window) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size.max(1)).map(|c| c.to_vec()));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Batches for evaluation: sorted by length, in order.
pub fn eval_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
        .chunks(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("d.csv");
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn groups_never_straddle_splits_and_the_split_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = String::from("text,category,movie\n");
        for i in 0..400 {
            let label = ["fresh", "rotten", "plot"][i % 3];
            body.push_str(&format!("review {i},{label},m{}\n", i % 37));
        }
        let mut spec = DataSpec::new(write(dir.path(), &body));
        spec.label_column = "category".into();
        spec.group_by = Some("movie".into());
        spec.rename = vec![
            ("fresh".into(), "positive".into()),
            ("rotten".into(), "negative".into()),
        ];
        spec.drop = vec!["plot".into()];
        let s = load(&spec, None).unwrap();
        assert_eq!(s.labels, ["negative", "positive"]);
        assert_eq!(s.dropped, 133);
        assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 267);
        let groups = |rows: &[Row]| {
            rows.iter()
                .map(|r| r.group.clone())
                .collect::<BTreeSet<_>>()
        };
        assert!(groups(&s.train).is_disjoint(&groups(&s.dev)));
        assert!(groups(&s.train).is_disjoint(&groups(&s.test)));
        assert!(groups(&s.dev).is_disjoint(&groups(&s.test)));
        assert!(
            s.train.len() > 180 && !s.test.is_empty(),
            "{}",
            s.train.len()
        );
        let again = load(&spec, None).unwrap();
        assert_eq!(again.dev, s.dev);
        spec.seed = 14;
        assert_ne!(load(&spec, None).unwrap().dev, s.dev);
    }

    #[test]
    fn bad_data_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |body: &str| {
            load(&DataSpec::new(write(dir.path(), body)), None)
                .unwrap_err()
                .to_string()
        };
        assert!(err("text,label\n").contains("no examples"));
        assert!(err("text,label\na,x\nb,x\n").contains("one class"));
        assert!(err("text,label\na,x\n ,y\n").contains("line 3: row has no text"));
        assert!(err("words,label\na,x\n").contains("no column `text`"));
        let p = write(dir.path(), "text,label\na,maybe\nb,no\n");
        let labels = ["no".to_string(), "yes".to_string()];
        assert!(load(&DataSpec::new(p), Some(&labels))
            .unwrap_err()
            .to_string()
            .contains("`maybe`"));
    }

    #[test]
    fn batches_cover_every_example_once_and_group_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 97 + 3).collect();
        let b = epoch_batches(&lengths, 16, 1, 0);
        let mut all: Vec<usize> = b.concat();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(b, epoch_batches(&lengths, 16, 1, 0));
        assert_ne!(b, epoch_batches(&lengths, 16, 1, 1));
        // Padding waste: far less than random batches would have.
        let waste = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|x| {
                    let m = x.iter().map(|&i| lengths[i]).max().unwrap();
                    x.iter().map(|&i| m - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random: Vec<Vec<usize>> = (0..1000)
            .collect::<Vec<_>>()
            .chunks(16)
            .map(|c| c.to_vec())
            .collect();
        assert!(
            waste(&b) * 5 < waste(&random),
            "{} vs {}",
            waste(&b),
            waste(&random)
        );
    }
}
