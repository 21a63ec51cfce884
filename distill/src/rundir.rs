//! A run directory's state: what `run.json` says of the run, checkpoints under `state/` (weights,
//! optimizer moments, [`Position`]) written so that a kill at any moment leaves one complete,
//! the teacher's cached logits, and `metrics.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::Tokens;
use crate::error::{DistillError, Result};
use crate::eval::logits;
use crate::model::Bert;
use crate::optim::AdamW;
use crate::train::progress_bar;
use edgebert_runtime::fsutil::write_atomic;

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn run_json(&self) -> PathBuf {
        self.0.join("run.json")
    }
    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.jsonl")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("state").join("best.safetensors")
    }
    pub fn teacher_logits(&self) -> PathBuf {
        self.0.join("teacher-logits.bin")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    kind: String,
    status: String,
    fingerprint: u32,
}

/// Where a run stands; saved with each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Position {
    pub(crate) fingerprint: u32,
    pub(crate) step: usize,
    pub(crate) epoch: usize,
    /// Batches of `epoch` already done.
    pub(crate) batch: usize,
    pub(crate) best_dev: f64,
    pub(crate) best_epoch: usize,
    pub(crate) stale_epochs: usize,
    /// Lines of metrics.jsonl written when this was saved.
    pub(crate) metrics_lines: usize,
    pub(crate) seconds: f64,
    pub(crate) examples: usize,
}

pub(crate) fn clear(rd: &RunDir) -> Result<()> {
    for p in [rd.run_json(), rd.metrics(), rd.teacher_logits()] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(rd.state());
    Ok(())
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("serialisable");
    write_atomic(path, &bytes, &[])?;
    Ok(())
}

