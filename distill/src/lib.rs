//! Distillation on the host: fine-tune the teacher, build the student from every other layer, train
//! it on the teacher's softened outputs (KL·T² + CE (+ cosine)) with candle, write a checkpoint that
//! `edgebert-quantize` exports and quantizes.
//!
//! It sits at the top of the dependency chain (`distill → quantize → runtime → boards`).

pub mod bench;
pub mod data;
pub mod emails;
pub mod error;
pub mod eval;
pub mod jobs;
pub mod loss;
pub mod model;
pub mod optim;
pub mod report;
pub mod rng;
mod rundir;
pub mod train;
pub mod transfer;

pub use error::{DistillError, Result};
pub use loss::LossWeights;
pub use model::{Batch, Bert, Output};

/// Keeps freed memory in the process instead of returning it to the OS. glibc gives large freed
/// buffers back and faults them in again on the next training step, 30–40% of a step's time on
/// the 2-core host (../shared/NOTES.md); these are the settings of `MALLOC_MMAP_THRESHOLD_=32 MiB
/// MALLOC_TRIM_THRESHOLD_=∞ MALLOC_TOP_PAD_=256 MiB`, applied from inside so users need not set
/// them. Call once at the start of `main`. Does nothing on other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before any thread
    // starts allocating in parallel.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
