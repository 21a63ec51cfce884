//! Multi-head self-attention in one pass per head, on x86_64 CPUs with AVX-512 or AVX2 + FMA and
//! on aarch64 (`Attention` in [`crate::ops`]); the row loops are per ISA
//! (`x86_64/attention_avx512.rs`, `x86_64/attention_avx2.rs`, `aarch64/attention_neon.rs`), the
//! f64 reference in `generic/attention.rs`.
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

/// The builds of the row loops, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86_64 with AVX-512F: 16 lanes.
    Avx512,
    /// x86_64 with AVX2 and FMA: 8 lanes.
    Avx2,
    /// aarch64 (NEON is in its baseline): 4 lanes.
    Neon,
}

impl Isa {
    /// Every build, widest first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Neon];

    /// The widest build this CPU runs, if any.
    pub fn best() -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.runs_here())
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512 => has!("avx512f"),
                Isa::Avx2 => has!("avx2") && has!("fma"),
                Isa::Neon => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            self == Isa::Neon
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }
}

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    Isa::best().is_some()
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
/// exp kernel, run on each row of scores. Needs [`available`]; runs the widest build.
#[allow(clippy::too_many_arguments)]
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
    let isa = Isa::best().ok_or("attention: no build of the kernel for this CPU")?;
    attention_with(isa, shape, q, k, v, mask, scale, exp, rows, out)
}

/// [`attention`] with the row loops of `isa` (an error where this CPU does not run it).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(unused_variables, unused_mut)
)]
pub(crate) fn attention_with(
    isa: Isa,
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
    if !isa.runs_here() {
        return Err(format!(
            "attention: this CPU does not run the {isa:?} build"
        ));
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
                // SAFETY: the ISA checked above; `kt` is `d × padded`, `row` `padded`.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    match isa {
                        Isa::Avx512 => avx512::scores_row(qi, &kt, scale, mask, row),
                        Isa::Avx2 => avx2::scores_row(qi, &kt, scale, mask, row),
                        Isa::Neon => unreachable!("checked: runs here"),
                    }
                };
                // SAFETY: as above.
                #[cfg(target_arch = "aarch64")]
                unsafe {
                    neon::scores_row(qi, &kt, scale, mask, row)
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
                    let (e, v, out) = (&row[..len], &v[text.clone()], &mut out[o..o + d]);
                    match isa {
                        Isa::Avx512 => avx512::weighted_rows(e, v, width, h * d, out),
                        Isa::Avx2 => avx2::weighted_rows(e, v, width, h * d, out),
                        Isa::Neon => unreachable!("checked: runs here"),
                    }
                };
                // SAFETY: as above.
                #[cfg(target_arch = "aarch64")]
                unsafe {
                    let (e, v, out) = (&row[..len], &v[text.clone()], &mut out[o..o + d]);
                    neon::weighted_rows(e, v, width, h * d, out)
                };
            }
            first = end;
        }
    }
    Ok(())
}

/// Rows of scores per call of the exp kernel.
const BLOCK: usize = 32;

#[cfg(target_arch = "aarch64")]
use super::aarch64::attention_neon as neon;
#[cfg(target_arch = "x86_64")]
use super::x86_64::{attention_avx2 as avx2, attention_avx512 as avx512};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::generic::attention::attention_reference as reference;

    /// Every build this CPU runs (the others are named as skipped) against the f64 reference.
    #[test]
    fn matches_the_definition() {
        for isa in Isa::ALL {
            if isa.runs_here() {
                matches_the_definition_with(isa);
            } else {
                crate::kernels::skipped(&format!("attention {isa:?}: not on this CPU"));
            }
        }
    }

    fn matches_the_definition_with(isa: Isa) {
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
            let done = attention_with(
                isa,
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
            done.unwrap();
            let half = |rows, out: &mut [f32]| {
                attention_with(
                    isa,
                    shape,
                    &q,
                    &k,
                    &v,
                    &mask,
                    scale,
                    exp.as_ref(),
                    rows,
                    out,
                )
            };
            half(0..cut, first).unwrap();
            half(cut..batch * len, second).unwrap();
            assert_eq!(halves, out);
            let want = reference(shape, &q, &k, &v, &mask, scale);
            for (i, (&x, &y)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (x as f64 - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{isa:?} {shape:?} [{i}]: {x} vs {y}"
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
