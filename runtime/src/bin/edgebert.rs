//! `edgebert`: classify text on the device. Parses arguments, calls the library, prints, and maps
//! the outcome to an exit code (see README: 0 ok, 1 usage, 2 bad input or model, 3 failure).

use std::borrow::Cow;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use edgebert_runtime::cli::{self, exit, exit_code, parse_args, LabelSource, ModelSource};
use edgebert_runtime::serve::{self, LineStatus};
use edgebert_runtime::{bench, Bundle, Classifier, ClassifierOptions, Error};
use serde_json::json;

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
        #[arg(long)]
        file: Option<PathBuf>,
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
struct Failure {
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
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
    fn io(e: std::io::Error) -> Self {
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
            json,
            top_k,
            batch_size,
            model,
            gpio,
        } => {
            let source = model_source(model)?;
            if !texts.is_empty() && file.is_some() {
                return Err(Failure::usage(
                    "give texts as arguments or --file, not both",
                ));
            }
            let options = ClassifierOptions {
                batch_size: batch_size.max(1),
                ..options
            };
            let mut classifier = source.load(options)?;
            attach_pins(&mut classifier, &gpio)?;
            classify(&mut classifier, texts, file, json, top_k.max(1))
        }
        Command::Serve {
            socket,
            model,
            gpio,
        } => {
            let mut classifier = model_source(model)?.load(options)?;
            attach_pins(&mut classifier, &gpio)?;
            serve(classifier, socket)
        }
        Command::Board { model, json } => {
            let mut classifier = model_source(model)?.load(options)?;
            // The memory figure that matters is a real answer at the longest length.
            let longest = classifier.buckets().last().copied().unwrap_or(16);
            if let Some(text) = bench::synthetic_text(&classifier, longest) {
                classifier.classify(&text)?;
            }
            let report = cli::BoardReport::new(&detection, threads, bench::peak_rss_kib());
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            Ok(exit::OK)
        }
        Command::Info { bundle, json } => {
            let raw = match &bundle {
                Some(path) => Cow::Owned(edgebert_runtime::fsutil::read(path)?),
                None => Cow::Borrowed(built_in()?),
            };
            let b = Bundle::parse(&raw).map_err(Error::from)?;
            let bytes = raw.len();
            let version = Bundle::version_of(&raw).unwrap_or(0);
            let graph = if edgebert_runtime::engine::is_compiled(b.onnx) {
                "compiled"
            } else {
                "onnx"
            };
            if json {
                let v = json!({
                    "format_version": version,
                    "graph": graph,
                    "manifest": b.manifest,
                    "bytes": {"total": bytes, "tokenizer": b.tokenizer_json.len(), "onnx": b.onnx.len()},
                });
                println!("{v}");
            } else {
                print!("{}", b.manifest.describe());
                println!(
                    "{:<15} {} bytes ({} graph {}, tokenizer {} inflated), format v{}",
                    "size",
                    bytes,
                    graph,
                    b.onnx.len(),
                    b.tokenizer_json.len(),
                    version
                );
            }
            Ok(exit::OK)
        }
        Command::Bench {
            bundle,
            lengths,
            iterations,
            profile,
            json,
        } => {
            let start = Instant::now();
            let mut classifier = match &bundle {
                Some(path) => Classifier::open(path, options)?,
                None => {
                    built_in()?;
                    ModelSource::Embedded.load(options)?
                }
            };
            let first = bench::synthetic_text(&classifier, 16).unwrap_or_else(|| "good".into());
            classifier.classify(&first)?;
            let cold_ms = start.elapsed().as_secs_f64() * 1e3;
            if profile {
                let profiles = bench::profile(&mut classifier, &lengths, iterations.max(1))?;
                if json {
                    println!(
                        "{}",
                        json!({"threads": threads, "runs": iterations, "lengths": profiles})
                    );
                } else {
                    println!("threads {threads}, {iterations} runs per length");
                    print!("{}", bench::profile_table(&profiles));
                }
                return Ok(exit::OK);
            }
            let stats = bench::measure(&mut classifier, &lengths, iterations.max(1))?;
            let rss = bench::peak_rss_kib();
            if json {
                let v = json!({"threads": threads, "iterations": iterations, "cold_start_ms": cold_ms,
                    "peak_rss_kib": rss, "lengths": stats});
                println!("{v}");
            } else {
                println!("threads {threads}, {iterations} runs per length");
                println!(
                    "{:>7} {:>9} {:>9} {:>10} {:>14}",
                    "tokens", "p50 ms", "p95 ms", "texts/s", "batched/s"
                );
                for s in &stats {
                    println!(
                        "{:>7} {:>9.3} {:>9.3} {:>10.1} {:>14.1}",
                        s.tokens, s.p50_ms, s.p95_ms, s.texts_per_s, s.batched_texts_per_s
                    );
                }
                println!("cold start (load + first answer): {cold_ms:.1} ms");
                match rss {
                    Some(kib) => println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
                    None => println!("peak RSS: not reported by this OS"),
                }
            }
            Ok(exit::OK)
        }
        Command::Compile { bundle, output } => {
            let raw = edgebert_runtime::fsutil::read(&bundle)?;
            let original = Bundle::from_bytes(&raw).map_err(Error::from)?;
            let compiled = Classifier::compile(&original, options)?.to_bytes();
            edgebert_runtime::fsutil::write_atomic(&output, &compiled, &[bundle.as_path()])?;
            eprintln!(
                "wrote {} ({} bytes; the ONNX bundle: {} bytes)",
                output.display(),
                compiled.len(),
                raw.len()
            );
            Ok(exit::OK)
        }
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
            let mut bundle = source.to_bundle()?;
            bundle.manifest.task = task;
            // Validate before writing: a bundle that cannot run is never written.
            Classifier::from_bundle(&bundle, options)?;
            bundle.write(&output, &source.inputs())?;
            eprintln!(
                "wrote {} ({} bytes)",
                output.display(),
                bundle.to_bytes().len()
            );
            Ok(exit::OK)
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
fn built_in() -> Result<&'static [u8], Failure> {
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

/// Texts read per batch from a file or stdin.
const CHUNK_LINES: usize = 256;

fn classify(
    classifier: &mut Classifier,
    texts: Vec<String>,
    file: Option<PathBuf>,
    json: bool,
    top_k: usize,
) -> Result<u8, Failure> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    let mut emit = |out: &mut dyn Write,
                    line: Option<usize>,
                    result: Result<edgebert_runtime::Prediction, String>| {
        let result = match result {
            Ok(p) if json => {
                let mut v = serve::prediction_json(&p, Some(top_k));
                if let Some(n) = line {
                    v["line"] = json!(n);
                }
                writeln!(out, "{v}")
            }
            Ok(p) => {
                let labels: Vec<String> = p
                    .scores
                    .iter()
                    .take(top_k)
                    .map(|s| format!("{}\t{:.4}", s.label, s.probability))
                    .collect();
                let note = if p.truncated {
                    format!("\t(truncated to {} tokens)", p.tokens)
                } else {
                    String::new()
                };
                writeln!(out, "{}{note}", labels.join("\t"))
            }
            Err(msg) => {
                failed += 1;
                let at = line.map(|n| format!("line {n}: ")).unwrap_or_default();
                eprintln!("error: {at}{msg}");
                if json {
                    writeln!(out, "{}", json!({"line": line, "error": msg}))
                } else {
                    Ok(())
                }
            }
        };
        result
    };

