//! The int8 matrix products of the quantized linear layers, with AVX-512 VNNI: u8 activations
//! times i8 weights packed once at load, i32 sums, and the dequantization (scale, bias, the
//! residual, GELU) done on each block of rows while it is in cache.
//!
//! Written here because tract's own path for these products is four operators (an i8 offset
//! of the activation, its packing, the kernel, a zero-point correction) and its AVX-512 VNNI
//! kernels run at about half of this core's int8 peak (docs/performance.md). `vpdpbusd` takes
//! unsigned bytes on one side and signed on the other, which is exactly what the quantizer
//! emits (u8 activations, i8 weights), so the activation is read in place, row-major, with no
//! offset and no packing; the zero point's share (`a0 · Σ w`) starts the sums. Integer sums
//! are exact, so the products equal tract's to the bit, and the dequantization after them is
//! the same code as [`crate::ops::DequantizeBias`]'s.
//!
//! Only x86_64 CPUs with AVX-512 VNNI use it ([`available`]); everywhere else (the Pi boards
//! included) the engine leaves tract's operators in place.

/// Columns per tile: two 512-bit registers of 16 sums.
pub(crate) const NR: usize = 32;
/// Rows per tile: 12 rows × 2 registers = 24 accumulators of the 32 registers.
pub(crate) const MR: usize = 12;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the engine uses the kernel: where [`available`], unless `EDGEBERT_QGEMM=off` is in
/// the environment (then tract's products run, for comparisons).
pub fn enabled() -> bool {
    available() && std::env::var_os("EDGEBERT_QGEMM").is_none_or(|v| v != "off")
}

/// A weight matrix (`n` outputs of `k` inputs each), packed for the kernel: per tile of [`NR`]
/// columns, per group of 4 inputs, the 4 bytes of each of the tile's columns (one 512-bit
/// register per 16 columns); columns padded with zeros to a multiple of `NR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    data: Vec<i8>,
    /// Σ over k of each (padded) column's weights.
    col_sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `w`, `n` rows of `k` weights (row `j` holds output `j`'s weights, as ONNX's
    /// `MatMulInteger` weight transposed, and as tract's analysis leaves it: `nk`). `k` must be
    /// a multiple of 4 (the kernel reads the activation 4 bytes at a time).
    pub fn pack_nk(w: &[i8], n: usize, k: usize) -> Option<PackedWeights> {
        if k == 0 || n == 0 || !k.is_multiple_of(4) || w.len() != n * k {
            return None;
        }
        let (k4, tiles) = (k / 4, n.div_ceil(NR));
        let mut data = vec![0i8; tiles * k4 * NR * 4];
        let mut col_sums = vec![0i32; tiles * NR];
        for (j, column) in w.chunks_exact(k).enumerate() {
            let (tile, lane) = (j / NR, j % NR);
            for (kk, four) in column.chunks_exact(4).enumerate() {
                let at = ((tile * k4 + kk) * NR + lane) * 4;
                data[at..at + 4].copy_from_slice(four);
            }
            col_sums[j] = column.iter().map(|&x| x as i32).sum();
        }
        Some(PackedWeights {
            k,
            n,
            data,
            col_sums,
        })
    }

    /// Inputs per output.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Outputs.
    pub fn n(&self) -> usize {
        self.n
    }

    fn n_pad(&self) -> usize {
        self.col_sums.len()
    }

    /// The sums' starting values for an activation whose zero point is `a0`: `−a0 · Σ w`.
    fn start(&self, a0: u8) -> Vec<i32> {
        self.col_sums.iter().map(|&s| -(a0 as i32) * s).collect()
    }
}

/// `Σ_k (a[i, k] − a0) · w[j, k]` for the rows of `a` (row-major, `k` bytes each), block by
/// block of at most [`MR`] rows, in order: `finish(first_row, sums)` gets each block's sums, rows of
/// `n_pad` (the first `n` of each row are the outputs). Needs [`available`].
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_mut))]
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
    if !available() {
        return Err("qgemm: this CPU has no AVX-512 VNNI".into());
    }
    let rows = a.len() / k;
    let start = w.start(a0);
    let n_pad = w.n_pad();
    let mut sums = vec![0i32; MR * n_pad];
    // Blocks of equal size (within one row): 16 rows are two blocks of 8, not 12 + 4, whose
    // 4-row tiles would stream the same weights for a third of the work.
    let blocks = rows.div_ceil(MR);
    for b in 0..blocks {
        let first = b * rows / blocks;
        let r = (b + 1) * rows / blocks - first;
        // SAFETY: the CPU has AVX-512 VNNI (checked above); `a` holds `r` rows of `k` bytes from
        // `first`, `sums` holds `r` rows of `n_pad`, the packing holds `n_pad / NR` tiles of
        // `k / 4` groups.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            block(&a[first * k..(first + r) * k], r, k, w, &start, &mut sums)
        };
        finish(first, &sums[..r * n_pad], n_pad);
    }
    Ok(())
}

