//! `edgebert-quantize`: host-side model preparation. Parses arguments, calls the library, prints,
//! and maps the outcome to an exit code (0 ok, 1 usage, 2 bad input or model, 3 failure).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgebert_quantize::ExportError;
use edgebert_runtime::cli::{exit, exit_code};

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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let result = match cli.command {
        Command::Export {
            checkpoint,
            output,
            max_len,
        } => edgebert_quantize::export_to_file(&checkpoint, &output, max_len).map(|()| output),
    };
    match result {
        Ok(output) => {
            eprintln!("wrote {}", output.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match &e {
                ExportError::Runtime(inner) => exit_code(inner),
                ExportError::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
                    exit::FAILURE
                }
                _ => exit::BAD_INPUT,
            })
        }
    }
}
