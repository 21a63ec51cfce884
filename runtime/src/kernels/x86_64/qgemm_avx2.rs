//! [`crate::kernels::qgemm`] on AVX2: 6 rows x 16 columns per tile, `vpmaddwd` on 16-bit pairs.
//!
//! AVX2's byte product `vpmaddubsw` (u8 x i8) adds each pair of products into a saturating i16
//! (255 * 127 * 2 does not fit), so it is not exact for arbitrary bytes. Here the block's
//! activation rows are widened once to u16 (0..=255) and each pair of inputs is broadcast as one
//! i32; the weights stay int8 in memory, packed in pairs, and are sign-extended by `vpmovsxbw`
//! as they are loaded (16 bytes = 8 columns x 2 inputs). `vpmaddwd` then adds two exact products
//! (at most 2 * 255 * 128) into each i32 lane. 12 accumulators, 2 weight registers and the
//! broadcast fill 15 of the 16 registers.

use crate::kernels::qgemm::{Kernel, PackedWeights};

const NR: usize = 16;

/// The sums of one block of `r ≤ 6` rows (`a`: `r` rows of `k` bytes) into `sums` (`r` rows of
/// `n_pad`), starting from `start`; `widened` is scratch space (the rows as u16), kept between
/// blocks.
///
/// # Safety
/// The CPU has AVX2; `w` is packed for [`Kernel::Avx2`]; the slices hold what is said above.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn block(
    a: &[u8],
    r: usize,
    w: &PackedWeights,
    start: &[i32],
    sums: &mut [i32],
    widened: &mut Vec<i16>,
) {
    debug_assert_eq!(w.kernel(), Kernel::Avx2);
    debug_assert!(r <= Kernel::Avx2.mr());
    let (k, n_pad) = (w.k(), w.n_pad());
    widened.clear();
    widened.extend(a.iter().map(|&x| x as i16));
    let k2 = k / 2;
    let (a, b, s, c) = (
        widened.as_ptr(),
        w.data().as_ptr(),
        start.as_ptr(),
        sums.as_mut_ptr(),
    );
    macro_rules! rows {
        ($($r:literal)*) => {
            match r {
                $($r => for t in 0..n_pad / NR {
                    // SAFETY: as in `block`'s contract.
                    unsafe {
                        tile::<$r>(a, k, b.add(t * k2 * NR * 2), k2, s.add(t * NR), c.add(t * NR), n_pad)
                    }
                },)*
                _ => unreachable!("at most MR rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6);
}

/// One tile: `R` rows × 16 columns, over all of `k` (`k2` pairs).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile<const R: usize>(
    a: *const i16,
    lda: usize,
    b: *const i8,
    k2: usize,
    start: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's bounds (see `block`).
    unsafe {
        let s0 = _mm256_loadu_si256(start as *const _);
        let s1 = _mm256_loadu_si256(start.add(8) as *const _);
        let mut acc = [[s0, s1]; R];
        for kk in 0..k2 {
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(kk * NR * 2) as *const _));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(kk * NR * 2 + 16) as *const _));
            for (row, acc) in acc.iter_mut().enumerate() {
                let pair = (a.add(row * lda + kk * 2) as *const i32).read_unaligned();
                let av = _mm256_set1_epi32(pair);
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b1));
            }
        }
        for (row, acc) in acc.iter().enumerate() {
            _mm256_storeu_si256(c.add(row * ldc) as *mut _, acc[0]);
            _mm256_storeu_si256(c.add(row * ldc + 8) as *mut _, acc[1]);
        }
    }
}
