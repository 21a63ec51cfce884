//! The int8 matrix products of the quantized linear layers: u8 activations times i8 weights
//! packed once at load, i32 sums, each block of rows handed back for its dequantization (scale,
//! bias, the residual, GELU) while it is in cache ([`crate::ops::QuantLinear`]).
//!
//! Written here because tract's own path for these products is four operators (an i8 offset of
//! the activation, its packing, the kernel, a zero-point correction), its AVX-512 VNNI kernels
//! run at about half of that core's int8 peak, and its AVX2 kernel (tract 0.23.9,
//! `avx2_mmm_i32_8x8`) loads each step's activation bytes with a legacy-SSE `movq` amid its
//! 256-bit code: an AVX/SSE state transition per step, about 280 cycles on a Zen 3 core, which
//! made the built-in model 25x slower than its f32 twin on AVX2-only hosts (docs/performance.md).
//!
//! One kernel per CPU family, picked once at run time ([`Kernel::best`]):
//! - [`Kernel::Avx512Vnni`] (`x86_64/qgemm_avx512vnni.rs`): `vpdpbusd` takes unsigned bytes on
//!   one side and signed on the other, exactly what the quantizer emits, so the activation is
//!   read in place; 12 rows x 32 columns per tile.
//! - [`Kernel::Avx2`] (`x86_64/qgemm_avx2.rs`): AVX2 has no exact u8 x i8 dot product
//!   (`vpmaddubsw` saturates its 16-bit pair sums: onnxruntime's AVX2 path does, see
//!   docs/BENCHMARKS.md), so both sides are widened to 16 bits and multiplied by `vpmaddwd`
//!   (pair sums of at most 2 * 255 * 128, exact in i32); 6 rows x 16 columns per tile.
//! - [`Kernel::NeonDot`] (`aarch64/qgemm_dot.rs`): `sdot` on cores with the dot product
//!   (Cortex-A76, Pi 5); 8 rows x 8 columns.
//! - [`Kernel::NeonMull`] (`aarch64/qgemm_mull.rs`): 8-bit `smull`/`smlal2` + `sadalp` on the
//!   other Pi cores (Cortex-A53, A72); 4 rows x 4 columns; weights in −127..=127 only.
//! - Elsewhere (armv7, other CPUs) none: the engine leaves tract's operators in place.
//!
//! The ARM kernels multiply signed bytes on both sides: they read the activation as `x − 128`
//! ([`Kernel::activation_offset`]). The zero point's share (`(offset − a0) * sum w`) starts the
//! sums. Integer sums are exact, so every kernel
//! equals tract's product to the bit, and [`products_reference`] (portable, in `generic/`) is
//! what the tests hold each kernel to, on every CPU.

pub use super::generic::qgemm::products_reference;

/// An int8 product kernel of this module, and how it wants its weights packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x86_64 with AVX-512 F, BW and VNNI.
    Avx512Vnni,
    /// x86_64 with AVX2.
    Avx2,
    /// aarch64 with the dot product extension (`asimddp`).
    NeonDot,
    /// aarch64 (NEON is in its baseline).
    NeonMull,
}

