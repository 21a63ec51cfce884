//! What the `edgebert` binary needs beyond the library API: model selection from command-line
//! arguments, label parsing and exit codes. Kept in the library so it is unit-tested; the binary
//! only parses arguments and prints.

use std::path::{Path, PathBuf};

use edgebert_boards::embedded_hal::digital::OutputPin;

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
                let bytes = crate::fsutil::read(path)?;
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
            ModelSource::Embedded => {
                Classifier::from_bundle_bytes(crate::embedded_model().unwrap_or_default(), options)
            }
            ModelSource::Parts { .. } => Classifier::from_bundle(&self.to_bundle()?, options),
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
                let read = |p: &PathBuf| crate::fsutil::read(p);
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

/// A `--pin LABEL=LINE` argument.
pub fn parse_pin(arg: &str) -> std::result::Result<(String, u32), String> {
    let (label, line) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("`{arg}`: expected LABEL=LINE, e.g. positive=27"))?;
    let line = line
        .trim()
        .parse()
        .map_err(|_| format!("`{arg}`: `{line}` is not a GPIO line number"))?;
    Ok((label.trim().to_owned(), line))
}

/// Checks `--pin`/`--busy-pin` against the model's labels before any pin is touched: every label
/// must be the model's, and no line or label used twice.
pub fn check_pins(
    pins: &[(String, u32)],
    busy: Option<u32>,
    labels: &[String],
) -> std::result::Result<(), String> {
    let mut lines = std::collections::HashMap::new();
    for (label, line) in pins {
        if !labels.contains(label) {
            return Err(format!(
                "--pin {label}={line}: the model has no label `{label}` (its labels: {})",
                labels.join(", ")
            ));
        }
        if pins.iter().filter(|(l, _)| l == label).count() > 1 {
            return Err(format!("--pin: label `{label}` is given twice"));
        }
        if let Some(other) = lines.insert(*line, label.as_str()) {
            return Err(format!(
                "--pin: GPIO line {line} is given to both `{other}` and `{label}`"
            ));
        }
    }
    if let Some(b) = busy {
        if let Some(label) = lines.get(&b) {
            return Err(format!("--busy-pin {b} is also the pin of `{label}`"));
        }
    }
    Ok(())
}

/// Shows answers on pins: a [`LabelSignal`](edgebert_boards::LabelSignal) as a classifier
/// [`Observer`](crate::Observer). A pin that fails mid-stream is reported on stderr (once until
/// it works again) and never stops classification.
pub struct SignalObserver<P: OutputPin> {
    signal: edgebert_boards::LabelSignal<P>,
    failing: bool,
}

impl<P: OutputPin> SignalObserver<P> {
    /// Wraps a signal whose pins are already driven low.
    pub fn new(signal: edgebert_boards::LabelSignal<P>) -> Self {
        SignalObserver {
            signal,
            failing: false,
        }
    }
}

impl<P: OutputPin> SignalObserver<P> {
    fn report(&mut self, r: std::result::Result<(), edgebert_boards::SignalError>) {
        match r {
            Err(e) if !self.failing => {
                self.failing = true;
                eprintln!("warning: {e}");
            }
            Err(_) => {}
            Ok(()) => self.failing = false,
        }
    }
}

impl<P: OutputPin + Send> crate::Observer for SignalObserver<P> {
    fn started(&mut self) {
        let r = self.signal.started();
        self.report(r);
    }
    fn finished(&mut self, last: Option<&crate::Prediction>) {
        let r = self
            .signal
            .show(last.map(|p| (p.label.as_str(), p.probability)));
        self.report(r);
    }
}

impl<P: OutputPin> Drop for SignalObserver<P> {
    fn drop(&mut self) {
        // Leave the board dark, not showing a stale answer.
        let _ = self.signal.clear();
    }
}

/// Opens the Linux GPIO lines for `--pin`/`--busy-pin` (all at start-up: a missing chip, a busy
/// line or a permission problem is an error before the first text).
#[cfg(all(feature = "gpio", target_os = "linux"))]
pub fn open_signal(
    chip: &Path,
    pins: &[(String, u32)],
    busy: Option<u32>,
    min_prob: f32,
) -> std::result::Result<SignalObserver<edgebert_boards::linux::CdevPin>, String> {
    use edgebert_boards::linux::open_output;
    let mut opened = Vec::new();
    for (label, line) in pins {
        opened.push((
            label.clone(),
            open_output(chip, *line, label).map_err(|e| e.to_string())?,
        ));
    }
    let busy = busy
        .map(|line| open_output(chip, line, "busy"))
        .transpose()
        .map_err(|e| e.to_string())?;
    let signal =
        edgebert_boards::LabelSignal::new(opened, busy, min_prob).map_err(|e| e.to_string())?;
    Ok(SignalObserver::new(signal))
}

/// Headroom `edgebert board` wants between the model's peak memory and what the board has free.
pub const MEMORY_MARGIN: f64 = 1.5;

