//! The commands of `edgebert-distill` as library calls: what the binary runs after parsing.

use std::path::{Path, PathBuf};

use candle_core::Device;
use edgebert_quantize::checkpoint::Checkpoint;
use edgebert_runtime::cli::{LabelSource, ModelSource};
use edgebert_runtime::text::LongText;
use edgebert_runtime::ClassifierOptions;

use crate::data::{self, DataSpec, Row, Splits};
use crate::error::{DistillError, Result};
use crate::eval::Scores;
use crate::loss::LossWeights;
use crate::model::{every_other_layer, Bert};
use crate::train::{progress_bar, run, Job, Kind, Outcome, Settings};

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A CUDA GPU when built with `--features cuda` and one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl DeviceChoice {
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            DeviceChoice::Cuda if !candle_core::utils::cuda_is_available() => Err(DistillError::Usage(
                "--device cuda: this build has no CUDA support or no GPU was found (build with --features cuda)".into(),
            )),
            DeviceChoice::Cuda => Ok(Device::new_cuda(0)?),
        }
    }
}

/// What every training command shares.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub data: DataSpec,
    pub settings: Settings,
    pub device: DeviceChoice,
    pub out: PathBuf,
    pub resume: bool,
    pub force: bool,
    pub stop_after: Option<usize>,
}

/// `finetune-teacher`: a classification head on the teacher, fine-tuned on the data. `labels`
/// fixes the label order; by default the data's labels, sorted.
pub fn finetune_teacher(
    teacher: &Path,
    labels: Option<Vec<String>>,
    args: TrainArgs,
) -> Result<Outcome> {
    let device = args.device.device()?;
    let ckpt = Checkpoint::open(teacher)?;
    let splits = data::load(&args.data, labels.as_deref())?;
    let model = Bert::from_checkpoint(&ckpt, &splits.labels, args.settings.seed, &device)?;
    let inputs = checkpoint_files(teacher, &args.data.path);
    run(Job {
        dir: args.out,
        model,
        tokenizer_json: ckpt.tokenizer_json,
        data: splits,
        settings: args.settings,
        kind: Kind::Teacher,
        resume: args.resume,
        force: args.force,
        source: teacher.display().to_string(),
        inputs,
        stop_after: args.stop_after,
    })
}

/// `student --transfer`: unlabelled texts, one per line, and the teacher's logits on them
/// (`teacher-logits`, `merge-logits`); without `logits`, that pass runs first, on this machine,
/// into the run directory's `transfer-logits.jsonl` (reused while it matches).
#[derive(Debug, Clone)]
pub struct TransferArgs {
    pub texts: PathBuf,
    pub logits: Option<PathBuf>,
}

/// `student`: the student made from the fine-tuned teacher's `layers` (default every other one),
/// distilled on the data (and on a transfer set's soft targets).
pub fn distil_student(
    teacher: &Path,
    layers: Option<Vec<usize>>,
    loss: LossWeights,
    transfer: Option<TransferArgs>,
    args: TrainArgs,
) -> Result<Outcome> {
    let device = args.device.device()?;
    let (teacher_model, tokenizer_json) = Bert::open(teacher, &device)?;
    let layers =
        layers.unwrap_or_else(|| every_other_layer(teacher_model.config.num_hidden_layers));
    let student = teacher_model.student(&layers)?;
    let splits = data::load(&args.data, Some(&teacher_model.labels))?;
    let mut inputs = checkpoint_files(teacher, &args.data.path);
    let transfer = match transfer {
        None => None,
        Some(_) if loss.alpha <= 0.0 => return Err(DistillError::Usage(
            "--transfer texts are learnt from the teacher's soft targets only: give --alpha > 0"
                .into(),
        )),
        Some(t) => {
            inputs.push(t.texts.clone());
            let max_len = args.settings.max_len;
            let encoder = edgebert_runtime::text::TextEncoder::from_json(&tokenizer_json, max_len)
                .map_err(edgebert_runtime::Error::from)?;
            let load = |file: &Path| {
                crate::transfer::training_set(
                    file,
                    &t.texts,
                    teacher,
                    &teacher_model.labels,
                    &encoder,
                    max_len,
                )
            };
            Some(match &t.logits {
                Some(file) => {
                    inputs.push(file.clone());
                    load(file)?
                }
                None => {
                    let file = args.out.join("transfer-logits.jsonl");
                    match load(&file) {
                        Ok(set) => set,
                        Err(_) => {
                            std::fs::create_dir_all(&args.out)
                                .map_err(|e| DistillError::io(&args.out, e))?;
                            crate::transfer::teacher_logits(
                                teacher,
                                &t.texts,
                                crate::transfer::Shard::ALL,
                                max_len,
                                args.settings.eval_batch_size,
                                &device,
                                &file,
                            )?;
                            load(&file)?
                        }
                    }
                }
            })
        }
    };
    run(Job {
        dir: args.out,
        model: student,
        tokenizer_json,
        data: splits,
        settings: args.settings,
        kind: Kind::Student {
            teacher: Box::new(teacher_model),
            layers,
            loss,
            transfer,
        },
        resume: args.resume,
        force: args.force,
        source: teacher.display().to_string(),
        inputs,
        stop_after: args.stop_after,
    })
}

fn checkpoint_files(dir: &Path, data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|n| dir.join(n))
        .collect();
    v.push(dir.to_path_buf());
    v.push(data.to_path_buf());
    v
}

/// Which rows `evaluate` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Which {
    /// Every row of the file.
    #[default]
    All,
    Train,
    Dev,
    Test,
}

