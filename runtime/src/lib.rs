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
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod manifest;
pub mod ops;
pub mod serve;
pub mod text;

pub use bundle::Bundle;
pub use classifier::{pack, Classifier, ClassifierOptions, LabelScore, Observer, Prediction};
pub use error::{BundleError, Error, InputError, ModelError, Result};
pub use manifest::{Manifest, Metric, Provenance, Quantization, TokenizerSettings};

/// The default model built into this binary (cargo feature `default-model`, on for the `edgebert`
/// binary): `models/sentiment-en.ebm`, English review sentiment. `None` in builds without it.
pub fn embedded_model() -> Option<&'static [u8]> {
    #[cfg(feature = "default-model")]
    {
        Some(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/sentiment-en.ebm"
        )))
    }
    #[cfg(not(feature = "default-model"))]
    {
        None
    }
}
