//! The two row loops of [`crate::kernels::attention`] on AVX2 + FMA (8 lanes): the same order of
//! operations as the AVX-512 build, so the same answers within float rounding.

/// `row[j] = (q · kt[.., j]) · scale + mask[j] − max` for the `mask.len()` keys, `−1e30` for the
/// padding columns up to `row.len()` (a multiple of 16).
///
/// # Safety
/// The CPU has AVX2 and FMA; `kt` holds `q.len()` rows of `row.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn scores_row(q: &[f32], kt: &[f32], scale: f32, mask: &[f32], row: &mut [f32]) {
    use std::arch::x86_64::*;
    let (len, padded) = (mask.len(), row.len());
    debug_assert!(kt.len() >= q.len() * padded);
    let (kt, out) = (kt.as_ptr(), row.as_mut_ptr());
    // SAFETY: the contract above; the mask is read with lanes masked off past `len`
    // (`vmaskmovps` does not fault on masked-off lanes).
    unsafe {
        let scale = _mm256_set1_ps(scale);
        let pad = _mm256_set1_ps(-1e30);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut j0 = 0;
        while j0 < padded {
            let chunks = ((padded - j0) / 8).min(4);
            let mut acc = [_mm256_setzero_ps(); 4];
            for (t, &x) in q.iter().enumerate() {
                let x = _mm256_set1_ps(x);
                let keys = kt.add(t * padded + j0);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(keys.add(8 * c)), *acc);
                }
            }
            for (c, acc) in acc.iter().enumerate().take(chunks) {
                let col = j0 + 8 * c;
                let valid = len.saturating_sub(col).min(8) as i32;
                let lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane);
                let m = _mm256_maskload_ps(mask.as_ptr().add(col.min(len)), lanes);
                // The scale, then the mask: tract's order.
                let s = _mm256_add_ps(_mm256_mul_ps(*acc, scale), m);
                let s = _mm256_blendv_ps(pad, s, _mm256_castsi256_ps(lanes));
                max = _mm256_max_ps(max, s);
                _mm256_storeu_ps(out.add(col), s);
            }
            j0 += 8 * chunks;
        }
        let max = _mm256_set1_ps(horizontal(max, f32::max));
        for col in (0..padded).step_by(8) {
            _mm256_storeu_ps(
                out.add(col),
                _mm256_sub_ps(_mm256_loadu_ps(out.add(col)), max),
            );
        }
    }
}

/// `out = Σ_j e[j] · v[j, col..col + d] / Σ_j e[j]` (`e` the row's exponentials, `d = out.len()`
/// a multiple of 8 up to 64). Two keys at a time into two sets of sums.
///
/// # Safety
/// The CPU has AVX2 and FMA; `v` holds `e.len()` rows of `width ≥ col + out.len()`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn weighted_rows(
    e: &[f32],
    v: &[f32],
    width: usize,
    col: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let chunks = out.len() / 8;
    debug_assert!(chunks <= 8);
    // SAFETY: the contract above.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 8]; 2];
        let v = v.as_ptr().add(col);
        let pairs = e.len() / 2 * 2;
        for j in (0..pairs).step_by(2) {
            for (u, acc) in acc.iter_mut().enumerate() {
                let ej = _mm256_set1_ps(e[j + u]);
                let row = v.add((j + u) * width);
                for (c, acc) in acc.iter_mut().enumerate().take(chunks) {
                    *acc = _mm256_fmadd_ps(ej, _mm256_loadu_ps(row.add(8 * c)), *acc);
                }
            }
        }
        for (j, &ej) in e.iter().enumerate().skip(pairs) {
            let ej = _mm256_set1_ps(ej);
            let row = v.add(j * width);
            for (c, acc) in acc[0].iter_mut().enumerate().take(chunks) {
                *acc = _mm256_fmadd_ps(ej, _mm256_loadu_ps(row.add(8 * c)), *acc);
            }
        }
        let mut sum = _mm256_setzero_ps();
        let mut at = 0;
        while at + 8 <= e.len() {
            sum = _mm256_add_ps(sum, _mm256_loadu_ps(e.as_ptr().add(at)));
            at += 8;
        }
        let tail: f32 = e[at..].iter().sum();
        let inv = _mm256_set1_ps(1.0 / (horizontal(sum, |a, b| a + b) + tail));
        let [a0, a1] = &acc;
        for (c, (x0, x1)) in a0.iter().zip(a1).enumerate().take(chunks) {
            let total = _mm256_add_ps(*x0, *x1);
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), _mm256_mul_ps(total, inv));
        }
    }
}

/// The eight lanes of `x` folded by `f`.
#[target_feature(enable = "avx2")]
fn horizontal(x: std::arch::x86_64::__m256, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 floats.
    unsafe { std::arch::x86_64::_mm256_storeu_ps(lanes.as_mut_ptr(), x) };
    lanes.into_iter().reduce(f).unwrap_or(0.0)
}