impl Kernel {
    /// Every kernel, widest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512Vnni,
        Kernel::Avx2,
        Kernel::NeonDot,
        Kernel::NeonMull,
    ];

    /// The best kernel this CPU runs, if any.
    pub fn best() -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.runs_here())
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Avx512Vnni => has!("avx512f") && has!("avx512bw") && has!("avx512vnni"),
                Kernel::Avx2 => has!("avx2"),
                Kernel::NeonDot | Kernel::NeonMull => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            match self {
                Kernel::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
                Kernel::NeonMull => true,
                Kernel::Avx512Vnni | Kernel::Avx2 => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }

    /// What profiles and `edgebert board` call it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "edgebert AVX-512 VNNI 12x32",
            Kernel::Avx2 => "edgebert AVX2 6x16 (vpmaddwd)",
            Kernel::NeonDot => "edgebert NEON 8x8 (sdot)",
            Kernel::NeonMull => "edgebert NEON 4x4 (smull+sadalp)",
        }
    }

    /// Rows per block (and per tile).
    pub fn mr(self) -> usize {
        match self {
            Kernel::Avx512Vnni => 12,
            Kernel::Avx2 => 6,
            Kernel::NeonDot => 8,
            Kernel::NeonMull => 4,
        }
    }

    /// Columns per tile: the packing pads the weights' columns to a multiple of it.
    pub fn nr(self) -> usize {
        match self {
            Kernel::Avx512Vnni => 32,
            Kernel::Avx2 => 16,
            Kernel::NeonDot => 8,
            Kernel::NeonMull => 4,
        }
    }

    /// Inputs per group in the packing: one column's group is contiguous (4 bytes for one
    /// `vpdpbusd` or `sdot` lane, 2 for one `vpmaddwd` lane, 16 for one `smull`/`smlal2` pair).
    pub fn group(self) -> usize {
        match self {
            Kernel::Avx512Vnni | Kernel::NeonDot => 4,
            Kernel::Avx2 => 2,
            Kernel::NeonMull => 16,
        }
    }

    /// What `k` (inputs per output) must be a multiple of: the kernel reads the activation rows
    /// that many bytes at a time.
    pub fn k_multiple(self) -> usize {
        match self {
            Kernel::Avx512Vnni | Kernel::Avx2 => 4,
            Kernel::NeonDot | Kernel::NeonMull => 16,
        }
    }

    /// What the kernel subtracts from each activation byte before multiplying: 128 for the ARM
    /// kernels, whose products are signed on both sides; their sums start from
    /// `(128 − a0) · Σ w` instead of `−a0 · Σ w`.
    pub fn activation_offset(self) -> i32 {
        match self {
            Kernel::Avx512Vnni | Kernel::Avx2 => 0,
            Kernel::NeonDot | Kernel::NeonMull => 128,
        }
    }

    /// Whether it can take weights holding −128: [`Kernel::NeonMull`] adds two products in 16
    /// bits, exact only for weights in −127..=127.
    pub fn takes_minus_128(self) -> bool {
        self != Kernel::NeonMull
    }
}

/// Whether this CPU has a kernel here.
pub fn available() -> bool {
    Kernel::best().is_some()
}

/// Whether the engine uses one: where [`available`], unless `EDGEBERT_QGEMM=off` is in the
/// environment (then tract's products run, for comparisons and for testing the path the boards
/// take).
pub fn enabled() -> bool {
    available() && std::env::var_os("EDGEBERT_QGEMM").is_none_or(|v| v != "off")
}

/// A weight matrix (`n` outputs of `k` inputs each), packed for one [`Kernel`]: per tile of
/// [`Kernel::nr`] columns, per group of [`Kernel::group`] inputs, the group's bytes of each of the
/// tile's columns; columns padded with zeros to a multiple of `nr`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedWeights {
    kernel: Kernel,
    k: usize,
    n: usize,
    data: Vec<i8>,
    /// Σ over k of each (padded) column's weights.
    col_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `w` for this CPU's best kernel; `None` where there is none or it cannot take the
    /// shape (see [`PackedWeights::pack_nk_for`]).
    pub fn pack_nk(w: &[i8], n: usize, k: usize) -> Option<PackedWeights> {
        PackedWeights::pack_nk_for(Kernel::best()?, w, n, k)
    }

    /// Packs `w`, `n` rows of `k` weights (row `j` holds output `j`'s weights, as ONNX's
    /// `MatMulInteger` weight transposed, and as tract's analysis leaves it: `nk`), for `kernel`
    /// (on any CPU: the packing is plain code). `k` must be a multiple of [`Kernel::k_multiple`],
    /// and the weights free of −128 where the kernel does not [`Kernel::takes_minus_128`].
    pub fn pack_nk_for(kernel: Kernel, w: &[i8], n: usize, k: usize) -> Option<PackedWeights> {
        if k == 0 || n == 0 || !k.is_multiple_of(kernel.k_multiple()) || w.len() != n * k {
            return None;
        }
        if !kernel.takes_minus_128() && w.contains(&i8::MIN) {
            return None;
        }
        let n_pad = n.div_ceil(kernel.nr()) * kernel.nr();
        let mut packed = PackedWeights {
            kernel,
            k,
            n,
            data: vec![0i8; n_pad * k],
            col_sums: vec![0i32; n_pad],
        };
        for (j, column) in w.chunks_exact(k).enumerate() {
            for (kk, &x) in column.iter().enumerate() {
                let at = packed.index(j, kk);
                packed.data[at] = x;
            }
            packed.col_sums[j] = column.iter().map(|&x| x as i32).sum();
        }
        Some(packed)
    }

    /// Where weight `kk` of column `j` lies in the packing.
    pub(crate) fn index(&self, j: usize, kk: usize) -> usize {
        let (nr, g) = (self.kernel.nr(), self.kernel.group());
        let (tile, lane) = (j / nr, j % nr);
        ((tile * (self.k / g) + kk / g) * nr + lane) * g + kk % g
    }

    /// The kernel it is packed for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Outputs.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Outputs padded to whole tiles: the row stride of the sums.
    pub fn n_pad(&self) -> usize {
        self.col_sums.len()
    }

    /// The packed bytes.
    pub(crate) fn data(&self) -> &[i8] {
        &self.data
    }

    /// The sums' starting values for an activation whose zero point is `a0`:
    /// `(offset − a0) · Σ w`, with the kernel's [`Kernel::activation_offset`].
    pub(crate) fn start(&self, a0: u8) -> Vec<i32> {
        let shift = self.kernel.activation_offset() - a0 as i32;
        self.col_sums.iter().map(|&s| shift * s).collect()
    }
}

