//! The runtime's own compute kernels, one room per CPU family, as in tract's linalg:
//!
//! - [`generic`]: portable code that runs on every CPU, and the references every fast kernel is
//!   tested against (integer products exact, floats in f64 where the kernel sums in another order).
//! - `x86_64`: AVX2 and AVX-512 (VNNI) builds, picked at run time from cpuid.
//! - `aarch64`: the Raspberry Pi boards' NEON kernels (the int8 product, with `sdot` where the
//!   core has the dot product), picked at run time from HWCAP.
//!
//! [`Isa`] and `multiversion!` compile the portable element-wise loops once per x86_64 level;
//! [`by_rows`] splits an operator's rows over tract's threads.
//!
//! Each dispatching module (e.g. [`qgemm`]) says which kernel runs on which CPU and falls back to
//! tract's operators (not to the reference, which is for tests) where none does.

/// One function, compiled for each `Isa`: `$name` dispatches, `$body` (`#[inline(always)]`) is
/// the code, inlined into a `#[target_feature]` wrapper per instruction set.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident / $body:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            Isa::best().$name($($arg),*)
        }

        impl Isa {
            pub(crate) fn $name(self, $($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match self {
                    Isa::Baseline => $body($($arg),*),
                    // SAFETY: `Isa::available` only offers what the CPU has.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2($($arg),*) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512($($arg),*) },
                }
            }
        }
    };
}

pub mod attention;
pub mod elementwise;
pub mod generic;
pub mod qgemm;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

use tract_onnx::prelude::TractResult;

/// Says, in the test output, that a test skipped a kernel this CPU does not run (written to the
/// process's stderr directly, past the test harness's capture, so that a pass on a CPU without the
/// kernel is visibly not a pass of the kernel).
#[cfg(test)]
pub(crate) fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {what}");
}

/// The instruction sets the element-wise loops ([`elementwise`]) are compiled for. A portable x86_64 build may only
/// assume SSE2 (4 lanes, and no packing of i32 to u8 in one step), so on x86_64 the same loops are
/// compiled twice more, for AVX2 and for AVX-512, and the widest this CPU has is picked at run
/// time (std caches the CPU's answer). On a 64-token text this took the operator from ≈ 0.9 to
/// ≈ 0.4 ns per element (≈ 5% of the int8 student's time). aarch64 has NEON in its baseline and
/// needs one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The instruction sets this CPU runs, narrowest first.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut isas = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                isas.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
            {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    /// The widest instruction set this CPU runs.
    pub(crate) fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            *Isa::available()
                .last()
                .expect("the baseline is always there")
        })
    }
}

/// Runs `share(first_row, rows)` over `ys` (rows of `width`): in one call, or, on tract's
/// executor's threads when it has some and there are at least `min_rows` rows, in contiguous
/// shares of whole multiples of `unit` rows, one per thread.
pub(crate) fn by_rows(
    ys: &mut [f32],
    width: usize,
    unit: usize,
    min_rows: usize,
    share: impl Fn(usize, &mut [f32]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    use rayon::prelude::*;
    let width = width.max(1);
    let rows = ys.len() / width;
    match tract_linalg::multithread::current_tract_executor() {
        tract_linalg::multithread::Executor::MultiThread(pool) if rows >= min_rows => {
            let threads = pool.current_num_threads().max(1);
            let per = rows.div_ceil(unit).div_ceil(threads) * unit;
            pool.install(|| {
                ys.par_chunks_mut(per * width)
                    .enumerate()
                    .try_for_each(|(i, ys)| share(i * per, ys))
            })
        }
        _ => share(0, ys),
    }
}
