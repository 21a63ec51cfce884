//! [`crate::kernels::elementwise::quantize`] on NEON: 16 values per step, bit for bit the
//! portable loop's (and tract's) answers.
//!
//! The portable loop compiles to 4-lane code on aarch64 but spends about 4 instructions per value
//! on rounding and clamping by compares. NEON has each step as one instruction: `frintn` rounds
//! half to even, `fcvtnu` converts to u32 saturating below 0 (and NaN to 0, as the portable loop
//! does), `uqxtn` narrows saturating above 255. The flush of subnormals and the division by the
//! scale are the portable loop's (`generic/elementwise.rs` says why).

use std::arch::aarch64::*;

use crate::kernels::generic::elementwise::quantize_body;

/// `ys[i] = saturate(round_half_even(xs[i] / scale) + zero_point)` (`xs` and `ys` of one length).
pub(crate) fn quantize(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    let n = xs.len().min(ys.len());
    let whole = n / 16 * 16;
    // SAFETY: NEON is in aarch64's baseline; the loop reads and writes within `whole`.
    unsafe {
        let flush = scale >= 1e-30;
        let (s, zp) = (vdupq_n_f32(scale), vdupq_n_f32(f32::from(zero_point)));
        let (tiny, zero) = (vdupq_n_f32(f32::MIN_POSITIVE), vdupq_n_f32(0.0));
        let one = |at: usize| -> uint32x4_t {
            let x = vld1q_f32(xs.as_ptr().add(at));
            // |x| ≥ MIN_POSITIVE, or 0 (NaN fails the compare and becomes 0 as in the loop).
            let x = if flush {
                vbslq_f32(vcageq_f32(x, tiny), x, zero)
            } else {
                x
            };
            vcvtnq_u32_f32(vaddq_f32(vrndnq_f32(vdivq_f32(x, s)), zp))
        };
        for at in (0..whole).step_by(16) {
            let low = vcombine_u16(vqmovn_u32(one(at)), vqmovn_u32(one(at + 4)));
            let high = vcombine_u16(vqmovn_u32(one(at + 8)), vqmovn_u32(one(at + 12)));
            vst1q_u8(
                ys.as_mut_ptr().add(at),
                vcombine_u8(vqmovn_u16(low), vqmovn_u16(high)),
            );
        }
    }
    quantize_body(&xs[whole..n], scale, zero_point, &mut ys[whole..n]);
}