/// What `edgebert board` reports: the board, the threads and kernels tract will use, and whether
/// the loaded model fits the board's memory with [`MEMORY_MARGIN`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoardReport {
    pub board: Option<&'static str>,
    pub name: String,
    pub detected_by: String,
    pub core: Option<String>,
    pub cores_online: usize,
    pub threads: usize,
    pub target: &'static str,
    pub kernels: crate::cpu::KernelFeatures,
    pub memory_total_mib: Option<u64>,
    pub memory_budget_mib: Option<u64>,
    pub model_peak_rss_mib: Option<f64>,
    pub fits: Option<bool>,
    pub warnings: Vec<String>,
}

impl BoardReport {
    /// `peak_rss_kib`: this process's peak after loading the model and answering a longest text.
    pub fn new(d: &edgebert_boards::Detection, threads: usize, peak_rss_kib: Option<u64>) -> Self {
        let rss = peak_rss_kib.map(|k| k as f64 / 1024.0);
        BoardReport {
            board: d.board.map(|b| b.id),
            name: d.name(),
            detected_by: format!("{:?}", d.source),
            core: d.core().map(|c| c.to_string()),
            cores_online: d.cpu.cores,
            threads,
            target: target_triple(),
            kernels: crate::cpu::kernel_features(),
            memory_total_mib: d.memory_total_mib,
            memory_budget_mib: d.memory_budget_mib(),
            model_peak_rss_mib: rss,
            fits: rss.and_then(|r| d.fits(r, MEMORY_MARGIN)),
            warnings: d.warnings.clone(),
        }
    }

    /// The report as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The report as aligned lines.
    pub fn text(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        let features: Vec<String> = self
            .kernels
            .features
            .iter()
            .map(|(f, on)| format!("{f} {}", if *on { "yes" } else { "no" }))
            .collect();
        let fits = match (self.fits, self.model_peak_rss_mib, self.memory_budget_mib) {
            (Some(true), Some(r), Some(b)) => {
                format!("yes: peak {r:.0} MiB of {b} MiB available (wants {MEMORY_MARGIN}x)")
            }
            (Some(false), Some(r), Some(b)) => {
                format!("NO: peak {r:.0} MiB × {MEMORY_MARGIN} margin > {b} MiB available")
            }
            (_, Some(r), None) => format!("unknown (peak {r:.0} MiB; free memory not known)"),
            _ => "unknown (peak memory not reported by this OS)".into(),
        };
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
        line("board", format!("{} [{}]", self.name, self.detected_by));
        line(
            "core",
            format!("{} × {}", opt(self.core.clone()), self.cores_online),
        );
        line("build", format!("{} ({})", self.target, self.kernels.arch));
        line("threads", self.threads.to_string());
        line("cpu features", features.join(", "));
        let timed = match self.kernels.int8_tile {
            Some(crate::cpu::Int8Tile {
                narrow_us: Some(n),
                wide_us: Some(w),
                ..
            }) => format!(" (timed here: 8x8 {n:.0} µs, 16x16 {w:.0} µs)"),
            Some(_) => " (set by TRACT_AVX512_FMA_UNITS)".into(),
            None => String::new(),
        };
        line(
            "int8 kernel",
            format!("{}{timed}", self.kernels.int8_kernel),
        );
        line(
            "memory",
            format!(
                "{} MiB total, {} MiB available",
                opt(self.memory_total_mib.map(|m| m.to_string())),
                opt(self.memory_budget_mib.map(|m| m.to_string()))
            ),
        );
        line("model fits", fits);
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// The target triple this binary was built for.
fn target_triple() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else if cfg!(target_arch = "arm") {
        "armv7-unknown-linux-gnueabihf"
    } else if cfg!(target_arch = "x86_64") {
        "x86_64-unknown-linux-gnu"
    } else {
        std::env::consts::ARCH
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

/// What `edgebert info` shows of a bundle: its manifest, format and section sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleSummary {
    pub format_version: u16,
    /// `onnx` or `compiled`.
    pub graph: &'static str,
    pub manifest: crate::Manifest,
    /// How the model is meant to be read (stored beside the manifest, not in its struct).
    pub defaults: crate::manifest::Defaults,
    pub bytes: BundleBytes,
}

/// Section sizes of a bundle, in bytes (the tokenizer as inflated).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BundleBytes {
    pub total: usize,
    pub tokenizer: usize,
    pub onnx: usize,
}

impl BundleSummary {
    /// Reads a bundle's bytes (checked as [`Bundle::parse`] does).
    pub fn of(raw: &[u8]) -> Result<BundleSummary> {
        let b = Bundle::parse(raw)?;
        Ok(BundleSummary {
            format_version: Bundle::version_of(raw).unwrap_or(0),
            graph: if crate::engine::is_compiled(b.graph) {
                "compiled"
            } else {
                "onnx"
            },
            bytes: BundleBytes {
                total: raw.len(),
                tokenizer: b.tokenizer_json.len(),
                onnx: b.graph.len(),
            },
            defaults: b.manifest.defaults.clone(),
            manifest: b.manifest,
        })
    }

    /// As one JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// As aligned lines: the manifest, then the sizes.
    pub fn text(&self) -> String {
        format!(
            "{}{:<15} {} bytes ({} graph {}, tokenizer {} inflated), format v{}\n",
            self.manifest.describe(),
            "size",
            self.bytes.total,
            self.graph,
            self.bytes.onnx,
            self.bytes.tokenizer,
            self.format_version
        )
    }
}
