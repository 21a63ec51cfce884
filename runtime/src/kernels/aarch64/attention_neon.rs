//! The two row loops of [`crate::kernels::attention`] on NEON (4 lanes): the same order of
//! operations as the x86_64 builds, so the same answers within float rounding.

use std::arch::aarch64::*;

/// `row[j] = (q · kt[.., j]) · scale + mask[j] − max` for the `mask.len()` keys, `−1e30` for the
/// padding columns up to `row.len()` (a multiple of 16).
///
/// # Safety
/// `kt` holds `q.len()` rows of `row.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn scores_row(q: &[f32], kt: &[f32], scale: f32, mask: &[f32], row: &mut [f32]) {
    let (len, padded) = (mask.len(), row.len());
    debug_assert!(padded.is_multiple_of(16) && kt.len() >= q.len() * padded);
    let (kt, out) = (kt.as_ptr(), row.as_mut_ptr());
    // SAFETY: the contract above; the mask is read whole 4 lanes at a time only where all 4 are
    // keys, lane by lane at the end.
    unsafe {
        let scale = vdupq_n_f32(scale);
        let mut max = vdupq_n_f32(f32::NEG_INFINITY);
        // 16 columns (4 registers) at a time: the padding makes every block whole.
        for j0 in (0..padded).step_by(16) {
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut keys = kt.add(j0);
            for &x in q {
                acc[0] = vfmaq_n_f32(acc[0], vld1q_f32(keys), x);
                acc[1] = vfmaq_n_f32(acc[1], vld1q_f32(keys.add(4)), x);
                acc[2] = vfmaq_n_f32(acc[2], vld1q_f32(keys.add(8)), x);
                acc[3] = vfmaq_n_f32(acc[3], vld1q_f32(keys.add(12)), x);
                keys = keys.add(padded);
            }
            for (c, acc) in acc.iter().enumerate() {
                let col = j0 + 4 * c;
                // The scale, then the mask: tract's order.
                let s = if col + 4 <= len {
                    vaddq_f32(vmulq_f32(*acc, scale), vld1q_f32(mask.as_ptr().add(col)))
                } else {
                    let mut lanes = [-1e30f32; 4];
                    let mut scaled = [0f32; 4];
                    vst1q_f32(scaled.as_mut_ptr(), vmulq_f32(*acc, scale));
                    for (l, lane) in lanes.iter_mut().enumerate().take(len.saturating_sub(col)) {
                        *lane = scaled[l] + mask[col + l];
                    }
                    vld1q_f32(lanes.as_ptr())
                };
                max = vmaxq_f32(max, s);
                vst1q_f32(out.add(col), s);
            }
        }
        let max = vdupq_n_f32(vmaxvq_f32(max));
        for col in (0..padded).step_by(4) {
            vst1q_f32(out.add(col), vsubq_f32(vld1q_f32(out.add(col)), max));
        }
    }
}

/// `out = Σ_j e[j] · v[j, col..col + d] / Σ_j e[j]` (`e` the row's exponentials, `d = out.len()`
/// a multiple of 16 up to 64).
///
/// # Safety
/// `v` holds `e.len()` rows of `width ≥ col + out.len()`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn weighted_rows(
    e: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    out: &mut [f32],
) {
    // SAFETY: the contract above.
    unsafe {
        match out.len() {
            16 => weighted::<4>(e, v, width, col, out),
            32 => weighted::<8>(e, v, width, col, out),
            48 => weighted::<12>(e, v, width, col, out),
            64 => weighted::<16>(e, v, width, col, out),
            d => unreachable!("head size {d}: the operator takes multiples of 16 up to 64"),
        }
    }
}

/// [`weighted_rows`] for a head of `4 · C` columns: `C` accumulators, in registers.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn weighted<const C: usize>(
    e: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    out: &mut [f32],
) {
    // SAFETY: as in `weighted_rows`.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); C];
        let mut row = v.as_ptr().add(col);
        for &ej in e {
            for (c, acc) in acc.iter_mut().enumerate() {
                *acc = vfmaq_n_f32(*acc, vld1q_f32(row.add(4 * c)), ej);
            }
            row = row.add(width);
        }
        let mut sum = vdupq_n_f32(0.0);
        let mut at = 0;
        while at + 4 <= e.len() {
            sum = vaddq_f32(sum, vld1q_f32(e.as_ptr().add(at)));
            at += 4;
        }
        let tail: f32 = e[at..].iter().sum();
        let inv = vdupq_n_f32(1.0 / (vaddvq_f32(sum) + tail));
        for (c, acc) in acc.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(4 * c), vmulq_f32(*acc, inv));
        }
    }
}
