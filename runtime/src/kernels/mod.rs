//! The runtime's own compute kernels, one room per CPU family, as in tract's linalg:
//!
//! - [`generic`]: portable code that runs on every CPU, and the references every fast kernel is
//!   tested against (integer products exact, floats in f64 where the kernel sums in another order).
//! - `x86_64`: AVX2 and AVX-512 (VNNI) builds, picked at run time from cpuid.
//! - `aarch64`: the room for the Raspberry Pi boards' NEON kernels (empty so far: the boards run
//!   tract's own arm64 kernels, see ARCHITECTURE.md).
//!
//! Each dispatching module (e.g. [`qgemm`]) says which kernel runs on which CPU and falls back to
//! tract's operators (not to the reference, which is for tests) where none does.

pub mod attention;
pub mod generic;
pub mod qgemm;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

/// Says, in the test output, that a test skipped a kernel this CPU does not run (written to the
/// process's stderr directly, past the test harness's capture, so that a pass on a CPU without the
/// kernel is visibly not a pass of the kernel).
#[cfg(test)]
pub(crate) fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}