    if !texts.is_empty() {
        let results = classifier.classify_batch(&texts)?;
        for r in results {
            emit(&mut out, None, r.map_err(|e| e.to_string())).map_err(Failure::io)?;
        }
    } else {
        let (reader, size): (Box<dyn BufRead>, Option<u64>) = match file.as_deref() {
            None => (Box::new(std::io::stdin().lock()), None),
            Some(p) if p.as_os_str() == "-" => (Box::new(std::io::stdin().lock()), None),
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    Failure::from(Error::Io {
                        path: p.into(),
                        source: e,
                    })
                })?;
                let size = f.metadata().ok().map(|m| m.len());
                (Box::new(BufReader::new(f)), size)
            }
        };
        let mut reader = reader;
        // A bar only for a file, when a person watches the terminal (not when output is piped).
        let bar = match size {
            Some(n) if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() => {
                let bar = indicatif::ProgressBar::new(n);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            }
            _ => indicatif::ProgressBar::hidden(),
        };
        let mut line_no = 0usize;
        let mut buf = Vec::new();
        loop {
            // Read a chunk of lines; each line is its own text, bad UTF-8 is that line's error.
            let mut chunk: Vec<(usize, Result<String, String>)> = Vec::new();
            let mut eof = false;
            while chunk.len() < CHUNK_LINES {
                buf.clear();
                match serve::read_line_capped(&mut reader, &mut buf, serve::MAX_REQUEST_BYTES)
                    .map_err(Failure::io)?
                {
                    LineStatus::Eof => {
                        eof = true;
                        break;
                    }
                    LineStatus::TooLong => {
                        line_no += 1;
                        chunk.push((
                            line_no,
                            Err(format!(
                                "line longer than {} bytes",
                                serve::MAX_REQUEST_BYTES
                            )),
                        ));
                    }
                    LineStatus::Line => {
                        line_no += 1;
                        bar.inc(buf.len() as u64 + 1);
                        chunk.push((
                            line_no,
                            String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
                                format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to())
                            }),
                        ));
                    }
                }
            }
            let texts: Vec<&str> = chunk
                .iter()
                .filter_map(|(_, t)| t.as_deref().ok())
                .collect();
            let mut results = classifier.classify_batch(&texts)?.into_iter();
            for (n, text) in &chunk {
                let r = match text {
                    Ok(_) => results
                        .next()
                        .unwrap_or(Err(edgebert_runtime::InputError::Empty))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                emit(&mut out, Some(*n), r).map_err(Failure::io)?;
            }
            out.flush().map_err(Failure::io)?;
            if eof {
                break;
            }
        }
        bar.finish_and_clear();
    }
    out.flush().map_err(Failure::io)?;
    Ok(if failed > 0 {
        exit::BAD_INPUT
    } else {
        exit::OK
    })
}

