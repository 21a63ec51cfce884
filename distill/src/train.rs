//! The training loop shared by teacher fine-tuning and student distillation: length-bucketed
//! batches, AdamW with warm-up and decay, dev evaluation and early stopping each epoch, atomic
//! checkpoints every N steps and per epoch, exact resume, `metrics.jsonl`, plots and a report.
//!
//! Resuming is exact: an epoch's batch order is a function of `(seed, epoch)` and a step's dropout
//! masks of `(seed, step)`, so a checkpoint only needs the weights, the optimizer moments and the
//! position; a run killed and resumed ends with the same weights as one never stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::{epoch_batches, Splits, Tokens};
use crate::error::{DistillError, Result};
use crate::eval::{batch_of, labels_of, logits, pad_id, score, Scores};
use crate::loss::{cosine, cross_entropy, kl_t2, LossWeights};
use crate::model::Bert;
use crate::optim::{scheduled_lr, AdamW, AdamWConfig};
use crate::rng::Rng;
use edgebert_runtime::fsutil::write_atomic;

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
struct Position {
    fingerprint: u32,
    step: usize,
    epoch: usize,
    /// Batches of `epoch` already done.
    batch: usize,
    best_dev: f64,
    best_epoch: usize,
    stale_epochs: usize,
    /// Lines of metrics.jsonl written when this was saved.
    metrics_lines: usize,
    seconds: f64,
    examples: usize,
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

    // What is in the directory already?
    let previous: Option<RunRecord> = std::fs::read(rd.run_json())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut position = None;
    match (&previous, job.force) {
        (_, true) => clear(&rd)?,
        (Some(r), false) if r.status == "finished" => {
            return Err(DistillError::Finished { dir: job.dir.clone() })
        }
        (Some(r), false) if !job.resume => {
            return Err(DistillError::Resume {
                dir: job.dir.clone(),
                message: format!(
                    "it holds an unfinished {} run; pass --resume to continue it or --force to start over",
                    r.kind
                ),
            })
        }
        (Some(r), false) => {
            if r.fingerprint != fingerprint || r.kind != job.kind.name() {
                return Err(DistillError::Resume {
                    dir: job.dir.clone(),
                    message: format!(
                        "its checkpoint is of a different model, data or settings ({} run, fingerprint {:08x}, this one {:08x})",
                        r.kind, r.fingerprint, fingerprint
                    ),
                });
            }
            position = load_position(&rd, fingerprint)?;
        }
        (None, _) => {}
    }
    write_json(
        &rd.run_json(),
        &RunRecord {
            kind: job.kind.name().into(),
            status: "running".into(),
            fingerprint,
        },
    )?;

    // Soft targets: the teacher's logits, computed once and cached on disk, then the transfer
    // set's.
    let teacher_logits = match &job.kind {
        Kind::Student {
            teacher,
            loss,
            transfer,
            ..
        } if loss.alpha > 0.0 => {
            let mut logits = cached_teacher_logits(
                &rd,
                teacher,
                &train[..labelled],
                s.eval_batch_size,
                fingerprint,
            )?;
            logits.extend(transfer.iter().flat_map(|t| t.logits.iter().cloned()));
            Some(logits)
        }
        _ => None,
    };

