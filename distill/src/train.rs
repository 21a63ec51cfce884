//! The training loop shared by teacher fine-tuning and student distillation: length-bucketed
//! batches, AdamW with warm-up and decay, dev evaluation and early stopping each epoch, atomic
//! checkpoints every N steps and per epoch, exact resume, `metrics.jsonl`, plots and a report.
//!
//! Resuming is exact: an epoch's batch order is a function of `(seed, epoch)` and a step's dropout
//! masks of `(seed, step)`, so a checkpoint only needs the weights, the optimizer moments and the
//! position; a run killed and resumed ends with the same weights as one never stopped.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{epoch_batches, Splits, Tokens};
use crate::error::{DistillError, Result};
use crate::eval::{batch_of, pad_id, score, Scores};
use crate::loss::{objective, LossWeights, Targets};
use crate::model::Bert;
use crate::optim::{scheduled_lr, AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::rundir::{self, cached_teacher_logits, save_state, Metrics};
use edgebert_runtime::fsutil::write_atomic;

pub use crate::loss::cosine_targets;
pub use crate::rundir::{read_metrics, MetricRecord, RunDir};

/// Hyper-parameters and bookkeeping of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub lr: f64,
    /// Share of the steps spent warming the learning rate up.
    pub warmup: f64,
    pub adamw: AdamWConfig,
    /// Epochs without a better dev accuracy before stopping.
    pub patience: usize,
    /// Save a checkpoint every this many steps (and at each epoch end); 0: epoch ends only.
    pub checkpoint_every: usize,
    pub seed: u64,
    pub max_len: usize,
    /// Write a `metrics.jsonl` training record every this many steps.
    pub log_every: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            epochs: 3,
            batch_size: 32,
            eval_batch_size: 64,
            lr: 5e-5,
            warmup: 0.1,
            adamw: AdamWConfig::default(),
            patience: 2,
            checkpoint_every: 100,
            seed: 13,
            max_len: 128,
            log_every: 10,
        }
    }
}

/// What is trained.
pub enum Kind {
    /// Fine-tune a classifier on the labels (cross-entropy).
    Teacher,
    /// Distil a student from a fine-tuned teacher.
    Student {
        teacher: Box<Bert>,
        /// Teacher layer each student layer was copied from.
        layers: Vec<usize>,
        loss: LossWeights,
        /// Unlabelled texts with the teacher's logits, trained on with the soft-target term only.
        transfer: Option<Transfer>,
    },
}

/// A transfer set: texts without labels and the teacher's logits on them
/// ([`crate::transfer`]).
pub struct Transfer {
    pub tokens: Vec<Tokens>,
    pub logits: Vec<Vec<f32>>,
    /// Identifies the texts and the teacher (the logits file's header), for the run's fingerprint.
    pub source: String,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Teacher => "teacher",
            Kind::Student { .. } => "student",
        }
    }
}

/// A training run.
pub struct Job {
    /// Run directory; the finished model is written here as an HF checkpoint.
    pub dir: PathBuf,
    pub model: Bert,
    pub tokenizer_json: Vec<u8>,
    pub data: Splits,
    pub settings: Settings,
    pub kind: Kind,
    /// Continue an unfinished run in `dir`.
    pub resume: bool,
    /// Start over even if `dir` holds a finished or unfinished run.
    pub force: bool,
    /// What the model was made from, for the report.
    pub source: String,
    /// Paths that must never be written (the teacher's files, the data).
    pub inputs: Vec<PathBuf>,
    /// Stop after this many steps as if killed (tests of resume); `None` in real runs.
    pub stop_after: Option<usize>,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// False when stopped early by `stop_after`.
    pub finished: bool,
    pub steps: usize,
    pub epochs_run: usize,
    pub dev: Option<Scores>,
    pub test: Option<Scores>,
    /// The teacher's scores on the same test split (student runs).
    pub teacher_test: Option<Scores>,
    pub seconds: f64,
    pub examples_per_second: f64,
}