/// The same with plain integer arithmetic on the packed weights, for tests on any CPU.
pub fn products_reference(a: &[u8], a0: u8, w: &PackedWeights) -> Vec<i32> {
    let (k, n_pad, k4) = (w.k, w.n_pad(), w.k / 4);
    let rows = a.len() / k;
    let mut out = w.start(a0).repeat(rows);
    for (row, y) in a.chunks_exact(k).zip(out.chunks_exact_mut(n_pad)) {
        for (j, y) in y.iter_mut().enumerate() {
            let (tile, lane) = (j / NR, j % NR);
            for (kk, four) in row.chunks_exact(4).enumerate() {
                let at = ((tile * k4 + kk) * NR + lane) * 4;
                for (&x, &wt) in four.iter().zip(&w.data[at..at + 4]) {
                    *y += x as i32 * wt as i32;
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block(a: &[u8], r: usize, k: usize, w: &PackedWeights, start: &[i32], sums: &mut [i32]) {
    let n_pad = w.n_pad();
    let k4 = k / 4;
    let (a, b, s, c) = (
        a.as_ptr(),
        w.data.as_ptr(),
        start.as_ptr(),
        sums.as_mut_ptr(),
    );
    macro_rules! rows {
        ($($r:literal)*) => {
            match r {
                $($r => for t in 0..n_pad / NR {
                    // SAFETY: as in `products`.
                    unsafe {
                        tile::<$r>(a, k, b.add(t * k4 * NR * 4), k4, s.add(t * NR), c.add(t * NR), n_pad)
                    }
                },)*
                _ => unreachable!("at most MR rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
}

/// One tile: `R` rows × [`NR`] columns, over all of `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn tile<const R: usize>(
    a: *const u8,
    lda: usize,
    b: *const i8,
    k4: usize,
    start: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds (see `products`).
    unsafe {
        let s0 = _mm512_loadu_si512(start as *const _);
        let s1 = _mm512_loadu_si512(start.add(16) as *const _);
        let mut acc = [[s0, s1]; R];
        for kk in 0..k4 {
            let b0 = _mm512_loadu_si512(b.add(kk * NR * 4) as *const _);
            let b1 = _mm512_loadu_si512(b.add(kk * NR * 4 + 64) as *const _);
            for (row, acc) in acc.iter_mut().enumerate() {
                let four = (a.add(row * lda + kk * 4) as *const i32).read_unaligned();
                let av = _mm512_set1_epi32(four);
                acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
            }
        }
        for (row, acc) in acc.iter().enumerate() {
            _mm512_storeu_si512(c.add(row * ldc) as *mut _, acc[0]);
            _mm512_storeu_si512(c.add(row * ldc + 16) as *mut _, acc[1]);
        }
    }
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

    fn kernel(a: &[u8], a0: u8, w: &PackedWeights) -> Vec<i32> {
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
        let w: Vec<i8> = (0..n * k).map(|_| next() as u8 as i8).collect();
        let packed = PackedWeights::pack_nk(&w, n, k).unwrap();
        let want = naive(&a, a0, &w, k);
        let reference: Vec<i32> = products_reference(&a, a0, &packed)
            .chunks_exact(packed.n_pad())
            .flat_map(|r| r[..n].to_vec())
            .collect();
        assert_eq!(reference, want, "{rows}×{k}×{n}");
        if available() {
            assert_eq!(kernel(&a, a0, &packed), want, "{rows}×{k}×{n}");
        } else {
            assert!(products(&a, a0, &packed, |_, _, _| ()).is_err());
        }
    }

    /// Every row count of a block and past it, column counts on and off the tile, the extreme
    /// bytes on both sides (255 × −128 summed over 1536 inputs).
    #[test]
    fn products_equal_plain_integer_sums() {
        for rows in [1, 2, 5, 11, 12, 13, 24, 25, 64] {
            check(rows, 384, 384, 131, rows as u64);
        }
        for n in [1, 2, 16, 31, 33, 100] {
            check(13, n, 8, 0, n as u64);
        }
        check(7, 64, 1536, 255, 9);
        let (k, n) = (1536, 32);
        let packed = PackedWeights::pack_nk(&vec![-128; n * k], n, k).unwrap();
        let a = vec![255u8; 3 * k];
        let want = vec![255 * -128 * k as i32; 3 * n];
        assert_eq!(naive(&a, 0, &vec![-128; n * k], k), want);
        if available() {
            assert_eq!(kernel(&a, 0, &packed), want);
        }
    }

    #[test]
    fn what_cannot_be_packed_is_refused() {
        assert!(PackedWeights::pack_nk(&[0; 6], 2, 3).is_none());
        assert!(PackedWeights::pack_nk(&[0; 8], 3, 4).is_none());
        assert!(PackedWeights::pack_nk(&[], 0, 4).is_none());
        let packed = PackedWeights::pack_nk(&[1; 8], 2, 4).unwrap();
        assert!(products(&[0; 5], 0, &packed, |_, _, _| ()).is_err());
    }

    proptest! {
        #[test]
        fn any_shape(rows in 1usize..30, n in 1usize..70, k4 in 1usize..40, a0: u8, seed: u64) {
            check(rows, n, k4 * 4, a0, seed);
        }
    }
}