/// `Σ_k (a[i, k] − a0) · w[j, k]` for the rows of `a` (row-major, `k` bytes each), block by
/// block of at most [`Kernel::mr`] rows, in order: `finish(first_row, sums)` gets each block's
/// sums, rows of `n_pad` (the first `n` of each row are the outputs). Needs the weights' kernel
/// to run on this CPU.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables, unused_mut)
)]
pub fn products(
    a: &[u8],
    a0: u8,
    w: &PackedWeights,
    mut finish: impl FnMut(usize, &[i32], usize),
) -> Result<(), String> {
    let k = w.k;
    if !a.len().is_multiple_of(k) {
        return Err(format!(
            "qgemm: {} activation bytes are not rows of {k}",
            a.len()
        ));
    }
    if !w.kernel.runs_here() {
        return Err(format!("qgemm: this CPU does not run {}", w.kernel.name()));
    }
    let (rows, mr) = (a.len() / k, w.kernel.mr());
    let start = w.start(a0);
    let n_pad = w.n_pad();
    let mut sums = vec![0i32; mr * n_pad];
    // Scratch for the kernels that copy the block's rows first (widened, or shifted by 128).
    #[cfg(target_arch = "x86_64")]
    let mut widened: Vec<i16> = Vec::new();
    #[cfg(target_arch = "aarch64")]
    let mut shifted: Vec<i8> = Vec::new();
    // Blocks of equal size (within one row): 16 rows are two blocks of 8, not 12 + 4, whose
    // 4-row tiles would stream the same weights for a third of the work.
    let blocks = rows.div_ceil(mr);
    for b in 0..blocks {
        let first = b * rows / blocks;
        let r = (b + 1) * rows / blocks - first;
        let rows_a = &a[first * k..(first + r) * k];
        let sums = &mut sums[..r * n_pad];
        // SAFETY: the CPU runs the kernel (checked above); `rows_a` holds `r ≤ mr` rows of `k`
        // bytes, `sums` holds `r` rows of `n_pad`, the packing is the kernel's (`w.kernel`).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use super::x86_64::{qgemm_avx2, qgemm_avx512vnni};
            match w.kernel {
                Kernel::Avx512Vnni => qgemm_avx512vnni::block(rows_a, r, w, &start, sums),
                Kernel::Avx2 => qgemm_avx2::block(rows_a, r, w, &start, sums, &mut widened),
                Kernel::NeonDot | Kernel::NeonMull => unreachable!("checked: runs here"),
            }
        }
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        unsafe {
            use super::aarch64::{qgemm_dot, qgemm_mull};
            match w.kernel {
                Kernel::NeonDot => qgemm_dot::block(rows_a, r, w, &start, sums, &mut shifted),
                Kernel::NeonMull => qgemm_mull::block(rows_a, r, w, &start, sums, &mut shifted),
                Kernel::Avx512Vnni | Kernel::Avx2 => unreachable!("checked: runs here"),
            }
        }
        finish(first, sums, n_pad);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Row-major `rows × n`, straight from the definition.
    fn naive(a: &[u8], a0: u8, w: &[i8], k: usize) -> Vec<i32> {
        a.chunks_exact(k)
            .flat_map(|row| {
                w.chunks_exact(k).map(move |col| {
                    row.iter()
                        .zip(col)
                        .map(|(&x, &y)| (x as i32 - a0 as i32) * y as i32)
                        .sum::<i32>()
                })
            })
            .collect()
    }

    fn kernel_sums(a: &[u8], a0: u8, w: &PackedWeights) -> Vec<i32> {
        let n = w.n();
        let mut out = Vec::new();
        let mut next = 0;
        products(a, a0, w, |first, sums, n_pad| {
            assert_eq!(first, next);
            for row in sums.chunks_exact(n_pad) {
                out.extend_from_slice(&row[..n]);
                next += 1;
            }
        })
        .unwrap();
        out
    }

    fn check(rows: usize, n: usize, k: usize, a0: u8, seed: u64) {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u32
        };
        let a: Vec<u8> = (0..rows * k).map(|_| next() as u8).collect();
        // −127..=127, as every symmetric quantizer emits; −128 is tested on its own.
        let w: Vec<i8> = (0..n * k)
            .map(|_| (next() % 255) as i32 - 127)
            .map(|x| x as i8)
            .collect();
        let want = naive(&a, a0, &w, k);
        for kernel in Kernel::ALL {
            let Some(packed) = PackedWeights::pack_nk_for(kernel, &w, n, k) else {
                assert!(
                    !k.is_multiple_of(kernel.k_multiple()),
                    "{kernel:?} refused k = {k}"
                );
                continue;
            };
            let reference: Vec<i32> = products_reference(&a, a0, &packed)
                .chunks_exact(packed.n_pad())
                .flat_map(|r| r[..n].to_vec())
                .collect();
            assert_eq!(reference, want, "{kernel:?} reference {rows}×{k}×{n}");
            if kernel.runs_here() {
                assert_eq!(
                    kernel_sums(&a, a0, &packed),
                    want,
                    "{kernel:?} {rows}×{k}×{n}"
                );
            } else {
                assert!(products(&a, a0, &packed, |_, _, _| ()).is_err());
            }
        }
    }

    /// Every row count of a block and past it, column counts on and off the tile, the extreme
    /// bytes on both sides (255 × −128 summed over 1536 inputs), for every kernel this CPU runs
    /// (the others are named as skipped).
    #[test]
    fn products_equal_plain_integer_sums() {
        for kernel in Kernel::ALL.into_iter().filter(|k| !k.runs_here()) {
            crate::kernels::skipped(&format!("qgemm {kernel:?}: not on this CPU"));
        }
        for rows in [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 24, 25, 64] {
            check(rows, 384, 384, 131, rows as u64);
        }
        for n in [1, 2, 16, 31, 33, 100] {
            check(13, n, 8, 0, n as u64);
            check(13, n, 16, 7, n as u64);
        }
        check(7, 64, 1536, 255, 9);
        check(9, 40, 48, 128, 10);
        // The extremes of every kernel's arithmetic over 1536 inputs: the activation's ends
        // times the weights' (−128 only where the kernel takes it).
        let (k, n) = (1536, 32);
        for (x, y) in [
            (255u8, -128i8),
            (0, -128),
            (255, -127),
            (0, -127),
            (0, 127),
            (255, 127),
        ] {
            let a = vec![x; 3 * k];
            let want = vec![x as i32 * y as i32 * k as i32; 3 * n];
            assert_eq!(naive(&a, 0, &vec![y; n * k], k), want);
            for kernel in Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
                let Some(packed) = PackedWeights::pack_nk_for(kernel, &vec![y; n * k], n, k) else {
                    assert!(
                        y == -128 && !kernel.takes_minus_128(),
                        "{kernel:?} refused {y}"
                    );
                    continue;
                };
                assert_eq!(kernel_sums(&a, 0, &packed), want, "{kernel:?} {x}·{y}");
            }
        }
    }

    #[test]
    fn what_cannot_be_packed_is_refused() {
        for kernel in Kernel::ALL {
            assert!(PackedWeights::pack_nk_for(kernel, &[0; 6], 2, 3).is_none());
            assert!(PackedWeights::pack_nk_for(kernel, &[0; 8], 3, 4).is_none());
            assert!(PackedWeights::pack_nk_for(kernel, &[], 0, 4).is_none());
            let packed = PackedWeights::pack_nk_for(kernel, &[1; 32], 2, 16).unwrap();
            assert!(products(&[0; 5], 0, &packed, |_, _, _| ()).is_err());
            let minus_128 = PackedWeights::pack_nk_for(kernel, &[-128; 32], 2, 16);
            assert_eq!(minus_128.is_some(), kernel.takes_minus_128(), "{kernel:?}");
        }
        assert!(PackedWeights::pack_nk_for(Kernel::NeonDot, &[1; 16], 2, 8).is_none());
        assert!(PackedWeights::pack_nk_for(Kernel::Avx2, &[1; 16], 2, 8).is_some());
    }

    proptest! {
        #[test]
        fn any_shape(rows in 1usize..30, n in 1usize..70, k4 in 1usize..40, a0: u8, seed: u64) {
            check(rows, n, k4 * 4, a0, seed);
        }
    }
}
