//! `emails`: a labelled CSV (`text,label,split,group,date`) from folders of raw e-mails (the
//! SpamAssassin corpus that `scripts/fetch-assets` unpacks), each read by the runtime's
//! `email::email_text`: the text `edgebert classify --email` gives the model on the device.
//!
//! Split by date, not at random, within each group (source folder): its oldest 80% train, the
//! next 10% dev, the newest 10% test (undated mails last), so a mailing-list thread and a spam
//! run, whose near-copies come close together in time, seldom straddle splits, the model is
//! judged on mail newer than what it learnt from, and every split has the corpus's share of each
//! group. Groups were collected over different months and differ in kind (SpamAssassin's hard
//! ham is newsletters and commercial mail that looks like spam): one date order for all, or
//! even per label, would leave dev with almost no spam or almost no hard ham, and a threshold
//! chosen on dev would not hold on test. Identical texts are kept once.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::data::{DEV_SHARE, TRAIN_SHARE};
use crate::error::{DistillError, Result};
use edgebert_runtime::fsutil::write_atomic;

/// What `emails` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailCorpus {
    /// Rows per `(split, label)`.
    pub counts: BTreeMap<(String, String), usize>,
    /// Mails left out because their text was already in (a copy sent twice, a forward).
    pub duplicates: usize,
    /// Files that are not e-mails (named on stderr).
    pub unreadable: usize,
}

struct Mail {
    text: String,
    label: String,
    group: String,
    file: String,
    date: Option<i64>,
}

impl Mail {
    /// The unit a split is cut in: a folder, with its label (the same folder may be given twice
    /// under different labels).
    fn key(&self) -> (&str, &str) {
        (self.group.as_str(), self.label.as_str())
    }
}

/// Reads every file of each `(label, folder)` and writes the CSV to `out`.
pub fn email_corpus(sources: &[(String, PathBuf)], out: &Path) -> Result<EmailCorpus> {
    if sources.is_empty() {
        return Err(DistillError::Usage("no LABEL=FOLDER given".into()));
    }
    let mut mails = Vec::new();
    let mut unreadable = 0;
    for (label, dir) in sources {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DistillError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let group = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for f in files {
            let raw = std::fs::read(&f).map_err(|e| DistillError::io(&f, e))?;
            match edgebert_runtime::email::email_text(&raw) {
                Ok(e) => mails.push(Mail {
                    text: e.text,
                    label: label.clone(),
                    group: group.clone(),
                    file: f
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    date: e.date,
                }),
                Err(e) => {
                    eprintln!("skipped {}: {e}", f.display());
                    unreadable += 1;
                }
            }
        }
    }
    let mut seen = HashSet::new();
    let before = mails.len();
    mails.retain(|m| seen.insert(m.text.clone()));
    let duplicates = before - mails.len();
    mails.sort_by(|a, b| {
        (a.date.unwrap_or(i64::MAX), &a.group, &a.file).cmp(&(
            b.date.unwrap_or(i64::MAX),
            &b.group,
            &b.file,
        ))
    });
    let mut per_group: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for m in &mails {
        *per_group.entry(m.key()).or_insert(0) += 1;
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| DistillError::Usage(format!("{}: {e}", out.display()));
    w.write_record(["text", "label", "split", "group", "date"])
        .map_err(io)?;
    let mut counts = BTreeMap::new();
    let mut rank: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for m in &mails {
        let n = per_group[&m.key()] as f64;
        let i = rank.entry(m.key()).or_insert(0);
        let (train_end, dev_end) = (
            (n * TRAIN_SHARE).round() as usize,
            (n * (TRAIN_SHARE + DEV_SHARE)).round() as usize,
        );
        let split = if *i < train_end {
            "train"
        } else if *i < dev_end {
            "dev"
        } else {
            "test"
        };
        *i += 1;
        *counts
            .entry((split.to_string(), m.label.clone()))
            .or_insert(0) += 1;
        let date = m.date.map_or_else(String::new, |d| d.to_string());
        w.write_record([m.text.as_str(), &m.label, split, &m.group, &date])
            .map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| DistillError::Usage(format!("{}: {e}", out.display())))?;
    let inputs: Vec<&Path> = sources.iter().map(|(_, d)| d.as_path()).collect();
    write_atomic(out, &bytes, &inputs)?;
    Ok(EmailCorpus {
        counts,
        duplicates,
        unreadable,
    })
}
