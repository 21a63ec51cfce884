//! `edgebert-quantize`: host-side model preparation. Parses arguments, calls the library, prints,
//! and maps the outcome to an exit code (0 ok, 1 usage, 2 bad input or model, 3 failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgebert_quantize::calibrate::Method;
use edgebert_quantize::data::Columns;
use edgebert_quantize::dynamic::DynamicOptions;
use edgebert_quantize::job::{quantize_to_file, Annotation, Calibration, EvalSpec, QuantizeJob};
use edgebert_quantize::threshold::ThresholdJob;

use edgebert_runtime::cli::LabelSource;
use edgebert_runtime::cli::{exit, exit_code, parse_args};

#[derive(Parser)]
#[command(
    name = "edgebert-quantize",
    version,
    about = "Prepare BERT classifiers for the device."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Export a HF BERT checkpoint directory (config.json, model.safetensors, tokenizer.json) with
    /// a classification head to ONNX; an output ending in .ebm writes a bundle instead.
    Export {
        checkpoint: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Maximum sequence length recorded in a bundle.
        #[arg(long, default_value_t = 128)]
        max_len: usize,
    },
    /// Copy a bundle with provenance (teacher, data) and build-time metrics added to its manifest.
    Annotate {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// The teacher the model was distilled from.
        #[arg(long)]
        teacher: Option<String>,
        /// The training data.
        #[arg(long)]
        data: Option<String>,
        /// A measured number, `name=value` (repeatable), e.g. `test_accuracy=0.83`.
        #[arg(long, value_parser = parse_metric)]
        metric: Vec<(String, f64)>,
    },
    /// Choose a decision threshold for one label on held-out examples (the highest recall that
    /// keeps the other labels' false positives within a budget, midway between the examples on
    /// either side) and store it in a copy of the bundle, with how long texts are read:
    /// `edgebert classify` then answers by it.
    Threshold {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// The label the threshold is for, e.g. `spam`.
        #[arg(long)]
        label: String,
        /// Largest share of the other labels' examples that may be answered LABEL (0.01 = 1%).
        #[arg(long)]
        max_false_positives: f64,
        /// Held-out labelled examples (CSV/TSV/JSON lines; a dev split, never the test split).
        #[arg(long)]
        eval: PathBuf,
        #[arg(long, default_value = "text")]
        text_column: String,
        #[arg(long, default_value = "label")]
        label_column: String,
        /// How texts longer than the model are read, stored in the bundle too: head, head+tail,
        /// chunks (default: as the bundle says).
        #[arg(long)]
        long: Option<edgebert_runtime::text::LongText>,
        /// Write a Markdown report of the choice here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Quantize an ONNX model or bundle to int8: weights of every MatMul with a constant weight
    /// (per output channel) and the embedding tables (per row); activations at run time.
    Dynamic {
        #[command(flatten)]
        q: QuantizeArgs,
    },
    /// Quantize to int8 with activation scales fixed by calibration: the f32 model is run on
    /// calibration texts and each MatMul input gets a range (minmax, percentile or entropy).
    Static {
        #[command(flatten)]
        q: QuantizeArgs,
        /// Calibration texts (a few hundred lines of the kind the model will see): text lines,
        /// or the `text` column of a CSV/TSV/JSON-lines file.
        #[arg(long)]
        calibrate: PathBuf,
        #[arg(long, value_enum, default_value_t = Method::Percentile)]
        method: Method,
    },
}

/// What `dynamic` and `static` share.
#[derive(clap::Args)]
struct QuantizeArgs {
    /// An f32 bundle (.ebm) or ONNX model.
    input: PathBuf,
    /// Output bundle (.ebm) or ONNX model (.onnx).
    #[arg(short, long)]
    output: PathBuf,
    /// Also write the plain int8 ONNX here.
    #[arg(long)]
    onnx_out: Option<PathBuf>,
    /// tokenizer.json, when an ONNX input is written as a bundle.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Labels (`a,b` or a config.json with id2label), when an ONNX input is written as a bundle.
    #[arg(long)]
    labels: Option<String>,
    /// Maximum sequence length, when an ONNX input is written as a bundle.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Node names to keep in f32 (MatMul nodes or an embedding Gather/Slice), or `auto`: keep the
    /// tensors with the worst int8 error in f32, one by one, until --max-drop holds.
    #[arg(long, value_delimiter = ',')]
    keep_f32: Vec<String>,
    /// Keep the embedding tables (words, positions) in f32.
    #[arg(long)]
    keep_embeddings_f32: bool,
    /// Write the per-tensor table (and the evaluation) as Markdown here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Labelled data (CSV, TSV or JSON lines) to measure f32 and int8 accuracy on.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Column with the text in --eval data.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column with the label in --eval data (label names or ids).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Largest accuracy drop accepted, in points; above it nothing is written (exit 4).
    #[arg(long, requires = "eval", allow_negative_numbers = true)]
    max_drop: Option<f64>,
    /// Keep only the word pieces this corpus uses (plus special tokens and single
    /// characters): text lines, or the `text` column of a CSV/TSV/JSON-lines file.
    #[arg(long)]
    prune_vocab: Option<PathBuf>,
    /// Cut only the word pieces the tokenizer can never produce (BERT's `[unusedN]`, `##` forms
    /// of punctuation and CJK characters): every text tokenizes as before, the table shrinks.
    /// Token ids are renumbered, so a plain ONNX output gets its own NAME.tokenizer.json.
    #[arg(long, conflicts_with = "prune_vocab")]
    trim_vocab: bool,
}

