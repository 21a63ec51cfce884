//! [`crate::kernels::qgemm`] on cores without the dot product (Cortex-A53 of the Pi Zero 2 W and
//! Pi 3, Cortex-A72 of the Pi 4): 4 rows x 4 columns per tile, 8-bit `smull`/`smlal2` + `sadalp`.
//!
//! tract's arm64 int8 kernel widens both sides to 16 bits and multiplies 4 lanes per `smlal`;
//! here the bytes are multiplied as bytes, 8 lanes per instruction, as onnxruntime's non-dotprod
//! kernel does: `smull` and `smlal2` put two products of one column and one row into each i16
//! lane, and `sadalp` adds the lanes' pairs into four i32 sums, reduced across lanes once at the
//! end of the tile. Per 16 inputs of one row and one column: 3 instructions, against 4 `smlal`
//! (plus the widening) in tract's.
//!
//! Exact because the activation is shifted to `x - 128` (in −128..=127, as in
//! [`super::qgemm_dot`]) and the weights are in −127..=127 (every symmetric int8 quantizer's range,
//! edgebert's and onnxruntime's included): two products are at most 2 · 128 · 127 = 32512 < 2^15.
//! A weight of −128 could overflow; [`PackedWeights::pack_nk_for`] refuses such weights for this
//! kernel and the engine leaves tract's product in place.
//!
//! The packing: per tile of 4 columns, per group of 16 inputs, each column's 16 bytes.

use std::arch::aarch64::*;

use crate::kernels::qgemm::{Kernel, PackedWeights};

const NR: usize = 4;

/// The sums of one block of `r ≤ 4` rows (`a`: `r` rows of `k` bytes) into `sums` (`r` rows of
/// `n_pad`), starting from `start`; `shifted` is scratch space (the rows minus 128), kept between
/// blocks.
///
/// # Safety
/// `w` is packed for [`Kernel::NeonMull`]; the slices hold what is said above.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn block(
    a: &[u8],
    r: usize,
    w: &PackedWeights,
    start: &[i32],
    sums: &mut [i32],
    shifted: &mut Vec<i8>,
) {
    debug_assert_eq!(w.kernel(), Kernel::NeonMull);
    debug_assert!(r <= Kernel::NeonMull.mr());
    let (k, n_pad) = (w.k(), w.n_pad());
    super::shift_rows(a, shifted);
    let (a, b, s, c) = (
        shifted.as_ptr(),
        w.data().as_ptr(),
        start.as_ptr(),
        sums.as_mut_ptr(),
    );
    macro_rules! rows {
        ($($r:literal)*) => {
            match r {
                $($r => for t in 0..n_pad / NR {
                    // SAFETY: as in `block`'s contract.
                    unsafe { tile::<$r>(a, k, b.add(t * k * NR), s.add(t * NR), c.add(t * NR), n_pad) }
                },)*
                _ => unreachable!("at most MR rows"),
            }
        };
    }
    rows!(1 2 3 4);
}

/// One tile: `R` rows × 4 columns, over all of `k` (a multiple of 16).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn tile<const R: usize>(
    a: *const i8,
    lda: usize,
    b: *const i8,
    start: *const i32,
    c: *mut i32,
    ldc: usize,
) {
    // SAFETY: the caller's bounds (see `block`).
    unsafe {
        let mut acc = [[vdupq_n_s32(0); NR]; R];
        for k16 in 0..lda / 16 {
            let b = b.add(k16 * 16 * NR);
            let w = [
                vld1q_s8(b),
                vld1q_s8(b.add(16)),
                vld1q_s8(b.add(32)),
                vld1q_s8(b.add(48)),
            ];
            for (row, acc) in acc.iter_mut().enumerate() {
                let x = vld1q_s8(a.add(row * lda + k16 * 16));
                let x_low = vget_low_s8(x);
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    let pairs = vmlal_high_s8(vmull_s8(x_low, vget_low_s8(w)), x, w);
                    *acc = vpadalq_s16(*acc, pairs);
                }
            }
        }
        let s = vld1q_s32(start);
        for (row, acc) in acc.iter().enumerate() {
            // Lane j of the result: the four lanes of column j's sum added.
            let sum = vpaddq_s32(vpaddq_s32(acc[0], acc[1]), vpaddq_s32(acc[2], acc[3]));
            vst1q_s32(c.add(row * ldc), vaddq_s32(s, sum));
        }
    }
}
