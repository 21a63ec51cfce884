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
    debug_assert!(kt.len() >= q.len() * padded);
    let (kt, out) = (kt.as_ptr(), row.as_mut_ptr());
    // SAFETY: the contract above; the mask is read whole 4 lanes at a time only where all 4 are
    // keys, lane by lane at the end.
    unsafe {
        let scale = vdupq_n_f32(scale);
        let mut max = vdupq_n_f32(f32::NEG_INFINITY);
        let mut j0 = 0;
        while j0 < padded {
            let chunks = ((padded - j0) / 4).min(4);
            let mut acc = [vdupq_n_f32(0.0); 4];
            for (t, &x) in q.iter().enumerate() {
                let keys = kt.add(t * padded + j0);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = vfmaq_n_f32(*acc, vld1q_f32(keys.add(4 * c)), x);
                }
            }
            for (c, acc) in acc.iter().enumerate().take(chunks) {
                let col = j0 + 4 * c;
                let valid = len.saturating_sub(col).min(4);
                let mut lanes = [-1e30f32; 4];
                if valid == 4 {
                    // The scale, then the mask: tract's order.
                    let s = vaddq_f32(vmulq_f32(*acc, scale), vld1q_f32(mask.as_ptr().add(col)));
                    vst1q_f32(lanes.as_mut_ptr(), s);
                } else if valid > 0 {
                    let mut s = [0f32; 4];
                    vst1q_f32(s.as_mut_ptr(), vmulq_f32(*acc, scale));
                    for (l, lane) in lanes.iter_mut().enumerate().take(valid) {
                        *lane = s[l] + mask[col + l];
                    }
                }
                let s = vld1q_f32(lanes.as_ptr());
                max = vmaxq_f32(max, s);
                vst1q_f32(out.add(col), s);
            }
            j0 += 4 * chunks;
        }
        let max = vdupq_n_f32(vmaxvq_f32(max));
        for col in (0..padded).step_by(4) {
            vst1q_f32(out.add(col), vsubq_f32(vld1q_f32(out.add(col)), max));
        }
    }
}

/// `out = Σ_j e[j] · v[j, col..col + d] / Σ_j e[j]` (`e` the row's exponentials, `d = out.len()`
/// a multiple of 16 up to 64). Two keys at a time into two sets of sums.
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
    let chunks = out.len() / 4;
    debug_assert!(chunks <= 16);
    // SAFETY: the contract above.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); 16]; 2];
        let v = v.as_ptr().add(col);
        let pairs = e.len() / 2 * 2;
        for j in (0..pairs).step_by(2) {
            for (u, acc) in acc.iter_mut().enumerate() {
                let ej = e[j + u];
                let row = v.add((j + u) * width);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = vfmaq_n_f32(*acc, vld1q_f32(row.add(4 * c)), ej);
                }
            }
        }
        for (j, &ej) in e.iter().enumerate().skip(pairs) {
            let row = v.add(j * width);
            for (c, acc) in acc[0].iter_mut().enumerate().take(chunks) {
                *acc = vfmaq_n_f32(*acc, vld1q_f32(row.add(4 * c)), ej);
            }
        }
        let mut sum = vdupq_n_f32(0.0);
        let mut at = 0;
        while at + 4 <= e.len() {
            sum = vaddq_f32(sum, vld1q_f32(e.as_ptr().add(at)));
            at += 4;
        }
        let tail: f32 = e[at..].iter().sum();
        let inv = vdupq_n_f32(1.0 / (vaddvq_f32(sum) + tail));
        let [a0, a1] = &acc;
        for (c, (x0, x1)) in a0.iter().zip(a1).enumerate().take(chunks) {
            let total = vaddq_f32(*x0, *x1);
            vst1q_f32(out.as_mut_ptr().add(4 * c), vmulq_f32(total, inv));
        }
    }
}