fn serve(classifier: Classifier, socket: Option<PathBuf>) -> Result<u8, Failure> {
    let shared = Arc::new(Mutex::new(classifier));
    // On SIGTERM/SIGINT: wait for the answer in flight (it holds the lock), then leave cleanly.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(Failure::io)?;
    {
        let shared = Arc::clone(&shared);
        let socket = socket.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let _guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                let _ = std::io::stdout().flush();
                if let Some(path) = &socket {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(0);
            }
        });
    }
    match socket {
        None => {
            serve::serve_stream(&shared, std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(Failure::io)?;
            Ok(exit::OK)
        }
        Some(path) => {
            use std::os::unix::fs::FileTypeExt;
            use std::os::unix::net::{UnixListener, UnixStream};
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                // Only a stale socket is replaced: never a live server's, never another file.
                if !meta.file_type().is_socket() {
                    return Err(Failure::usage(format!(
                        "{} exists and is not a socket",
                        path.display()
                    )));
                }
                if UnixStream::connect(&path).is_ok() {
                    return Err(Failure::usage(format!(
                        "{} is in use by another server",
                        path.display()
                    )));
                }
                std::fs::remove_file(&path).map_err(Failure::io)?;
            }
            let listener = UnixListener::bind(&path).map_err(|e| {
                Failure::io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            })?;
            eprintln!("listening on {}", path.display());
            for stream in listener.incoming() {
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: accept: {e}");
                        continue;
                    }
                };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let reader = match stream.try_clone() {
                        Ok(r) => BufReader::new(r),
                        Err(e) => return eprintln!("error: connection: {e}"),
                    };
                    if let Err(e) = serve::serve_stream(&shared, reader, &stream) {
                        eprintln!("error: connection: {e}");
                    }
                });
            }
            Ok(exit::OK)
        }
    }
}
