//! Host-side tools that feed the device: HF BERT checkpoint → ONNX export (`export`), the ONNX
//! protobuf reader/writer that every graph rewrite goes through (`onnx`), and — with the
//! quantization issue — ONNX f32 → int8.
//!
//! Depends on `edgebert-runtime` (bundle format, tract inference) and never the other way round.

pub mod activation;
pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod dynamic;
pub mod error;
pub mod eval;
pub mod export;
pub mod job;
pub mod onnx;
pub mod plot;
pub mod prune;
pub mod threshold;

pub use checkpoint::{BertConfig, Checkpoint};
pub use error::Error;
pub use export::{export, export_to_file};
