//! [`crate::kernels::qgemm`] on AVX-512 VNNI: 12 rows x 32 columns per tile, `vpdpbusd` on the
//! u8 activation read in place (4 bytes broadcast per row and group) against the weights packed
//! in groups of 4 (two 512-bit registers per group of the tile's 32 columns).

use crate::kernels::qgemm::{Kernel, PackedWeights};

const NR: usize = 32;

/// The sums of one block of `r ≤ 12` rows (`a`: `r` rows of `k` bytes) into `sums` (`r` rows of
/// `n_pad`), starting from `start`.
///
/// # Safety
/// The CPU has AVX-512 F, BW and VNNI; `w` is packed for [`Kernel::Avx512Vnni`]; the slices
/// hold what is said above.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn block(a: &[u8], r: usize, w: &PackedWeights, start: &[i32], sums: &mut [i32]) {
    debug_assert_eq!(w.kernel(), Kernel::Avx512Vnni);
    debug_assert!(r <= Kernel::Avx512Vnni.mr());
    let (k, n_pad) = (w.k(), w.n_pad());
    let k4 = k / 4;
    let (a, b, s, c) = (
        a.as_ptr(),
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
                        tile::<$r>(a, k, b.add(t * k4 * NR * 4), k4, s.add(t * NR), c.add(t * NR), n_pad)
                    }
                },)*
                _ => unreachable!("at most MR rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
}

/// One tile: `R` rows × 32 columns, over all of `k`.
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
    // SAFETY: the caller's bounds (see `block`).
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