/// Saves weights, moments and position under `state/step-N/`, then points `state/latest` at it
/// (atomically), then removes older ones: a kill at any moment leaves one complete checkpoint.
pub(crate) fn save_state(
    rd: &RunDir,
    model: &Bert,
    opt: &AdamW,
    pos: &Position,
    metrics: &Metrics,
    prior_seconds: f64,
    started: &Instant,
) -> Result<()> {
    let state = rd.state();
    let name = format!("step-{:08}", pos.step);
    let dir = state.join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| DistillError::io(&dir, e))?;
    write_atomic(
        &dir.join("model.safetensors"),
        &model.to_safetensors()?,
        &[],
    )?;
    let moments: Vec<(String, Vec<usize>, Vec<u8>)> = opt
        .state()
        .into_iter()
        .map(|(n, shape, data)| {
            (
                n,
                shape,
                data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    write_atomic(
        &dir.join("optimizer.safetensors"),
        &crate::model::safetensors_bytes(&moments)?,
        &[],
    )?;
    let mut pos = pos.clone();
    pos.metrics_lines = metrics.lines;
    pos.seconds = prior_seconds + started.elapsed().as_secs_f64();
    write_json(&dir.join("position.json"), &pos)?;
    write_atomic(&state.join("latest"), name.as_bytes(), &[])?;
    if let Ok(entries) = std::fs::read_dir(&state) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with("step-") && n != name {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

pub(crate) type Saved = (Position, Vec<u8>, Vec<u8>);

pub(crate) fn load_saved(rd: &RunDir, fingerprint: u32) -> Result<Option<Saved>> {
    let latest = match std::fs::read_to_string(rd.state().join("latest")) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let dir = rd.state().join(latest.trim());
    let read = |n: &str| std::fs::read(dir.join(n)).map_err(|e| DistillError::io(dir.join(n), e));
    let pos: Position =
        serde_json::from_slice(&read("position.json")?).map_err(|e| DistillError::Resume {
            dir: rd.0.clone(),
            message: format!("{}: {e}", dir.join("position.json").display()),
        })?;
    if pos.fingerprint != fingerprint {
        return Err(DistillError::Resume {
            dir: rd.0.clone(),
            message: "its checkpoint is of a different model, data or settings".into(),
        });
    }
    Ok(Some((
        pos,
        read("model.safetensors")?,
        read("optimizer.safetensors")?,
    )))
}

/// The teacher's logits on the training examples, from `teacher-logits.bin` when it was made
/// for this teacher and data, else computed (one eval-mode pass) and saved.
pub(crate) fn cached_teacher_logits(
    rd: &RunDir,
    teacher: &Bert,
    train: &[Tokens],
    batch: usize,
    fingerprint: u32,
) -> Result<Vec<Vec<f32>>> {
    const MAGIC: &[u8; 8] = b"EBTLOGIT";
    let labels = teacher.labels.len();
    let path = rd.teacher_logits();
    if let Ok(bytes) = std::fs::read(&path) {
        let n = train.len() * labels;
        if bytes.len() == 12 + 4 * n
            && &bytes[..8] == MAGIC
            && bytes[8..12] == fingerprint.to_le_bytes()
        {
            let flat: Vec<f32> = bytes[12..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(flat.chunks(labels).map(|c| c.to_vec()).collect());
        }
    }
    let bar = progress_bar(train.len() as u64, "teacher logits");
    let out = logits(teacher, train, batch, &bar)?;
    bar.finish_and_clear();
    let mut bytes = MAGIC.to_vec();
    bytes.extend(fingerprint.to_le_bytes());
    for row in &out {
        for x in row {
            bytes.extend(x.to_le_bytes());
        }
    }
    write_atomic(&path, &bytes, &[])?;
    Ok(out)
}

/// Appends JSON lines to metrics.jsonl, counting them.
pub(crate) struct Metrics {
    file: std::fs::File,
    path: PathBuf,
    lines: usize,
}

impl Metrics {
    pub(crate) fn open(path: &Path, lines: usize) -> Result<Metrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DistillError::io(path, e))?;
        Ok(Metrics {
            file,
            path: path.to_path_buf(),
            lines,
        })
    }

    pub(crate) fn write(&mut self, record: &MetricRecord) -> Result<()> {
        let line =
            serde_json::to_string(record).map_err(|e| DistillError::io(&self.path, e.into()))?;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| DistillError::io(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }
}

/// Keeps the first `n` lines of a file (drops records written after the checkpoint resumed from).
pub(crate) fn truncate_lines(path: &Path, n: usize) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text.lines().take(n).map(|l| format!("{l}\n")).collect();
    write_atomic(path, kept.as_bytes(), &[])?;
    Ok(())
}

/// One line of a run's metrics.jsonl: a training step's figures (every `log_every` steps), or an
/// epoch's dev scores. The JSON keys are the field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricRecord {
    Step {
        step: usize,
        /// Epochs done, fractional.
        epoch: f64,
        /// Mean training loss since the last record.
        loss: f64,
        /// How many steps that mean is over: `log_every`, fewer at an epoch's end (0 in records
        /// written before this field).
        #[serde(default)]
        window: usize,
        lr: f64,
        grad_norm: f64,
        examples_per_s: f64,
    },
    Epoch {
        step: usize,
        epoch: usize,
        dev_accuracy: f64,
        dev_macro_f1: f64,
    },
}

/// The records of metrics.jsonl (lines that are not records, e.g. cut by a crash, are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| DistillError::io(path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Decides what to do with what is in the directory (nothing, a finished run, an unfinished one
/// of this job or of another) and marks the run as running: the checkpoint to resume from, if
/// any.
pub(crate) fn begin(
    rd: &RunDir,
    kind: &str,
    fingerprint: u32,
    resume: bool,
    force: bool,
) -> Result<Option<Saved>> {
    let previous: Option<RunRecord> = std::fs::read(rd.run_json())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut position = None;
    match (&previous, force) {
        (_, true) => clear(rd)?,
        (Some(r), false) if r.status == "finished" => {
            return Err(DistillError::Finished { dir: rd.0.clone() })
        }
        (Some(r), false) if !resume => {
            return Err(DistillError::Resume {
                dir: rd.0.clone(),
                message: format!(
                    "it holds an unfinished {} run; pass --resume to continue it or --force to start over",
                    r.kind
                ),
            })
        }
        (Some(r), false) => {
            if r.fingerprint != fingerprint || r.kind != kind {
                return Err(DistillError::Resume {
                    dir: rd.0.clone(),
                    message: format!(
                        "its checkpoint is of a different model, data or settings ({} run, fingerprint {:08x}, this one {:08x})",
                        r.kind, r.fingerprint, fingerprint
                    ),
                });
            }
            position = load_saved(rd, fingerprint)?;
        }
        (None, _) => {}
    }
    record(rd, kind, "running", fingerprint)?;
    Ok(position)
}

/// Marks the run as finished: it is not trained again without `--force`.
pub(crate) fn finished(rd: &RunDir, kind: &str, fingerprint: u32) -> Result<()> {
    record(rd, kind, "finished", fingerprint)
}

fn record(rd: &RunDir, kind: &str, status: &str, fingerprint: u32) -> Result<()> {
    write_json(
        &rd.run_json(),
        &RunRecord {
            kind: kind.into(),
            status: status.into(),
            fingerprint,
        },
    )
}

/// Where training starts: the saved checkpoint's position with its weights and optimizer moments
/// loaded (and metrics written after it dropped), or step 0.
pub(crate) fn restore(
    rd: &RunDir,
    model: &Bert,
    opt: &mut AdamW,
    saved: Option<Saved>,
    fingerprint: u32,
) -> Result<Position> {
    Ok(match saved {
        Some((pos, weights, moments)) => {
            model.load_safetensors(&weights)?;
            let st = edgebert_quantize::checkpoint::read_safetensors(&moments).map_err(|m| {
                DistillError::Resume {
                    dir: rd.0.clone(),
                    message: m,
                }
            })?;
            opt.restore(pos.step as u64, |name, n| {
                st.get(name)
                    .filter(|w| w.data.len() == n)
                    .map(|w| w.data.clone())
            })?;
            truncate_lines(&rd.metrics(), pos.metrics_lines)?;
            eprintln!(
                "resuming at step {} (epoch {}, batch {})",
                pos.step,
                pos.epoch + 1,
                pos.batch
            );
            pos
        }
        None => {
            let _ = std::fs::remove_file(rd.metrics());
            Position {
                fingerprint,
                step: 0,
                epoch: 0,
                batch: 0,
                best_dev: -1.0,
                best_epoch: 0,
                stale_epochs: 0,
                metrics_lines: 0,
                seconds: 0.0,
                examples: 0,
            }
        }
    })
}