/// A model to evaluate: a checkpoint directory (candle), or an ONNX file or bundle (the runtime).
#[derive(Debug, Clone)]
pub struct EvalModel {
    pub path: PathBuf,
    /// For an ONNX file: its tokenizer.json (default: next to it).
    pub tokenizer: Option<PathBuf>,
    /// For an ONNX file: labels (default: config.json next to it).
    pub labels: Option<String>,
    pub max_len: usize,
    /// How a text longer than `max_len` is read (as the runtime's `--long`; none: as a bundle
    /// says, else chunks).
    pub long: Option<LongText>,
}

/// `evaluate`: scores on the chosen rows; returns the labels and the scores.
pub fn evaluate(
    model: &EvalModel,
    spec: &DataSpec,
    which: Which,
    device: DeviceChoice,
) -> Result<(Vec<String>, Scores)> {
    let path = &model.path;
    if path.is_dir() {
        let (bert, tokenizer_json) = Bert::open(path, &device.device()?)?;
        let rows = pick(&data::load(spec, Some(&bert.labels))?, which);
        let encoder =
            edgebert_runtime::text::TextEncoder::from_json(&tokenizer_json, model.max_len)
                .map_err(edgebert_runtime::Error::from)?;
        let windows = data::tokenize_windows(&encoder, &rows, model.long.unwrap_or_default())?;
        let gold: Vec<usize> = rows.iter().map(|r| r.label).collect();
        let bar = progress_bar(windows.tokens.len() as u64, "evaluating");
        let logits = crate::eval::logits(&bert, &windows.tokens, 64, &bar)?;
        bar.finish_and_clear();
        let predicted: Vec<Option<usize>> =
            crate::eval::averaged(&logits, &windows.owners, rows.len())
                .iter()
                .map(|l| Some(crate::eval::argmax(l)))
                .collect();
        let scores = Scores::new(&gold, &predicted, bert.labels.len());
        return Ok((bert.labels.clone(), scores));
    }
    let source = if path.extension().is_some_and(|e| e == "onnx") {
        let dir = path.parent().unwrap_or(Path::new("."));
        ModelSource::Parts {
            onnx: path.clone(),
            tokenizer: model
                .tokenizer
                .clone()
                .unwrap_or_else(|| dir.join("tokenizer.json")),
            labels: LabelSource::parse(
                model
                    .labels
                    .as_deref()
                    .unwrap_or(&dir.join("config.json").to_string_lossy()),
            ),
            max_len: model.max_len,
        }
    } else {
        ModelSource::Bundle(path.clone())
    };
    let mut classifier = source.load(ClassifierOptions {
        long: model.long,
        ..ClassifierOptions::default()
    })?;
    let labels = classifier.labels().to_vec();
    let rows = pick(&data::load(spec, Some(&labels))?, which);
    let examples: Vec<edgebert_quantize::data::Example> = rows
        .iter()
        .map(|r| edgebert_quantize::data::Example {
            text: r.text.clone(),
            label: r.label,
        })
        .collect();
    let bar = progress_bar(rows.len() as u64, "evaluating");
    let e = edgebert_quantize::eval::evaluate(&mut classifier, &examples, &bar)?;
    bar.finish_and_clear();
    let gold: Vec<usize> = rows.iter().map(|r| r.label).collect();
    Ok((
        labels.clone(),
        Scores::new(&gold, &e.predictions, labels.len()),
    ))
}

/// `split`: writes the train/dev/test split training makes of `spec` as `DIR/{train,dev,test}.csv`
/// (columns `text,label`, label names), e.g. for `edgebert-quantize --eval`.
pub fn write_splits(spec: &DataSpec, dir: &Path) -> Result<Splits> {
    let splits = data::load(spec, None)?;
    if edgebert_runtime::fsutil::same_file(dir, &spec.path) {
        return Err(DistillError::Usage(format!(
            "{} is the data file",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| DistillError::io(dir, e))?;
    for (name, rows) in [
        ("train", &splits.train),
        ("dev", &splits.dev),
        ("test", &splits.test),
    ] {
        let path = dir.join(format!("{name}.csv"));
        let mut w = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| DistillError::Usage(format!("{}: {e}", path.display()));
        w.write_record(["text", "label"]).map_err(io)?;
        for r in rows.iter() {
            w.write_record([r.text.as_str(), splits.labels[r.label].as_str()])
                .map_err(io)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| DistillError::Usage(format!("{}: {e}", path.display())))?;
        edgebert_runtime::fsutil::write_atomic(&path, &bytes, &[spec.path.as_path()])?;
    }
    Ok(splits)
}

fn pick(s: &Splits, which: Which) -> Vec<Row> {
    match which {
        Which::All => [s.train.clone(), s.dev.clone(), s.test.clone()].concat(),
        Which::Train => s.train.clone(),
        Which::Dev => s.dev.clone(),
        Which::Test => s.test.clone(),
    }
}

impl DistillError {
    /// The process exit code: 1 usage, 2 bad input (data, checkpoint, model), 3 failure.
    pub fn exit_code(&self) -> u8 {
        use edgebert_runtime::cli::exit;
        match self {
            DistillError::Usage(_)
            | DistillError::Finished { .. }
            | DistillError::Resume { .. }
            | DistillError::NoSuchLayer { .. }
            | DistillError::BadLayerMap(_) => exit::USAGE,
            DistillError::Checkpoint(edgebert_quantize::Error::Io { .. }) => exit::BAD_INPUT,
            DistillError::Checkpoint(_)
            | DistillError::Data(_)
            | DistillError::BadData { .. }
            | DistillError::MissingTensor { .. }
            | DistillError::BadShape { .. }
            | DistillError::TokenizerMismatch { .. } => exit::BAD_INPUT,
            DistillError::Runtime(e) => edgebert_runtime::cli::exit_code(e),
            DistillError::Io { .. } | DistillError::Candle(_) | DistillError::Plot { .. } => {
                exit::FAILURE
            }
        }
    }
}
