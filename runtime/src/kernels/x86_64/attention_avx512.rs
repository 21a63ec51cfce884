//! The two row loops of [`crate::kernels::attention`] on AVX-512F (16 lanes): the scores of a
//! query row in registers, and the row's output as the exponentials' weighted sum of `v`.

/// `row[j] = (q · kt[.., j]) · scale + mask[j] − max` for the `mask.len()` keys, `−1e30` for the
/// padding columns up to `row.len()` (a multiple of 16).
///
/// # Safety
/// The CPU has AVX-512F; `kt` holds `q.len()` rows of `row.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn scores_row(q: &[f32], kt: &[f32], scale: f32, mask: &[f32], row: &mut [f32]) {
    use std::arch::x86_64::*;
    let (len, padded) = (mask.len(), row.len());
    let (kt, out) = (kt.as_ptr(), row.as_mut_ptr());
    // SAFETY: `kt` holds `q.len()` rows of `padded`; `row` holds `padded`; the mask is read
    // with lanes masked off past `len` (masked loads do not fault there).
    unsafe {
        let scale = _mm512_set1_ps(scale);
        let pad = _mm512_set1_ps(-1e30);
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut j0 = 0;
        while j0 < padded {
            let chunks = ((padded - j0) / 16).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            for (t, &x) in q.iter().enumerate() {
                let x = _mm512_set1_ps(x);
                let keys = kt.add(t * padded + j0);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = _mm512_fmadd_ps(x, _mm512_loadu_ps(keys.add(16 * c)), *acc);
                }
            }
            for (c, acc) in acc.iter().enumerate().take(chunks) {
                let col = j0 + 16 * c;
                let valid = len.saturating_sub(col).min(16);
                let lanes = ((1u32 << valid) - 1) as __mmask16;
                let m = _mm512_maskz_loadu_ps(lanes, mask.as_ptr().add(col.min(len)));
                // The scale, then the mask: tract's order.
                let s = _mm512_add_ps(_mm512_mul_ps(*acc, scale), m);
                let s = _mm512_mask_blend_ps(lanes, pad, s);
                max = _mm512_max_ps(max, s);
                _mm512_storeu_ps(out.add(col), s);
            }
            j0 += 16 * chunks;
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        for col in (0..padded).step_by(16) {
            _mm512_storeu_ps(
                out.add(col),
                _mm512_sub_ps(_mm512_loadu_ps(out.add(col)), max),
            );
        }
    }
}

/// `out = Σ_j e[j] · v[j, col..col + d] / Σ_j e[j]` (`e` the row's exponentials). Four keys at a
/// time into four sets of sums, so the additions do not wait on each other.
///
/// # Safety
/// The CPU has AVX-512F; `v` holds `e.len()` rows of `width ≥ col + out.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn weighted_rows(
    e: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let chunks = out.len() / 16;
    // SAFETY: `v` holds `e.len()` rows of `width` ≥ `col + out.len()`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        let v = v.as_ptr().add(col);
        let quads = e.len() / 4 * 4;
        for j in (0..quads).step_by(4) {
            for (u, acc) in acc.iter_mut().enumerate() {
                let ej = _mm512_set1_ps(e[j + u]);
                let row = v.add((j + u) * width);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = _mm512_fmadd_ps(ej, _mm512_loadu_ps(row.add(16 * c)), *acc);
                }
            }
        }
        for (j, &ej) in e.iter().enumerate().skip(quads) {
            let ej = _mm512_set1_ps(ej);
            let row = v.add(j * width);
            for (c, acc) in acc[0].iter_mut().enumerate().take(chunks) {
                *acc = _mm512_fmadd_ps(ej, _mm512_loadu_ps(row.add(16 * c)), *acc);
            }
        }
        let mut sum = _mm512_setzero_ps();
        let mut at = 0;
        while at + 16 <= e.len() {
            sum = _mm512_add_ps(sum, _mm512_loadu_ps(e.as_ptr().add(at)));
            at += 16;
        }
        let rest = ((1u32 << (e.len() - at)) - 1) as __mmask16;
        sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(rest, e.as_ptr().add(at)));
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        let [a0, a1, a2, a3] = &acc;
        let sets = a0.iter().zip(a1).zip(a2.iter().zip(a3));
        for (c, ((x0, x1), (x2, x3))) in sets.enumerate().take(chunks) {
            let total = _mm512_add_ps(_mm512_add_ps(*x0, *x1), _mm512_add_ps(*x2, *x3));
            _mm512_storeu_ps(out.as_mut_ptr().add(16 * c), _mm512_mul_ps(total, inv));
        }
    }
}
