//! Distillation on the host: fine-tune the teacher, build the student from every other layer, train
//! it on the teacher's softened outputs (KL·T² + CE (+ cosine)) with candle, write a checkpoint that
//! `edgebert-quantize` exports and quantizes.
//!
//! It sits at the top of the dependency chain (`distill → quantize → runtime → boards`).

pub mod data;
pub mod error;
pub mod eval;
pub mod jobs;
pub mod loss;
pub mod model;
pub mod optim;
pub mod report;
pub mod rng;
pub mod train;

pub use error::{DistillError, Result};
pub use loss::LossWeights;
pub use model::{Batch, Bert, Output};
