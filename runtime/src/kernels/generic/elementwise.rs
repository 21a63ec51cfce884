//! The element-wise loops, portable: written so that compilers vectorise them (lanes of
//! [`LANES`], compares rather than `f32::min`), and compiled per ISA by `crate::kernels::elementwise`.

/// Lanes of the min/max and quantize loops: wide enough for AVX-512 and four NEON registers.
pub(crate) const LANES: usize = 16;

#[inline(always)]
pub(crate) fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a += f(x);
    }
    acc.iter().sum()
}

#[inline(always)]
pub(crate) fn layer_norm_body(xs: &[f32], gamma: &[f32], beta: &[f32], eps: f32, ys: &mut [f32]) {
    let n = gamma.len();
    let len = n as f32;
    for (x, y) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
        let mean = lane_sum(x, |v| v) / len;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / len;
        let inv = 1.0 / (var + eps).sqrt();
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *y = (x - mean) * inv * g + b;
        }
    }
}

#[inline(always)]
pub(crate) fn dequantize_bias_body(
    acc: &[i32],
    scale: &[f32],
    bias: &[f32],
    residual: &[f32],
    ys: &mut [f32],
) {
    let n = scale.len();
    // Each step rounded on its own, in tract's order (no fused multiply-add).
    if residual.is_empty() {
        for (a, y) in acc.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
            for (((y, &a), &s), &b) in y.iter_mut().zip(a).zip(scale).zip(bias) {
                *y = a as f32 * s + b;
            }
        }
    } else {
        let rows = acc.chunks_exact(n).zip(residual.chunks_exact(n));
        for ((a, r), y) in rows.zip(ys.chunks_exact_mut(n)) {
            let columns = y.iter_mut().zip(a).zip(r).zip(scale).zip(bias);
            for ((((y, &a), &r), &s), &b) in columns {
                *y = a as f32 * s + b + r;
            }
        }
    }
}

/// tract's constant for GELU (`GeluExact`), computed the same way.
pub(crate) fn inv_sqrt2() -> f32 {
    2f32.sqrt().recip()
}

#[inline(always)]
pub(crate) fn gelu_scale_body(xs: &[f32], ys: &mut [f32]) {
    let c = inv_sqrt2();
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = x * c;
    }
}

#[inline(always)]
pub(crate) fn gelu_finish_body(xs: &mut [f32], erfs: &[f32]) {
    for (x, &e) in xs.iter_mut().zip(erfs) {
        *x = (*x * 0.5) * (e + 1.0);
    }
}

#[inline(always)]
pub(crate) fn scale_and_zero_point_body(xs: &[f32]) -> (f32, u8) {
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            // Written as compares, not f32::min/max, so they compile to plain SIMD min/max.
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &x in lo.iter().chain(tail) {
        if x < min {
            min = x;
        }
    }
    for &x in hi.iter().chain(tail) {
        if x > max {
            max = x;
        }
    }
    let scale = (max - min) / 255.0;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zero_point)
}

/// Rounds half to even for |x| < 2^22 by the float adder's own rounding (the default
/// round-to-nearest-even mode): exact there, and larger values saturate below anyway.
#[inline(always)]
pub(crate) fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

#[inline(always)]
pub(crate) fn quantize_body(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    // Subnormal inputs (GELU and masked softmax outputs are full of them) make the division
    // several times slower on x86_64. With a scale this large they quantize to the zero point
    // whatever their value, so they are replaced by 0 first: the result is the same bit for bit.
    if scale >= 1e-30 {
        quantize_with(xs, scale, zero_point, ys, |x| {
            if x.abs() >= f32::MIN_POSITIVE {
                x
            } else {
                0.0
            }
        })
    } else {
        quantize_with(xs, scale, zero_point, ys, |x| x)
    }
}

#[inline(always)]
pub(crate) fn quantize_with(
    xs: &[f32],
    scale: f32,
    zero_point: u8,
    ys: &mut [u8],
    flush: impl Fn(f32) -> f32,
) {
    let zp = f32::from(zero_point);
    let one = |x: f32| -> u8 {
        let q = flush(x) / scale;
        // Beyond ±2^22 the rounding trick is inexact but the result saturates all the same;
        // NaN (an all-zero input has scale 0) becomes 0 as in tract's version.
        let q = if q.abs() < 4_194_304.0 {
            round_ties_even_small(q)
        } else {
            q
        };
        let y = q + zp;
        // Written so that NaN fails both tests and lands on 0.
        let y = if y >= 0.0 { y } else { 0.0 };
        let y = if y <= 255.0 { y } else { 255.0 };
        // SAFETY: y is finite and in 0..=255 here, so the conversion is exact. (The checked
        // `as` conversion is half this loop's time on x86_64.)
        unsafe { y.to_int_unchecked::<i32>() as u8 }
    };
    let mut xc = xs.chunks_exact(LANES);
    let mut yc = ys.chunks_exact_mut(LANES);
    for (x, y) in (&mut xc).zip(&mut yc) {
        for i in 0..LANES {
            y[i] = one(x[i]);
        }
    }
    for (x, y) in xc.remainder().iter().zip(yc.into_remainder()) {
        *y = one(*x);
    }
}
