//! `edgebert-arm-harness`: what `scripts/arm-bench` runs beside `edgebert` on emulated Pi cores.
//!
//! ```text
//! edgebert-arm-harness ort LIBONNXRUNTIME MODEL.onnx --lengths 16,64 --iterations 2
//! edgebert-arm-harness micro fmla-independent --iterations 100000
//! ```
//! `ort` runs onnxruntime (its C library, loaded at run time) on an ONNX file, batch 1, one
//! thread, as `edgebert bench` runs edgebert: one untimed pass per length, then the timed ones,
//! each under the mark of its length ([`edgebert_boards::marker`]), so the counting plugin gives
//! instructions per pass. `micro` runs one of the microkernels that check the cycle model
//! ([`micro`]) under mark 1.

mod micro;
mod onnxruntime;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ort") => onnxruntime::run(&args[1..]),
        Some("micro") => micro::run(&args[1..]),
        _ => Err(format!(
            "usage: edgebert-arm-harness ort LIB MODEL [--lengths 16,64] [--iterations N]\n       \
             edgebert-arm-harness micro {} [--iterations N]",
            micro::NAMES.join("|")
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` from `args`, parsed, or `default`.
fn option<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value")),
    }
}
