//! Labelled text data: CSV, TSV or JSON lines with a text column and a label column (names
//! configurable), labels as names or integer ids. Shared by evaluation here and by distillation.

use std::path::{Path, PathBuf};

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    /// Index into the model's labels.
    pub label: usize,
}

/// Which columns hold the text and the label.
#[derive(Debug, Clone)]
pub struct Columns {
    pub text: String,
    pub label: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            text: "text".into(),
            label: "label".into(),
        }
    }
}

/// Why a data file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: no column `{column}` (columns: {})", found.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: Vec<String>,
    },
    #[error("{path}:{line}: label `{label}` is not one of the model's labels ({})", labels.join(", "))]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        label: String,
        labels: Vec<String>,
    },
    #[error("{path}: no examples")]
    Empty { path: PathBuf },
}

/// The index of `label` in the model's `labels`: by name, or as an integer id below
/// `labels.len()` (ids name a label only where no label has that name). Shared with distillation's
/// reader, so that both map a data file's labels the same way.
pub fn label_index(labels: &[String], label: &str) -> Option<usize> {
    labels
        .iter()
        .position(|l| l == label)
        .or_else(|| label.parse::<usize>().ok().filter(|&i| i < labels.len()))
}

/// Reads examples from `path` (format by extension: `.csv`, `.tsv`, `.jsonl`/`.json`), mapping
/// labels (names, or ids below `labels.len()`) to indices into `labels`.
pub fn read_examples(
    path: &Path,
    columns: &Columns,
    labels: &[String],
) -> Result<Vec<Example>, DataError> {
    let rows = read_table(path, &[&columns.text, &columns.label])?;
    let mut out = Vec::with_capacity(rows.len());
    for Record { line, mut fields } in rows {
        let label = fields.pop().unwrap_or_default();
        let text = fields.pop().unwrap_or_default();
        let index = label_index(labels, &label).ok_or_else(|| DataError::UnknownLabel {
            path: path.into(),
            line,
            label: label.clone(),
            labels: labels.to_vec(),
        })?;
        out.push(Example { text, label: index });
    }
    if out.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    Ok(out)
}

/// One row of a table: its line number (1-based, header included) and the asked-for fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

/// Reads the named columns of every row of a CSV/TSV/JSON-lines file (format by extension:
/// `.tsv`, `.jsonl`/`.json`, anything else CSV). Numbers in JSON become their decimal text.
pub fn read_table(path: &Path, columns: &[&str]) -> Result<Vec<Record>, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path, columns),
        "tsv" => read_delimited(path, columns, b'\t'),
        _ => read_delimited(path, columns, b','),
    }
}

fn read_delimited(path: &Path, columns: &[&str], delimiter: u8) -> Result<Vec<Record>, DataError> {
    let parse = |message: String| DataError::Parse {
        path: path.into(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_path(path)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => DataError::Io {
                path: path.into(),
                source,
            },
            other => parse(format!("{other:?}")),
        })?;
    let headers = reader.headers().map_err(|e| parse(e.to_string()))?.clone();
    let find = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.into(),
                column: name.into(),
                found: headers.iter().map(String::from).collect(),
            })
    };
    let ix = columns
        .iter()
        .map(|c| find(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| parse(e.to_string()))?;
        rows.push(Record {
            line: i + 2,
            fields: ix
                .iter()
                .map(|&j| record.get(j).unwrap_or("").to_string())
                .collect(),
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path, columns: &[&str]) -> Result<Vec<Record>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse = |message: String| DataError::Parse {
            path: path.into(),
            message: format!("line {}: {message}", i + 1),
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| parse(e.to_string()))?;
        let field = |name: &str| -> Result<String, DataError> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => Err(DataError::MissingColumn {
                    path: path.into(),
                    column: name.into(),
                    found: v
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default(),
                }),
            }
        };
        rows.push(Record {
            line: i + 1,
            fields: columns.iter().map(|c| field(c)).collect::<Result<_, _>>()?,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["negative".into(), "positive".into()]
    }

    #[test]
    fn csv_tsv_and_jsonl_with_names_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "label,text\npositive,\"good, really\"\n0,bad\n").unwrap();
        let got = read_examples(&csv, &Columns::default(), &labels()).unwrap();
        assert_eq!(
            got,
            vec![
                Example {
                    text: "good, really".into(),
                    label: 1
                },
                Example {
                    text: "bad".into(),
                    label: 0
                },
            ]
        );
        let tsv = dir.path().join("d.tsv");
        std::fs::write(&tsv, "review\tsentiment\tmovie\nfine\tpositive\tx\n").unwrap();
        let cols = Columns {
            text: "review".into(),
            label: "sentiment".into(),
        };
        assert_eq!(read_examples(&tsv, &cols, &labels()).unwrap()[0].label, 1);
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(
            &jsonl,
            "{\"text\": \"meh\", \"label\": 0}\n\n{\"text\": \"wow\", \"label\": \"positive\"}\n",
        )
        .unwrap();
        assert_eq!(
            read_examples(&jsonl, &Columns::default(), &labels())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn wrong_labels_columns_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "text,label\nok,neutral\n").unwrap();
        let err = read_examples(&csv, &Columns::default(), &labels()).unwrap_err();
        assert!(
            matches!(err, DataError::UnknownLabel { line: 2, .. }),
            "{err}"
        );
        std::fs::write(&csv, "text,stars\nok,5\n").unwrap();
        assert!(matches!(
            read_examples(&csv, &Columns::default(), &labels()),
            Err(DataError::MissingColumn { .. })
        ));
        std::fs::write(&csv, "text,label\n").unwrap();
        assert!(matches!(
            read_examples(&csv, &Columns::default(), &labels()),
            Err(DataError::Empty { .. })
        ));
        std::fs::write(&csv, "text,label\n2,2\n").unwrap();
        assert!(matches!(
            read_examples(&csv, &Columns::default(), &labels()),
            Err(DataError::UnknownLabel { .. })
        ));
    }
}