    std::fs::create_dir_all(rd.state()).map_err(|e| DistillError::io(rd.state(), e))?;
    let mut opt = AdamW::new(job.model.vars(), s.adamw);
    let mut pos = match position {
        Some((pos, weights, moments)) => {
            job.model.load_safetensors(&weights)?;
            let st = edgebert_quantize::checkpoint::read_safetensors(&moments).map_err(|m| {
                DistillError::Resume {
                    dir: job.dir.clone(),
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
    };

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
            let hard = labelled_cross_entropy(&out.logits, idx, labelled, &train_gold, &job.model)?;
            let loss = match &job.kind {
                Kind::Teacher => hard.ok_or_else(|| {
                    DistillError::Usage("a teacher is trained on labelled texts only".into())
                })?,
                Kind::Student {
                    teacher,
                    layers,
                    loss: w,
                    ..
                } => {
                    let mut total = match hard {
                        Some(ce) => (ce * w.beta)?,
                        None => Tensor::zeros((), candle_core::DType::F32, job.model.device())?,
                    };
                    if let Some(cache) = &teacher_logits {
                        let rows: Vec<f32> =
                            idx.iter().flat_map(|&i| cache[i].iter().copied()).collect();
                        let t = Tensor::from_vec(
                            rows,
                            (idx.len(), job.model.labels.len()),
                            job.model.device(),
                        )?;
                        total = (total + (kl_t2(&out.logits, &t, w.temperature)? * w.alpha)?)?;
                    }
                    if w.gamma > 0.0 {
                        let t_out = teacher.forward(&batch, None)?;
                        let targets = cosine_targets(layers, teacher.config.num_hidden_layers);
                        let mut cos =
                            Tensor::zeros((), candle_core::DType::F32, job.model.device())?;
                        for (j, &t_layer) in targets.iter().enumerate() {
                            let term = cosine(
                                &out.hidden[j + 1],
                                &t_out.hidden[t_layer + 1].detach(),
                                &batch.mask,
                            )?;
                            cos = (cos + term)?;
                        }
                        total = (total + (cos * (w.gamma / targets.len() as f64))?)?;
                    }
                    total
                }
            };
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
    write_json(
        &rd.run_json(),
        &RunRecord {
            kind: job.kind.name().into(),
            status: "finished".into(),
            fingerprint,
        },
    )?;
    let _ = std::fs::remove_dir_all(rd.state());
    Ok(outcome)
}

/// The cross-entropy of a batch's rows that have labels (rows `< labelled`), or `None` when it has
/// none (a batch of transfer texts only).
fn labelled_cross_entropy(
    logits: &Tensor,
    idx: &[usize],
    labelled: usize,
    gold: &[usize],
    model: &Bert,
) -> Result<Option<Tensor>> {
    let rows: Vec<u32> = (0..idx.len() as u32)
        .filter(|&r| idx[r as usize] < labelled)
        .collect();
    if rows.len() == idx.len() {
        return Ok(Some(cross_entropy(logits, &labels_of(gold, idx, model)?)?));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let of: Vec<usize> = rows.iter().map(|&r| idx[r as usize]).collect();
    let picked = logits.index_select(&Tensor::new(rows, model.device())?, 0)?;
    Ok(Some(cross_entropy(&picked, &labels_of(gold, &of, model)?)?))
}

/// The teacher layer whose output each student layer's output is pulled towards by the cosine
/// term: a student layer copied from teacher layer `l` stands for the teacher's layers up to the
/// next mapped one, so it is aligned with the output of the layer just before that (the last
/// student layer with the teacher's last): `[0, 2, 4]` of 6 → `[1, 3, 5]`.
pub fn cosine_targets(layers: &[usize], teacher_layers: usize) -> Vec<usize> {
    (0..layers.len())
        .map(|j| {
            layers
                .get(j + 1)
                .map_or(teacher_layers - 1, |&next| next - 1)
        })
        .collect()
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

fn clear(rd: &RunDir) -> Result<()> {
    for p in [rd.run_json(), rd.metrics(), rd.teacher_logits()] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(rd.state());
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("serialisable");
    write_atomic(path, &bytes, &[])?;
    Ok(())
}

/// Saves weights, moments and position under `state/step-N/`, then points `state/latest` at it
/// (atomically), then removes older ones: a kill at any moment leaves one complete checkpoint.
fn save_state(
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

type Saved = (Position, Vec<u8>, Vec<u8>);

fn load_position(rd: &RunDir, fingerprint: u32) -> Result<Option<Saved>> {
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
fn cached_teacher_logits(
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

/// A progress bar on stderr (hidden when stderr is not a terminal): the workspace's one style.
pub fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    edgebert_runtime::progress::bar(len, prefix)
}

/// Appends JSON lines to metrics.jsonl, counting them.
struct Metrics {
    file: std::fs::File,
    path: PathBuf,
    lines: usize,
}

impl Metrics {
    fn open(path: &Path, lines: usize) -> Result<Metrics> {
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

    fn write(&mut self, record: &MetricRecord) -> Result<()> {
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
fn truncate_lines(path: &Path, n: usize) -> Result<()> {
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
