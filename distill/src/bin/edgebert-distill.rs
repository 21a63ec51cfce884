//! `edgebert-distill`: fine-tune a teacher, distil a student, evaluate, export. Parses arguments,
//! calls the library, prints, and exits 0 ok, 1 usage, 2 bad input (data, checkpoint), 3 failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use edgebert_distill::data::DataSpec;
use edgebert_distill::jobs::{self, DeviceChoice, EvalModel, TrainArgs, Which};
use edgebert_distill::optim::AdamWConfig;
use edgebert_distill::train::{Outcome, Settings};
use edgebert_distill::transfer::{self, Header, Shard};
use edgebert_distill::{DistillError, LossWeights};
use edgebert_runtime::cli::parse_args;
use edgebert_runtime::text::LongText;

#[derive(Parser)]
#[command(
    name = "edgebert-distill",
    version,
    about = "Fine-tune a BERT teacher and distil a smaller student from it (on the host)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Add a classification head to a BERT checkpoint (BertModel or BertForSequenceClassification)
    /// and fine-tune it on labelled texts; writes an HF checkpoint directory.
    FinetuneTeacher {
        /// Checkpoint directory: config.json, model.safetensors, tokenizer.json.
        teacher: PathBuf,
        /// Label order, e.g. `negative,positive` (default: the data's labels, sorted).
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        #[command(flatten)]
        train: TrainOpts,
    },
    /// Make a student from a fine-tuned teacher's layers and distil it on the data.
    Student {
        /// The fine-tuned teacher's checkpoint directory.
        teacher: PathBuf,
        /// Teacher layers the student keeps, e.g. `0,3,5` (default: every other one from 0).
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<usize>>,
        /// Weight of KL(teacher/T ‖ student/T)·T².
        #[arg(long, default_value_t = 0.5)]
        alpha: f64,
        /// Weight of the cross-entropy with the labels.
        #[arg(long, default_value_t = 0.5)]
        beta: f64,
        /// Weight of (1 − cos) between student and teacher hidden states.
        #[arg(long, default_value_t = 0.0)]
        gamma: f64,
        /// Softmax temperature of the soft targets.
        #[arg(long, default_value_t = 2.0)]
        temperature: f64,
        /// A transfer set: unlabelled texts, one per line, learnt from the teacher's soft
        /// targets alone (α·KL·T²) beside the labelled data.
        #[arg(long)]
        transfer: Option<PathBuf>,
        /// The teacher's logits on --transfer (teacher-logits, merge-logits); without it they are
        /// computed first, here.
        #[arg(long, requires = "transfer")]
        transfer_logits: Option<PathBuf>,
        #[command(flatten)]
        train: TrainOpts,
    },
    /// Accuracy, macro-F1 and confusion matrix of a checkpoint directory, an ONNX file or a
    /// bundle (the last two through the runtime, as on the device).
    Evaluate {
        model: PathBuf,
        #[command(flatten)]
        data: DataOpts,
        /// Which rows: all of the file, or one split (the same split training made).
        #[arg(long, value_enum, default_value_t = Which::All)]
        split: Which,
        /// For an ONNX file: its tokenizer.json (default: next to it).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// For an ONNX file: labels `a,b` or a config.json (default: config.json next to it).
        #[arg(long)]
        model_labels: Option<String>,
        #[arg(long, default_value_t = 128)]
        max_len: usize,
        /// A text longer than the model: `chunks` (windows, logits averaged), `head+tail` or
        /// `head`, as `edgebert --long` (default: as a bundle says, else chunks).
        #[arg(long)]
        long: Option<LongText>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the train/dev/test split that training makes of the data as DIR/{train,dev,test}.csv
    /// (columns text,label), e.g. for edgebert-quantize --eval.
    Split {
        #[command(flatten)]
        data: DataOpts,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Training speed (examples/s) on synthetic batches of one length, and the share of a step
    /// spent in matrix products. A checkpoint without a head gets a random one.
    BenchTrain {
        checkpoint: PathBuf,
        /// Layers kept (default: every other one, the student); `--layers 0,1,2,3,4,5` for a
        /// 6-layer teacher.
        #[arg(long, value_delimiter = ',')]
        layers: Option<Vec<usize>>,
        #[arg(long, default_value_t = 64)]
        seq: usize,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Timed steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        #[arg(long)]
        threads: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The teacher's logits on unlabelled texts (one per line): the soft targets of a transfer
    /// set. `--shard K/N` computes every N-th line from line K only, one job per machine; then
    /// `merge-logits` joins the N files (docs/transfer-logits.md).
    TeacherLogits {
        /// The fine-tuned teacher checkpoint.
        teacher: PathBuf,
        /// Texts, one per line.
        #[arg(long)]
        texts: PathBuf,
        #[arg(long, default_value = "0/1")]
        shard: Shard,
        /// Texts are cut at this many tokens, as in training.
        #[arg(long, default_value_t = 128)]
        max_len: usize,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Join the shards of one `teacher-logits` pass into one file, checking that every shard is
    /// there once and that all are of the same teacher, texts and settings.
    MergeLogits {
        #[arg(required = true)]
        shards: Vec<PathBuf>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// A labelled CSV (text,label,split,group,date) from folders of raw e-mails, each read as
    /// `edgebert classify --email` reads it; split by date within each folder (oldest 80%
    /// train, newest 10% test).
    Emails {
        /// `LABEL=FOLDER`, e.g. `spam=assets/data/spamassassin/spam-1` (repeatable).
        #[arg(required = true, value_parser = parse_pair)]
        sources: Vec<(String, String)>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Export a checkpoint to ONNX f32 (or a bundle when the output ends in .ebm), ready for
    /// edgebert-quantize.
    Export {
        checkpoint: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 128)]
        max_len: usize,
    },
}

#[derive(Args, Clone)]
struct DataOpts {
    /// Labelled texts: CSV, TSV or JSON lines.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Keep rows sharing this column's value in one split (e.g. movie_name).
    #[arg(long)]
    group_by: Option<String>,
    /// A column saying train/dev/test (no split is made then).
    #[arg(long)]
    split_column: Option<String>,
    /// Rename a label: `fresh=positive` (repeatable).
    #[arg(long = "label-map", value_parser = parse_pair)]
    label_map: Vec<(String, String)>,
    /// Leave out rows with this label (after renaming; repeatable).
    #[arg(long = "drop-label")]
    drop_label: Vec<String>,
    /// Seed of the train/dev/test split.
    #[arg(long, default_value_t = 13)]
    split_seed: u64,
}

#[derive(Args, Clone)]
struct TrainOpts {
    #[command(flatten)]
    data: DataOpts,
    /// Run directory; the trained model is written there as an HF checkpoint.
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Share of steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Epochs without a better dev accuracy before stopping early.
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Save a checkpoint every N steps (and at every epoch end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: usize,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    #[arg(long, default_value_t = 13)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Continue the unfinished run in the output directory.
    #[arg(long)]
    resume: bool,
    /// Start over even if the output directory holds a run.
    #[arg(long)]
    force: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| format!("`{s}`: expected FROM=TO"))
}

impl DataOpts {
    fn spec(&self) -> DataSpec {
        DataSpec {
            path: self.data.clone(),
            text_column: self.text_column.clone(),
            label_column: self.label_column.clone(),
            group_by: self.group_by.clone(),
            split_column: self.split_column.clone(),
            rename: self.label_map.clone(),
            drop: self.drop_label.clone(),
            seed: self.split_seed,
        }
    }
}

impl TrainOpts {
    fn args(&self) -> TrainArgs {
        if let Some(n) = self.threads {
            // candle and gemm size their pools from this; read once, before the first op.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        TrainArgs {
            data: self.data.spec(),
            settings: Settings {
                epochs: self.epochs,
                batch_size: self.batch_size,
                lr: self.lr,
                warmup: self.warmup,
                adamw: AdamWConfig {
                    weight_decay: self.weight_decay,
                    clip_norm: self.clip,
                    ..Default::default()
                },
                patience: self.patience,
                checkpoint_every: self.checkpoint_every,
                seed: self.seed,
                max_len: self.max_len,
                ..Default::default()
            },
            device: self.device,
            out: self.output.clone(),
            resume: self.resume,
            force: self.force,
            stop_after: None,
        }
    }
}

fn print_outcome(o: &Outcome, out: &std::path::Path) {
    let pct = |s: &Option<edgebert_distill::eval::Scores>| {
        s.as_ref()
            .map_or("-".into(), |s| format!("{:.2}%", s.accuracy * 100.0))
    };
    println!(
        "done in {:.1} min ({} steps, {:.1} ex/s): dev {}, test {}{}",
        o.seconds / 60.0,
        o.steps,
        o.examples_per_second,
        pct(&o.dev),
        pct(&o.test),
        o.teacher_test.as_ref().map_or(String::new(), |t| format!(
            ", teacher test {:.2}%",
            t.accuracy * 100.0
        ))
    );
    println!("wrote {} (report.md, training.png)", out.display());
}

fn main() -> ExitCode {
    edgebert_runtime::contain::install_panic_hook();
    edgebert_distill::keep_freed_memory();
    let cli: Cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let result: Result<(), DistillError> = match cli.command {
        Command::FinetuneTeacher {
            teacher,
            labels,
            train,
        } => jobs::finetune_teacher(&teacher, labels, train.args())
            .map(|o| print_outcome(&o, &train.output)),
        Command::Student {
            teacher,
            layers,
            alpha,
            beta,
            gamma,
            temperature,
            transfer,
            transfer_logits,
            train,
        } => {
            let loss = LossWeights {
                alpha,
                beta,
                gamma,
                temperature,
            };
            let transfer = transfer.map(|texts| jobs::TransferArgs {
                texts,
                logits: transfer_logits,
            });
            jobs::distil_student(&teacher, layers, loss, transfer, train.args())
                .map(|o| print_outcome(&o, &train.output))
        }
        Command::Evaluate {
            model,
            data,
            split,
            tokenizer,
            model_labels,
            max_len,
            long,
            device,
            json,
        } => {
            let m = EvalModel {
                path: model,
                tokenizer,
                labels: model_labels,
                max_len,
                long,
            };
            jobs::evaluate(&m, &data.spec(), split, device).map(|(labels, s)| {
                if json {
                    println!("{}", serde_json::json!({ "labels": labels, "scores": s }));
                } else {
                    println!(
                        "accuracy {:.2}% (± {:.2}, 95% CI), macro-F1 {:.4}, {} examples\n",
                        s.accuracy * 100.0,
                        s.ci95_points(),
                        s.macro_f1,
                        s.examples
                    );
                    print!("{}", s.confusion_markdown(&labels));
                }
            })
        }
        Command::Split { data, output } => jobs::write_splits(&data.spec(), &output).map(|s| {
            println!(
                "wrote {}/{{train,dev,test}}.csv: {} / {} / {} rows, labels {} ({} rows dropped)",
                output.display(),
                s.train.len(),
                s.dev.len(),
                s.test.len(),
                s.labels.join(", "),
                s.dropped
            )
        }),
        Command::BenchTrain {
            checkpoint,
            layers,
            seq,
            batch_size,
            steps,
            device,
            threads,
            json,
        } => {
            if let Some(n) = threads {
                std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            }
            let b = edgebert_distill::bench::BenchTrain {
                layers,
                seq,
                batch: batch_size,
                steps: steps.max(1),
            };
            device
                .device()
                .and_then(|d| edgebert_distill::bench::bench_train(&checkpoint, &b, &d))
                .map(|r| {
                    if json {
                        println!("{}", serde_json::to_string(&r).expect("serialisable"));
                    } else {
                        println!(
                            "{} layers, {} parameters, batch {} × {} tokens: {:.1} examples/s \
                             (step {:.0} ms: forward {:.0}, backward {:.0}, optimizer {:.0}; \
                             matmul ≈ {:.0} ms = {:.0}%)",
                            r.layers,
                            r.parameters,
                            r.batch,
                            r.seq,
                            r.examples_per_second,
                            r.step_ms,
                            r.forward_ms,
                            r.backward_ms,
                            r.optimizer_ms,
                            r.matmul_ms,
                            r.matmul_share * 100.0
                        );
                    }
                })
        }
        Command::TeacherLogits {
            teacher,
            texts,
            shard,
            max_len,
            batch_size,
            device,
            output,
        } => device
            .device()
            .and_then(|d| {
                transfer::teacher_logits(&teacher, &texts, shard, max_len, batch_size, &d, &output)
            })
            .map(|h| print_logits(&h, &output)),
        Command::Emails { sources, output } => {
            let sources: Vec<(String, PathBuf)> = sources
                .into_iter()
                .map(|(label, dir)| (label, PathBuf::from(dir)))
                .collect();
            edgebert_distill::emails::email_corpus(&sources, &output).map(|c| {
                println!("wrote {}", output.display());
                for ((split, label), n) in &c.counts {
                    println!("  {split:<5} {label:<10} {n:>6}");
                }
                println!(
                    "  {} duplicates left out, {} files not e-mails",
                    c.duplicates, c.unreadable
                );
            })
        }
        Command::MergeLogits { shards, output } => {
            transfer::merge(&shards, &output).map(|h| print_logits(&h, &output))
        }
        Command::Export {
            checkpoint,
            output,
            max_len,
        } => edgebert_quantize::export_to_file(&checkpoint, &output, max_len)
            .map(|()| println!("wrote {}", output.display()))
            .map_err(DistillError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn print_logits(h: &Header, output: &std::path::Path) {
    let shard = match h.shard {
        Some(k) => format!("shard {k}/{}", h.shards),
        None => format!("{} shards merged", h.shards),
    };
    println!(
        "wrote {} ({shard} of {} text lines; teacher {}, texts {})",
        output.display(),
        h.lines,
        h.teacher,
        h.texts
    );
}
