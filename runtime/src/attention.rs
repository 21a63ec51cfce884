//! Multi-head self-attention in one pass per head, on CPUs with AVX-512 (`Attention` in
//! [`crate::ops`]).
//!
//! tract runs BERT's attention as two batched f32 matrix products (`Q·Kᵀ` and `P·V`, 12 heads of
//! 32 columns each), a packing of both sides of each, the scale, the mask's `Add` and its softmax
//! kernel: a third of the int8 student's time at 64 tokens once its int8 products were ours,
//! nearly half at 128. The products are small (`s × 32` by `32 × s` per head) and the packing
//! and per-head dispatch cost as much as the arithmetic. Here each head is one loop: `Kᵀ` of the
//! head copied once into a scratch row-major `d × s` block, then per query row the scores in
//! registers (`q · Kᵀ`, times the scale, plus the mask), tract's own exp kernel in the softmax,
//! and the row's output as `Σ p_j · v_j` straight into the output's columns of the head.
//!
//! Not bit-identical to tract's (its products sum in another order): equal within float
//! rounding, tested against tract's graph and f64.

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the engine uses it: where [`available`], unless `EDGEBERT_ATTENTION=off` is in the
/// environment (then tract's operators run, for comparisons).
pub fn enabled() -> bool {
    available() && std::env::var_os("EDGEBERT_ATTENTION").is_none_or(|v| v != "off")
}

/// The shapes of one attention: `batch` texts of `len` tokens, `heads` heads of `d` columns;
/// q, k, v and the output are row-major `[batch, len, heads · d]`, the mask `[mask_batch, len]`
/// (added to every score of a key; `mask_batch` 1 or `batch`).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub d: usize,
}

/// Head sizes the kernel takes: multiples of 16 up to 64 (MiniLM and BERT-base: 32 and 64).
pub fn supported_head(d: usize) -> bool {
    d > 0 && d.is_multiple_of(16) && d <= 64
}

/// `softmax(q·kᵀ · scale + mask) · v` per head, for the rows `rows` of the `batch · len` query
/// rows (`out` holds those rows): shares of rows can run on separate threads. `exp` is tract's
/// exp kernel, run on each row of scores. Needs [`available`].
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables, unused_mut))]
pub fn attention(
    shape: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    scale: f32,
    exp: &dyn tract_linalg::element_wise::ElementWise<f32>,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) -> Result<(), String> {
    let Shape {
        batch,
        len,
        heads,
        d,
    } = shape;
    let width = heads * d;
    let size = batch * len * width;
    if !supported_head(d)
        || [q.len(), k.len(), v.len()].iter().any(|&l| l != size)
        || rows.end > batch * len
        || out.len() != rows.len() * width
    {
        return Err(format!("attention: shapes do not match {shape:?}"));
    }
    if mask.len() != len && mask.len() != batch * len {
        return Err(format!("attention: mask of {} for {shape:?}", mask.len()));
    }
    if !available() {
        return Err("attention: this CPU has no AVX-512".into());
    }
    let padded = len.div_ceil(16) * 16;
    let mut kt = vec![0f32; d * padded];
    let mut scores = vec![0f32; BLOCK * padded];
    for h in 0..heads {
        let mut transposed = None;
        let mut first = rows.start;
        while first < rows.end {
            let b = first / len;
            let end = rows.end.min((b + 1) * len).min(first + BLOCK);
            let text = b * len * width..(b + 1) * len * width;
            if transposed != Some(b) {
                for (j, row) in k[text.clone()].chunks_exact(width).enumerate() {
                    for (t, &x) in row[h * d..(h + 1) * d].iter().enumerate() {
                        kt[t * padded + j] = x;
                    }
                }
                transposed = Some(b);
            }
            let mask = if mask.len() == len {
                mask
            } else {
                &mask[b * len..(b + 1) * len]
            };
            let block = &mut scores[..(end - first) * padded];
            for (r, row) in (first..end).zip(block.chunks_exact_mut(padded)) {
                let qi = &q[r * width + h * d..r * width + (h + 1) * d];
                // SAFETY: AVX-512F checked above; `kt` is `d × padded`, `row` `padded`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    scores_row(qi, &kt, scale, mask, row)
                };
            }
            // One call of tract's exp kernel for the block's rows (padding columns hold −1e30:
            // their exponentials are 0).
            exp.run(block).map_err(|e| e.to_string())?;
            for (r, row) in (first..end).zip(block.chunks_exact(padded)) {
                let o = (r - rows.start) * width + h * d;
                // SAFETY: as above; the text's `len` rows of `v`, the head's `d` columns at `h·d`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    weighted_rows(
                        &row[..len],
                        &v[text.clone()],
                        width,
                        h * d,
                        &mut out[o..o + d],
                    )
                };
            }
            first = end;
        }
    }
    Ok(())
}