/// Runs (or resumes) a job to the end.
pub fn run(job: Job) -> Result<Outcome> {
    let started = Instant::now();
    let rd = RunDir(job.dir.clone());
    std::fs::create_dir_all(&job.dir).map_err(|e| DistillError::io(&job.dir, e))?;
    for input in &job.inputs {
        if edgebert_runtime::fsutil::same_file(&job.dir, input) {
            return Err(DistillError::Usage(format!(
                "the output directory {} is an input; choose another",
                job.dir.display()
            )));
        }
    }
    let s = job.settings.clone();
    let encoder = edgebert_runtime::text::TextEncoder::from_json(&job.tokenizer_json, s.max_len)
        .map_err(edgebert_runtime::Error::from)?;
    let train = crate::data::tokenize(&encoder, &job.data.train)?;
    let dev = crate::data::tokenize(&encoder, &job.data.dev)?;
    let test = crate::data::tokenize(&encoder, &job.data.test)?;
    let gold = |rows: &[crate::data::Row]| rows.iter().map(|r| r.label).collect::<Vec<_>>();
    let (train_gold, dev_gold, test_gold) = (
        gold(&job.data.train),
        gold(&job.data.dev),
        gold(&job.data.test),
    );
    let fingerprint = fingerprint(&job, &train, &train_gold)?;
    // Rows from `labelled` on are the transfer set's: soft targets only.
    let labelled = train.len();
    let mut train = train;
    if let Kind::Student {
        transfer: Some(t), ..
    } = &job.kind
    {
        train.extend(t.tokens.iter().cloned());
    }

    let position = rundir::begin(&rd, job.kind.name(), fingerprint, job.resume, job.force)?;

    let teacher_logits = soft_targets(
        &rd,
        &job.kind,
        &train[..labelled],
        s.eval_batch_size,
        fingerprint,
    )?;

    std::fs::create_dir_all(rd.state()).map_err(|e| DistillError::io(rd.state(), e))?;
    let mut opt = AdamW::new(job.model.vars(), s.adamw);
    let mut pos = rundir::restore(&rd, &job.model, &mut opt, position, fingerprint)?;

    let lengths: Vec<usize> = train.iter().map(|t| t.ids.len()).collect();
    let per_epoch = train.len().div_ceil(s.batch_size.max(1));
    let total = per_epoch * s.epochs;
    let warmup = (total as f64 * s.warmup).round() as usize;
    // Wall time of the earlier sessions of a resumed run, so reports give the whole run's time.
    let prior_seconds = pos.seconds;
    let bar = progress_bar(total as u64, &format!("{} training", job.kind.name()));
    bar.set_position(pos.step as u64);
    let mut metrics = Metrics::open(&rd.metrics(), pos.metrics_lines)?;
    let pad = pad_id(&job.model);
    let session = Instant::now();
    let session_start_examples = pos.examples;
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);

    'epochs: while pos.epoch < s.epochs {
        let batches = epoch_batches(&lengths, s.batch_size, s.seed, pos.epoch);
        while pos.batch < batches.len() {
            let idx = &batches[pos.batch];
            let batch = batch_of(&train, idx, pad, &job.model)?;
            let mut rng = Rng::derived(s.seed, "dropout", pos.step as u64);
            let out = job.model.forward(&batch, Some(&mut rng))?;
            let targets = Targets {
                gold: &train_gold,
                labelled,
                soft: teacher_logits.as_deref(),
            };
            let loss = objective(&job.kind, &job.model, &batch, &out, idx, &targets)?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                return Err(DistillError::Usage(format!(
                    "loss is {loss_value} at step {}: training diverged (lower --lr)",
                    pos.step
                )));
            }
            let grads = loss.backward()?;
            let lr = scheduled_lr(s.lr, pos.step, warmup, total);
            let info = opt.step(&grads, lr)?;
            pos.step += 1;
            pos.batch += 1;
            pos.examples += idx.len();
            loss_sum += loss_value;
            loss_n += 1;
            let rate = (pos.examples - session_start_examples) as f64
                / session.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(pos.step as u64);
            bar.set_message(format!(
                "loss {:.4} · {rate:.1} ex/s",
                loss_sum / loss_n as f64
            ));
            if pos.step % s.log_every.max(1) == 0 || pos.batch == batches.len() {
                metrics.write(&MetricRecord::Step {
                    step: pos.step,
                    epoch: pos.epoch as f64 + pos.batch as f64 / batches.len() as f64,
                    loss: loss_sum / loss_n as f64,
                    window: loss_n,
                    lr,
                    grad_norm: info.grad_norm,
                    examples_per_s: rate,
                })?;
                loss_sum = 0.0;
                loss_n = 0;
            }
            if s.checkpoint_every > 0
                && pos.step % s.checkpoint_every == 0
                && pos.batch < batches.len()
            {
                save_state(
                    &rd,
                    &job.model,
                    &opt,
                    &pos,
                    &metrics,
                    prior_seconds,
                    &started,
                )?;
            }
            if job.stop_after == Some(pos.step) {
                bar.abandon();
                return Ok(Outcome {
                    finished: false,
                    steps: pos.step,
                    epochs_run: pos.epoch,
                    dev: None,
                    test: None,
                    teacher_test: None,
                    seconds: prior_seconds + started.elapsed().as_secs_f64(),
                    examples_per_second: rate,
                });
            }
        }
        // Epoch end: dev accuracy, best weights, early stopping.
        let dev_scores = score(
            &job.model,
            &dev,
            &dev_gold,
            s.eval_batch_size,
            &indicatif::ProgressBar::hidden(),
        )?;
        pos.epoch += 1;
        pos.batch = 0;
        let better = dev_scores.accuracy > pos.best_dev;
        if better {
            pos.best_dev = dev_scores.accuracy;
            pos.best_epoch = pos.epoch;
            pos.stale_epochs = 0;
            write_atomic(&rd.best(), &job.model.to_safetensors()?, &[])?;
        } else {
            pos.stale_epochs += 1;
        }
        metrics.write(&MetricRecord::Epoch {
            step: pos.step,
            epoch: pos.epoch,
            dev_accuracy: dev_scores.accuracy,
            dev_macro_f1: dev_scores.macro_f1,
        })?;
        bar.println(format!(
            "epoch {}: dev accuracy {:.2}%{}",
            pos.epoch,
            dev_scores.accuracy * 100.0,
            if better { " (best)" } else { "" }
        ));
        save_state(
            &rd,
            &job.model,
            &opt,
            &pos,
            &metrics,
            prior_seconds,
            &started,
        )?;
        if pos.stale_epochs >= s.patience.max(1) && pos.epoch < s.epochs {
            bar.println(format!(
                "early stop: no better dev accuracy for {} epochs",
                pos.stale_epochs
            ));
            break 'epochs;
        }
    }
    bar.finish_and_clear();

    // The best epoch's weights are the model.
    let best = std::fs::read(rd.best()).map_err(|e| DistillError::io(rd.best(), e))?;
    job.model.load_safetensors(&best)?;
    let quiet = indicatif::ProgressBar::hidden();
    let dev_scores = score(&job.model, &dev, &dev_gold, s.eval_batch_size, &quiet)?;
    let test_scores = if test.is_empty() {
        None
    } else {
        Some(score(
            &job.model,
            &test,
            &test_gold,
            s.eval_batch_size,
            &quiet,
        )?)
    };
    let teacher_test = match (&job.kind, test.is_empty()) {
        (Kind::Student { teacher, .. }, false) => Some(score(
            teacher,
            &test,
            &test_gold,
            s.eval_batch_size,
            &quiet,
        )?),
        _ => None,
    };
    job.model.save(&job.dir, &job.tokenizer_json)?;
    let seconds = prior_seconds + started.elapsed().as_secs_f64();
    let outcome = Outcome {
        finished: true,
        steps: pos.step,
        epochs_run: pos.epoch,
        dev: Some(dev_scores),
        test: test_scores,
        teacher_test,
        seconds,
        examples_per_second: (pos.examples - session_start_examples) as f64
            / session.elapsed().as_secs_f64().max(1e-9),
    };
    let records = read_metrics(&rd.metrics())?;
    crate::report::training_curves(&job.dir, &records, job.kind.name())?;
    let report = crate::report::training_report(&job, &outcome, &records);
    write_atomic(&job.dir.join("report.md"), report.as_bytes(), &[])?;
    rundir::finished(&rd, job.kind.name(), fingerprint)?;
    let _ = std::fs::remove_dir_all(rd.state());
    Ok(outcome)
}

