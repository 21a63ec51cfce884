//! edgebert's device runtime: loads a `.ebm` bundle (or a plain ONNX file, tokenizer.json and
//! labels), tokenizes text with the bundled HF tokenizer and classifies it with tract.
//!
//! Everything heavy happens once, in [`Classifier::from_bundle`]: container and checksum checks,
//! tokenizer/model/label consistency, ONNX parsing, shape analysis and plan preparation. The
//! per-text path only tokenizes, pads to a prepared length and runs a prepared plan.
//!
//! This crate runs on the board: it never depends on a host crate (quantize, distill), candle
//! or Python, and it needs no C toolchain for its target.

pub mod bench;
pub mod bundle;
pub mod classifier;
pub mod cli;
pub mod contain;
pub mod cpu;
#[cfg(feature = "email")]
pub mod email;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod kernels;
pub mod manifest;
pub mod ops;
#[cfg(feature = "cli")]
pub mod progress;

pub mod rewrite;
pub mod serve;

pub mod text;

pub use bundle::Bundle;
pub use classifier::{pack, Classifier, ClassifierOptions, LabelScore, Observer, Prediction};
pub use error::{BundleError, Error, InputError, ModelError, Result};
pub use manifest::{Manifest, Metric, Provenance, Quantization, TokenizerSettings};

/// The tract release this build runs models with; a compiled graph ([`engine::Engine::compile`])
/// is tied to it. (Cargo exposes no dependency's version to code; a test checks this against
/// Cargo.lock.)
pub const TRACT_VERSION: &str = "0.23.9";

/// The default model built into this binary (cargo feature `default-model`, on for the `edgebert`
/// binary): `models/sentiment-en.compiled.ebm`, English review sentiment; `edgebert compile` of
/// `models/sentiment-en.ebm` (which stays the portable ONNX form), so that it loads fast. `None`
/// in builds without it.
pub fn embedded_model() -> Option<&'static [u8]> {
    #[cfg(feature = "default-model")]
    {
        Some(EMBEDDED_MODEL)
    }
    #[cfg(not(feature = "default-model"))]
    {
        None
    }
}

/// A `static`, not a constant: one copy at one address ([`release_embedded_model`] needs it).
#[cfg(feature = "default-model")]
static EMBEDDED_MODEL: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/sentiment-en.compiled.ebm"
));

/// Hands the built-in model's memory pages back to the kernel: call it once the model is loaded
/// (tract holds its own copy of the weights then). The bytes stay valid: they are part of the
/// binary's read-only file mapping, so a later read faults them in again from the file (or the
/// page cache), unchanged. Without this, the 12 MB bundle stays resident beside tract's copy for
/// the life of the process: about a fifth of `edgebert classify`'s peak RSS. Linux only; a no-op
/// elsewhere and in builds without the built-in model.
pub fn release_embedded_model() {
    #[cfg(all(target_os = "linux", feature = "default-model"))]
    if let Some(bytes) = embedded_model() {
        // SAFETY: madvise only changes residency. The range lies inside the binary's read-only
        // private file mapping, which nothing writes, so MADV_DONTNEED drops clean pages whose
        // contents are read back from the file on the next access.
        unsafe {
            let page = match libc::sysconf(libc::_SC_PAGESIZE) {
                p if p > 0 => p as usize,
                _ => return,
            };
            let begin = bytes.as_ptr() as usize;
            let start = begin.div_ceil(page) * page;
            let end = (begin + bytes.len()) / page * page;
            if end > start {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tract_version_is_the_locked_one() {
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("Cargo.lock at the workspace root");
        let entry = format!(
            "name = \"tract-nnef\"\nversion = \"{}\"",
            super::TRACT_VERSION
        );
        assert!(lock.contains(&entry), "TRACT_VERSION is not Cargo.lock's");
    }
}