/// Rows of scores per call of the exp kernel.
const BLOCK: usize = 32;

/// `row[j] = (q · kt[.., j]) · scale + mask[j] − max` for the `mask.len()` keys, `−1e30` for the
/// padding columns up to `row.len()` (a multiple of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_row(q: &[f32], kt: &[f32], scale: f32, mask: &[f32], row: &mut [f32]) {
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_rows(e: &[f32], v: &[f32], width: usize, col: usize, out: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight from the definition, in f64.
    fn reference(
        shape: Shape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &[f32],
        scale: f32,
    ) -> Vec<f64> {
        let Shape {
            batch,
            len,
            heads,
            d,
        } = shape;
        let width = heads * d;
        let mut out = vec![0f64; batch * len * width];
        for b in 0..batch {
            let m = |j: usize| if mask.len() == len { mask[j] } else { mask[b * len + j] } as f64;
            let at = |i: usize, h: usize, t: usize| (b * len + i) * width + h * d + t;
            for h in 0..heads {
                for i in 0..len {
                    let s: Vec<f64> = (0..len)
                        .map(|j| {
                            (0..d)
                                .map(|t| q[at(i, h, t)] as f64 * k[at(j, h, t)] as f64)
                                .sum::<f64>()
                                * scale as f64
                                + m(j)
                        })
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for t in 0..d {
                        out[at(i, h, t)] =
                            (0..len).map(|j| e[j] / sum * v[at(j, h, t)] as f64).sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition() {
        let exp = tract_linalg::routines::Func::Exp.ew_f32().unwrap();
        let mut seed = 0x9e37_79b9_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed % 20_001) as f32 / 10_000.0 - 1.0
        };
        for (batch, len, heads, d, per_text) in [
            (1, 1, 1, 16, false),
            (1, 37, 3, 32, false),
            (2, 16, 2, 64, true),
            (1, 70, 2, 48, false),
        ] {
            let shape = Shape {
                batch,
                len,
                heads,
                d,
            };
            let size = batch * len * heads * d;
            let mut gen = |n: usize, s: f32| (0..n).map(|_| next() * s).collect::<Vec<f32>>();
            let (q, k, v) = (gen(size, 3.0), gen(size, 3.0), gen(size, 1.0));
            let mut mask = vec![0f32; if per_text { batch * len } else { len }];
            let masked = mask.len() - 1;
            mask[masked] = -10000.0;
            let mut out = vec![0f32; size];
            let scale = 1.0 / (d as f32).sqrt();
            let done = attention(
                shape,
                &q,
                &k,
                &v,
                &mask,
                scale,
                exp.as_ref(),
                0..batch * len,
                &mut out,
            );
            // And in two shares of rows, as on two threads.
            let mut halves = vec![0f32; size];
            let cut = batch * len / 2;
            let (first, second) = halves.split_at_mut(cut * heads * d);
            if !available() {
                assert!(done.is_err());
                crate::kernels::skipped("attention kernel: no AVX-512 here");
                return;
            }
            done.unwrap();
            attention(shape, &q, &k, &v, &mask, scale, exp.as_ref(), 0..cut, first).unwrap();
            attention(
                shape,
                &q,
                &k,
                &v,
                &mask,
                scale,
                exp.as_ref(),
                cut..batch * len,
                second,
            )
            .unwrap();
            assert_eq!(halves, out);
            let want = reference(shape, &q, &k, &v, &mask, scale);
            for (i, (&x, &y)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{shape:?} [{i}]: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let exp = tract_linalg::routines::Func::Exp.ew_f32().unwrap();
        let shape = Shape {
            batch: 1,
            len: 2,
            heads: 1,
            d: 16,
        };
        let x = vec![0f32; 32];
        let mut out = vec![0f32; 32];
        let run = |shape, v: &[f32], mask: &[f32], rows, out: &mut [f32]| {
            attention(
                shape,
                &x[..v.len()],
                &x[..v.len()],
                v,
                mask,
                1.0,
                exp.as_ref(),
                rows,
                out,
            )
        };
        assert!(run(shape, &x[..16], &[0.0; 2], 0..2, &mut out).is_err());
        assert!(run(shape, &x, &[0.0; 3], 0..2, &mut out).is_err());
        assert!(run(shape, &x, &[0.0; 2], 0..3, &mut out).is_err());
        assert!(run(shape, &x, &[0.0; 2], 0..1, &mut out).is_err());
        let odd = Shape {
            d: 8,
            heads: 2,
            ..shape
        };
        assert!(run(odd, &x, &[0.0; 2], 0..2, &mut out).is_err());
    }
}
