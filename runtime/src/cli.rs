//! What the `edgebert` binary needs beyond the library API: model selection from command-line
//! arguments, label parsing and exit codes. Kept in the library so it is unit-tested; the binary
//! only parses arguments and prints.

use std::path::{Path, PathBuf};

use crate::classifier::{Classifier, ClassifierOptions};
use crate::error::{Error, Result};
use crate::Bundle;

/// Exit codes of the binaries, as documented in the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Bad command line.
    pub const USAGE: u8 = 1;
    /// Bad input or model: unreadable or corrupt files, texts that could not be classified.
    pub const BAD_INPUT: u8 = 2;
    /// The system failed: I/O, sockets, inference.
    pub const FAILURE: u8 = 3;
}

/// The exit code for a library error.
pub fn exit_code(e: &Error) -> u8 {
    if e.is_bad_input() {
        exit::BAD_INPUT
    } else {
        exit::FAILURE
    }
}

/// Parses the command line; on failure prints clap's message and gives the exit code: 0 for
/// `--help`/`--version`, [`exit::USAGE`] otherwise (clap's own default would be 2, which means bad
/// input here).
#[cfg(feature = "cli")]
pub fn parse_args<P: clap::Parser>() -> Result<P, u8> {
    P::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        }
    })
}

/// Where a model comes from: a bundle, or a plain ONNX file with a tokenizer and labels.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    Bundle(PathBuf),
    /// The model built into the binary ([`crate::embedded_model`]).
    Embedded,
    Parts {
        onnx: PathBuf,
        tokenizer: PathBuf,
        labels: LabelSource,
        max_len: usize,
    },
}

/// Labels given on the command line: names, or a HF config.json with `id2label`.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSource {
    Names(Vec<String>),
    Config(PathBuf),
}

impl LabelSource {
    /// `a,b,c`, or a path to a config.json.
    pub fn parse(arg: &str) -> LabelSource {
        if arg.ends_with(".json") && Path::new(arg).is_file() {
            LabelSource::Config(PathBuf::from(arg))
        } else {
            LabelSource::Names(arg.split(',').map(|s| s.trim().to_string()).collect())
        }
    }

    /// The label names, reading the config when there is one.
    pub fn resolve(&self) -> Result<Vec<String>> {
        match self {
            LabelSource::Names(n) => Ok(n.clone()),
            LabelSource::Config(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let bad = |msg: String| {
                    Error::io(
                        path,
                        std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
                    )
                };
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                let map = v
                    .get("id2label")
                    .and_then(|m| m.as_object())
                    .ok_or_else(|| bad("no id2label object".into()))?;
                let mut pairs: Vec<(usize, String)> = map
                    .iter()
                    .map(|(k, v)| {
                        let id = k
                            .parse()
                            .map_err(|_| bad(format!("id2label key `{k}` is not a number")))?;
                        let name = v
                            .as_str()
                            .ok_or_else(|| bad(format!("id2label[{k}] is not a string")))?;
                        Ok((id, name.to_string()))
                    })
                    .collect::<Result<_>>()?;
                pairs.sort();
                Ok(pairs.into_iter().map(|(_, n)| n).collect())
            }
        }
    }

    /// The file this reads, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            LabelSource::Config(p) => Some(p),
            LabelSource::Names(_) => None,
        }
    }
}

impl ModelSource {
    /// Loads and prepares the model.
    pub fn load(&self, options: ClassifierOptions) -> Result<Classifier> {
        match self {
            ModelSource::Bundle(path) => Classifier::open(path, options),
            ModelSource::Parts { .. } | ModelSource::Embedded => {
                Classifier::from_bundle(&self.to_bundle()?, options)
            }
        }
    }

    /// Reads the model as a bundle (packing the parts when needed).
    pub fn to_bundle(&self) -> Result<Bundle> {
        match self {
            ModelSource::Bundle(path) => Bundle::read(path),
            ModelSource::Embedded => Ok(Bundle::from_bytes(
                crate::embedded_model().unwrap_or_default(),
            )?),
            ModelSource::Parts {
                onnx,
                tokenizer,
                labels,
                max_len,
            } => {
                let read = |p: &PathBuf| std::fs::read(p).map_err(|e| Error::io(p, e));
                crate::pack(
                    read(onnx)?,
                    read(tokenizer)?,
                    labels.resolve()?,
                    *max_len,
                    "classification",
                )
            }
        }
    }

    /// The files this source reads.
    pub fn inputs(&self) -> Vec<&Path> {
        match self {
            ModelSource::Bundle(p) => vec![p.as_path()],
            ModelSource::Embedded => vec![],
            ModelSource::Parts {
                onnx,
                tokenizer,
                labels,
                ..
            } => {
                let mut v = vec![onnx.as_path(), tokenizer.as_path()];
                v.extend(labels.path());
                v
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_from_names_and_config() {
        assert_eq!(
            LabelSource::parse("negative, positive"),
            LabelSource::Names(vec!["negative".into(), "positive".into()])
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        std::fs::write(
            &cfg,
            r#"{"id2label": {"1": "pos", "0": "neg", "10": "z", "2": "x"}}"#,
        )
        .unwrap();
        let src = LabelSource::parse(cfg.to_str().unwrap());
        assert_eq!(src.resolve().unwrap(), vec!["neg", "pos", "x", "z"]);
        std::fs::write(&cfg, r#"{"id2label": {"a": "pos"}}"#).unwrap();
        assert!(src.resolve().is_err());
    }
}
