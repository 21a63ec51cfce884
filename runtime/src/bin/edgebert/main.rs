//! `edgebert`: classify text on the device. Parses the arguments, hands each command to its
//! module (which calls the library), prints errors as one line and maps them to exit codes
//! (README: exit codes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use edgebert_runtime::cli::{self, exit, exit_code, parse_args, LabelSource, ModelSource};
use edgebert_runtime::manifest::Decision;
use edgebert_runtime::serve::Limits;
use edgebert_runtime::text::LongText;
use edgebert_runtime::{Classifier, ClassifierOptions, Error};

mod bench;
mod board;
mod classify;
mod compile;
mod info;
mod pack;
mod serve;

/// `serve --socket`'s bounds (docs/reliability.md); the defaults fit a 512 MB board.
#[derive(Args)]
struct SocketArgs {
    /// Clients served at once; one more gets an error line and is closed.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Longest request line in bytes; longer ones are answered with an error.
    #[arg(long, default_value_t = Limits::default().max_request_bytes)]
    max_request_bytes: usize,
    /// Seconds a client may take to finish a request line, or to take its waiting answers.
    #[arg(long, default_value_t = Limits::default().read_timeout.as_secs_f64())]
    io_timeout: f64,
    /// Seconds a connection may stay silent before it is closed.
    #[arg(long, default_value_t = Limits::default().idle_timeout.as_secs_f64())]
    idle_timeout: f64,
    /// The socket file's permissions, in octal (600: the owner only; 660: the group too).
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    socket_mode: u32,
}

impl SocketArgs {
    fn limits(&self) -> Limits {
        let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.001, 1e6));
        Limits {
            max_connections: self.max_connections.max(1),
            max_request_bytes: self.max_request_bytes.max(1),
            read_timeout: secs(self.io_timeout),
            write_timeout: secs(self.io_timeout),
            idle_timeout: secs(self.idle_timeout),
            socket_mode: self.socket_mode,
            ..Limits::default()
        }
    }
}

fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "`{s}` is not an octal file mode such as 600 or 660"
        )),
    }
}

