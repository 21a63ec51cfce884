//! [`crate::kernels::qgemm`] on cores with Armv8.2's dot product (Cortex-A76, Raspberry Pi 5):
//! 8 rows x 8 columns per tile, `sdot` by element.
//!
//! `sdot vd.4s, vn.16b, vm.4b[i]` adds to each of `vd`'s four i32 lanes the dot product of four
//! signed bytes of `vn` (one column's group of 4 inputs) with the 4 bytes of `vm`'s lane `i` (the
//! row's group): the packing is the VNNI one (group 4). It is signed on both sides, so the block's
//! activation rows are first copied shifted to `x - 128` (`x ^ 0x80`, exact in i8) and the sums
//! start from `(128 - a0) * sum w` ([`Kernel::activation_offset`]). 16 accumulators, the 8 rows'
//! 16 bytes (4 groups each) and 2 weight registers: 26 of the 32 vector registers.
//!
//! Written with one `asm!` per `sdot`: Rust's `vdotq_laneq_s32` is not stable (rust-lang#117224);
//! the rest is intrinsics, and the compiler allocates the registers.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kernels::qgemm::{Kernel, PackedWeights};

const NR: usize = 8;

/// The sums of one block of `r ≤ 8` rows (`a`: `r` rows of `k` bytes) into `sums` (`r` rows of
/// `n_pad`), starting from `start`; `shifted` is scratch space (the rows minus 128), kept between
/// blocks.
///
/// # Safety
/// The CPU has the dot product extension; `w` is packed for [`Kernel::NeonDot`]; the slices hold
/// what is said above.
#[target_feature(enable = "neon,dotprod")]
pub(crate) unsafe fn block(
    a: &[u8],
    r: usize,
    w: &PackedWeights,
    start: &[i32],
    sums: &mut [i32],
    shifted: &mut Vec<i8>,
) {
    debug_assert_eq!(w.kernel(), Kernel::NeonDot);
    debug_assert!(r <= Kernel::NeonDot.mr());
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
    rows!(1 2 3 4 5 6 7 8);
}

/// `acc += dot(w's four columns, lane $lane of a)`.
macro_rules! sdot {
    ($acc:expr, $w:expr, $a:expr, $lane:literal) => {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) $acc,
            w = in(vreg) $w,
            a = in(vreg) $a,
            lane = const $lane,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
}

/// One tile: `R` rows × 8 columns, over all of `k` (a multiple of 16).
#[target_feature(enable = "neon,dotprod")]
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
        let s0 = vld1q_s32(start);
        let s1 = vld1q_s32(start.add(4));
        let mut acc = [[s0, s1]; R];
        let mut rows = [vdupq_n_s8(0); R];
        for k16 in 0..lda / 16 {
            for (row, v) in rows.iter_mut().enumerate() {
                *v = vld1q_s8(a.add(row * lda + k16 * 16));
            }
            let b = b.add(k16 * 16 * NR);
            macro_rules! group {
                ($g:literal) => {
                    let w0 = vld1q_s8(b.add($g * 4 * NR));
                    let w1 = vld1q_s8(b.add($g * 4 * NR + 16));
                    for (acc, v) in acc.iter_mut().zip(&rows) {
                        sdot!(acc[0], w0, *v, $g);
                        sdot!(acc[1], w1, *v, $g);
                    }
                };
            }
            group!(0);
            group!(1);
            group!(2);
            group!(3);
        }
        for (row, acc) in acc.iter().enumerate() {
            vst1q_s32(c.add(row * ldc), acc[0]);
            vst1q_s32(c.add(row * ldc + 4), acc[1]);
        }
    }
}