/// A student's soft targets: the teacher's logits on the labelled training rows (computed once
/// and cached in the run directory), then the transfer set's; `None` when the KL term is off.
fn soft_targets(
    rd: &RunDir,
    kind: &Kind,
    labelled: &[Tokens],
    batch: usize,
    fingerprint: u32,
) -> Result<Option<Vec<Vec<f32>>>> {
    let Kind::Student {
        teacher,
        loss,
        transfer,
        ..
    } = kind
    else {
        return Ok(None);
    };
    if loss.alpha <= 0.0 {
        return Ok(None);
    }
    let mut logits = cached_teacher_logits(rd, teacher, labelled, batch, fingerprint)?;
    logits.extend(transfer.iter().flat_map(|t| t.logits.iter().cloned()));
    Ok(Some(logits))
}

/// Identifies a run: kind, config, labels, settings, training data and initial weights.
fn fingerprint(job: &Job, train: &[Tokens], gold: &[usize]) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let layers = match &job.kind {
        Kind::Student {
            layers,
            loss,
            transfer,
            ..
        } => {
            let mut v = serde_json::json!({ "layers": layers, "loss": loss });
            if let Some(t) = transfer {
                v["transfer"] = serde_json::json!(t.source);
            }
            v
        }
        Kind::Teacher => serde_json::Value::Null,
    };
    let desc = serde_json::json!({
        "kind": job.kind.name(),
        "config": job.model.config,
        "settings": job.settings,
        "student": layers,
    });
    h.update(desc.to_string().as_bytes());
    for (t, g) in train.iter().zip(gold) {
        for id in &t.ids {
            h.update(&id.to_le_bytes());
        }
        h.update(&(*g as u32).to_le_bytes());
    }
    h.update(&job.model.to_safetensors()?);
    Ok(h.finalize())
}

/// A progress bar on stderr (hidden when stderr is not a terminal): the workspace's one style.
pub fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    edgebert_runtime::progress::bar(len, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_targets_follow_the_layer_map() {
        assert_eq!(cosine_targets(&[0, 2, 4], 6), [1, 3, 5]);
        assert_eq!(cosine_targets(&[0, 3, 5], 6), [2, 4, 5]);
        assert_eq!(cosine_targets(&[1], 4), [3]);
    }
}