#[derive(Parser)]
#[command(
    name = "edgebert",
    version,
    about = "Classify text on the device with a distilled, quantized BERT."
)]
struct Cli {
    /// Threads for matrix products (default: the board profile's, else the cores, at most 4).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// The board, when detection is wrong or impossible: pi-zero-2w, pi3, pi4, pi5.
    #[arg(long, global = true)]
    board: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify texts given as arguments, in a file or on stdin (one per line).
    Classify {
        /// Texts to classify; none: read --file or stdin.
        texts: Vec<String>,
        /// Read texts from this file, one per line (`-`: stdin).
        #[arg(long, conflicts_with = "email")]
        file: Option<PathBuf>,
        /// The arguments are raw e-mail files (`-` or none: one on stdin), each read as its
        /// subject and body text (MIME, encodings and HTML decoded), e.g. for a spam model.
        #[arg(long)]
        email: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Print the K most probable labels.
        #[arg(long, default_value_t = 1)]
        top_k: usize,
        /// Texts run together per length bucket.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gpio: GpioArgs,
    },
    /// Answer JSON-lines requests on stdin/stdout, or on a Unix socket.
    Serve {
        /// Listen on this Unix socket instead of stdin/stdout.
        #[arg(long)]
        socket: Option<PathBuf>,
        #[command(flatten)]
        limits: SocketArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        gpio: GpioArgs,
    },
    /// Show the detected board, the threads and CPU features used, and whether the model fits.
    Board {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest.
    Info {
        /// A bundle (default: the built-in model).
        bundle: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measure latency, throughput, cold start and peak memory.
    Bench {
        /// A bundle (default: the built-in model).
        bundle: Option<PathBuf>,
        /// Sequence lengths to time, in tokens.
        #[arg(long, value_delimiter = ',', default_values_t = [16, 32, 64, 128])]
        lengths: Vec<usize>,
        /// Runs per length.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Time every operator of the plan instead: where the time goes, per length.
        #[arg(long)]
        profile: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compile a bundle: store tract's analysed graph instead of the ONNX, so that it loads
    /// faster (the compiled form is tied to this edgebert's tract version; keep the original).
    Compile {
        /// The bundle with an ONNX graph.
        bundle: PathBuf,
        /// Output bundle (.ebm).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Make a bundle from an ONNX model, a tokenizer.json and labels.
    Pack {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        tokenizer: PathBuf,
        /// Label names in logit order (`negative,positive`), or a HF config.json with id2label.
        #[arg(long)]
        labels: String,
        /// Output bundle (.ebm).
        #[arg(short, long)]
        output: PathBuf,
        /// Task name recorded in the manifest.
        #[arg(long, default_value = "classification")]
        task: String,
        /// Longest token sequence the model is run with.
        #[arg(long, default_value_t = 128)]
        max_len: usize,
    },
}

#[derive(Args)]
struct ModelArgs {
    /// A bundle (.ebm), or an ONNX model together with --tokenizer and --labels.
    #[arg(long)]
    model: Option<PathBuf>,
    /// tokenizer.json, for a plain ONNX model.
    #[arg(long, requires = "model")]
    tokenizer: Option<PathBuf>,
    /// Label names (`negative,positive`) or a config.json with id2label, for a plain ONNX model.
    #[arg(long, requires = "tokenizer")]
    labels: Option<String>,
    /// Maximum sequence length, for a plain ONNX model.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// A text longer than the model's maximum: read `chunks` (all of it, in windows whose logits
    /// are averaged), `head+tail` (its start and end) or `head` (its start). Default: as the
    /// bundle says (`edgebert info`), else chunks.
    #[arg(long)]
    long: Option<LongText>,
    /// Answer LABEL when its probability is at least P, else the most probable other label
    /// (e.g. `spam=0.99` for fewer false alarms). Default: as the bundle says, else the most
    /// probable label.
    #[arg(long, value_name = "LABEL=P")]
    threshold: Option<Decision>,
}

impl ModelArgs {
    /// `base` with this model's reading options.
    fn options(&self, base: ClassifierOptions) -> ClassifierOptions {
        ClassifierOptions {
            long: self.long,
            decision: self.threshold.clone(),
            ..base
        }
    }
}

#[derive(Args)]
struct GpioArgs {
    /// Light a GPIO line for a label's answers: `--pin positive=27 --pin negative=17`.
    #[arg(long = "pin", value_name = "LABEL=LINE", value_parser = cli::parse_pin)]
    pins: Vec<(String, u32)>,
    /// A GPIO line held high while a text is processed.
    #[arg(long, value_name = "LINE")]
    busy_pin: Option<u32>,
    /// The GPIO character device.
    #[arg(long, default_value = "/dev/gpiochip0")]
    gpio_chip: PathBuf,
    /// Light a label's pin only when its probability is at least this.
    #[arg(long, default_value_t = 0.0)]
    min_prob: f32,
}

/// How a command ended, when not with success.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: exit_code(&e),
            message: e.to_string(),
        }
    }
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    pub(crate) fn io(e: std::io::Error) -> Self {
        Failure {
            code: exit::FAILURE,
            message: e.to_string(),
        }
    }
}

fn main() -> ExitCode {
    edgebert_runtime::contain::install_panic_hook();
    let cli: Cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let detection =
        edgebert_boards::detect(cli.board.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
    let threads = cli.threads.unwrap_or_else(|| detection.threads());
    if threads == 0 {
        return Err(Failure::usage("--threads must be at least 1"));
    }
    let options = ClassifierOptions {
        threads,
        ..ClassifierOptions::default()
    };
    match cli.command {
        Command::Classify {
            texts,
            file,
            email,
            json,
            top_k,
            batch_size,
            model,
            gpio,
        } => {
            let options = ClassifierOptions {
                batch_size: batch_size.max(1),
                ..model.options(options)
            };
            let source = model_source(model)?;
            if !texts.is_empty() && file.is_some() {
                return Err(Failure::usage(
                    "give texts as arguments or --file, not both",
                ));
            }
            let mut classifier = source.load(options)?;
            attach_pins(&mut classifier, &gpio)?;
            classify::run(&mut classifier, texts, file, email, json, top_k.max(1))
        }
        Command::Serve {
            socket,
            limits,
            model,
            gpio,
        } => {
            let options = model.options(options);
            let mut classifier = model_source(model)?.load(options)?;
            attach_pins(&mut classifier, &gpio)?;
            serve::run(classifier, socket, limits.limits())
        }
        Command::Board { model, json } => {
            let options = model.options(options);
            let classifier = model_source(model)?.load(options)?;
            board::run(classifier, &detection, threads, json)
        }
        Command::Info { bundle, json } => info::run(bundle, json),
        Command::Bench {
            bundle,
            lengths,
            iterations,
            profile,
            json,
        } => bench::run(bundle, options, &lengths, iterations, profile, json),
        Command::Compile { bundle, output } => compile::run(&bundle, &output, options),
        Command::Pack {
            model,
            tokenizer,
            labels,
            output,
            task,
            max_len,
        } => {
            let source = ModelSource::Parts {
                onnx: model,
                tokenizer,
                labels: LabelSource::parse(&labels),
                max_len,
            };
            pack::run(source, task, &output, options)
        }
    }
}

/// Opens the `--pin`/`--busy-pin` lines and lets them show the classifier's answers.
fn attach_pins(classifier: &mut Classifier, gpio: &GpioArgs) -> Result<(), Failure> {
    if gpio.pins.is_empty() && gpio.busy_pin.is_none() {
        return Ok(());
    }
    cli::check_pins(&gpio.pins, gpio.busy_pin, classifier.labels()).map_err(Failure::usage)?;
    #[cfg(all(feature = "gpio", target_os = "linux"))]
    {
        let observer = cli::open_signal(&gpio.gpio_chip, &gpio.pins, gpio.busy_pin, gpio.min_prob)
            .map_err(|message| Failure {
                code: exit::FAILURE,
                message,
            })?;
        classifier.set_observer(Box::new(observer));
        Ok(())
    }
    #[cfg(not(all(feature = "gpio", target_os = "linux")))]
    {
        Err(Failure::usage(
            "--pin needs Linux and a build with the `gpio` feature",
        ))
    }
}

/// The built-in model's bytes, or a usage error in builds without one.
pub(crate) fn built_in() -> Result<&'static [u8], Failure> {
    edgebert_runtime::embedded_model().ok_or_else(|| {
        Failure::usage("no model given and none built in (feature `default-model`): pass a bundle")
    })
}

fn model_source(args: ModelArgs) -> Result<ModelSource, Failure> {
    let Some(model) = args.model else {
        return match edgebert_runtime::embedded_model() {
            Some(_) => Ok(ModelSource::Embedded),
            None => Err(Failure::usage("no model given and none built in: pass --model BUNDLE.ebm (or --model MODEL.onnx --tokenizer tokenizer.json --labels a,b)")),
        };
    };
    match (args.tokenizer, args.labels) {
        (Some(tokenizer), Some(labels)) => Ok(ModelSource::Parts {
            onnx: model,
            tokenizer,
            labels: LabelSource::parse(&labels),
            max_len: args.max_len,
        }),
        (None, None) if model.extension().is_some_and(|e| e == "onnx") => Err(Failure::usage(
            "a plain ONNX model needs --tokenizer tokenizer.json and --labels a,b",
        )),
        (None, None) => Ok(ModelSource::Bundle(model)),
        _ => Err(Failure::usage(
            "a plain ONNX model needs both --tokenizer and --labels",
        )),
    }
}