/// Exit code when the int8 model lost more accuracy than --max-drop allows.
const ACCURACY_GUARD: u8 = 4;

fn parse_metric(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    Ok((name.to_string(), value))
}

fn main() -> ExitCode {
    edgebert_runtime::contain::install_panic_hook();
    let cli: Cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    let result = match cli.command {
        Command::Export {
            checkpoint,
            output,
            max_len,
        } => edgebert_quantize::export_to_file(&checkpoint, &output, max_len).map(|()| output),
        Command::Annotate {
            input,
            output,
            teacher,
            data,
            metric,
        } => {
            let a = Annotation {
                teacher,
                data,
                metrics: metric,
            };
            edgebert_quantize::job::annotate(&input, &output, &a).map(|()| output)
        }
        Command::Threshold {
            input,
            output,
            label,
            max_false_positives,
            eval,
            text_column,
            label_column,
            long,
            report,
        } => {
            let job = ThresholdJob {
                input,
                output: output.clone(),
                label,
                max_false_positive_rate: max_false_positives,
                data: eval,
                columns: Columns {
                    text: text_column,
                    label: label_column,
                },
                long,
                report,
            };
            edgebert_quantize::threshold::run(&job).map(|o| {
                eprintln!(
                    "threshold {}: recall {:.2}%, false positives {} ({:.2}%)",
                    o.threshold,
                    100.0 * o.recall,
                    o.false_positives,
                    100.0 * o.false_positive_rate
                );
                output
            })
        }
        Command::Dynamic { q } => q.run(None),
        Command::Static {
            q,
            calibrate,
            method,
        } => q.run(Some(Calibration {
            texts: calibrate,
            method,
        })),
    };
    match result {
        Ok(output) => {
            eprintln!("wrote {}", output.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match &e {
                edgebert_quantize::Error::Runtime(inner) => exit_code(inner),
                edgebert_quantize::Error::Usage(_) => exit::USAGE,
                edgebert_quantize::Error::AccuracyDrop { .. } => ACCURACY_GUARD,
                edgebert_quantize::Error::Io { source, .. }
                    if source.kind() != std::io::ErrorKind::NotFound =>
                {
                    exit::FAILURE
                }
                _ => exit::BAD_INPUT,
            })
        }
    }
}

impl QuantizeArgs {
    fn run(self, calibration: Option<Calibration>) -> Result<PathBuf, edgebert_quantize::Error> {
        let options = DynamicOptions {
            keep_f32: self.keep_f32,
            keep_embeddings_f32: self.keep_embeddings_f32,
        };
        let eval = self.eval.map(|data| EvalSpec {
            data,
            columns: Columns {
                text: self.text_column,
                label: self.label_column,
            },
            max_drop: self.max_drop,
        });
        let job = QuantizeJob {
            input: self.input,
            output: self.output,
            onnx_out: self.onnx_out,
            tokenizer: self.tokenizer,
            labels: None,
            max_len: self.max_len,
            options,
            eval,
            prune_vocab: self.prune_vocab,
            trim_vocab: self.trim_vocab,
            calibration,
        };
        quantize(job, self.labels, self.report)
    }
}

fn quantize(
    mut job: QuantizeJob,
    labels: Option<String>,
    report: Option<PathBuf>,
) -> Result<PathBuf, edgebert_quantize::Error> {
    if let Some(labels) = labels {
        job.labels = Some(LabelSource::parse(&labels).resolve()?);
    }
    let summary = quantize_to_file(&job)?;
    let table = summary.markdown();
    print!("{table}");
    if let Some(path) = report {
        let inputs = [job.input.as_path(), job.output.as_path()];
        edgebert_runtime::fsutil::write_atomic(&path, table.as_bytes(), &inputs)?;
        // The chart sits next to the report: quantization.md → quantization.png / .svg.
        let plots = summary
            .plot(&path.with_extension(""))
            .map_err(|e| edgebert_quantize::Error::Usage(e.to_string()))?;
        eprintln!("wrote {}", path.display());
        for p in plots {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(job.output)
}
