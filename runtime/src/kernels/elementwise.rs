//! The element-wise loops of the runtime's operators (quantize, dequantize, GELU's steps, layer
//! normalisation), each compiled once per [`Isa`] by `multiversion!` and dispatched to the widest
//! build this CPU runs; the loops themselves are portable (`generic/elementwise.rs`).

use super::generic::elementwise::*;
use super::Isa;

multiversion! {
    /// ONNX's scale and zero point for `xs`: the range `[min(xs, 0), max(xs, 0)]` mapped onto
    /// 0..=255.
    pub fn scale_and_zero_point / scale_and_zero_point_body(xs: &[f32]) -> (f32, u8)
}

multiversion! {
    /// `ys[i] = saturate(round_half_even(xs[i] / scale) + zero_point)`.
    pub fn quantize / quantize_per_isa(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8])
}

/// The portable loop, but on aarch64 its NEON build (`aarch64/quantize_neon.rs`).
#[inline(always)]
fn quantize_per_isa(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    #[cfg(target_arch = "aarch64")]
    super::aarch64::quantize_neon::quantize(xs, scale, zero_point, ys);
    #[cfg(not(target_arch = "aarch64"))]
    quantize_body(xs, scale, zero_point, ys);
}

multiversion! {
    /// GELU's first step, as tract's `GeluExact` does it: `ys[i] = xs[i] · (1/√2)`.
    pub(crate) fn gelu_scale / gelu_scale_body(xs: &[f32], ys: &mut [f32])
}

multiversion! {
    /// GELU's last step, as tract's `GeluExact` does it: `xs[i] = (xs[i] · 0.5) · (erfs[i] + 1)`.
    pub(crate) fn gelu_finish / gelu_finish_body(xs: &mut [f32], erfs: &[f32])
}

multiversion! {
    /// Each row of `xs` (rows as long as `gamma`) normalised: `(x − mean) / √(var + eps) · γ + β`.
    pub(crate) fn layer_norm / layer_norm_body(xs: &[f32], gamma: &[f32], beta: &[f32], eps: f32, ys: &mut [f32])
}

multiversion! {
    /// `ys[i] = f32(acc[i]) · scale[c] + bias[c] (+ residual[i] unless it is empty)`, `c = i mod n`,
    /// `n` the length of `scale`.
    pub(crate) fn dequantize_bias / dequantize_bias_body(acc: &[i32], scale: &[f32], bias: &[f32], residual: &[f32], ys: &mut [f32])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's own element-wise definition (tract-onnx's `dynamic_quantize_linear_f32_u8`).
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let (mut min, mut max) = (0f32, 0f32);
        for &x in xs {
            if x < min {
                min = x
            } else if x > max {
                max = x
            }
        }
        let scale = (max - min) / 255.0;
        let zp = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let q = xs
            .iter()
            .map(|&x| (((x / scale).round_ties_even() as i32) + zp as i32).clamp(0, 255) as u8)
            .collect();
        (q, scale, zp)
    }

    /// Every build of the loops this CPU runs (baseline, AVX2, AVX-512) against tract's.
    fn check(xs: &[f32]) {
        let (want, want_scale, want_zp) = reference(xs);
        for isa in Isa::available() {
            let (scale, zp) = isa.scale_and_zero_point(xs);
            assert_eq!(
                scale.to_bits(),
                want_scale.to_bits(),
                "{isa:?}: scale of {xs:?}"
            );
            assert_eq!(zp, want_zp, "{isa:?}");
            let mut got = vec![0u8; xs.len()];
            isa.quantize(xs, scale, zp, &mut got);
            assert_eq!(got, want, "{isa:?}: {xs:?}");
        }
    }

    #[test]
    fn the_widest_instruction_set_is_picked() {
        let available = Isa::available();
        assert_eq!(available[0], Isa::Baseline);
        assert_eq!(Isa::best(), *available.last().unwrap());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            available.contains(&Isa::Avx2),
            std::is_x86_feature_detected!("avx2")
        );
    }

    #[test]
    fn onnx_examples() {
        // From the ONNX operator documentation.
        let cases: [(&[f32], &[u8], u8); 2] = [
            (
                &[0., 2., -3., -2.5, 1.34, 0.5],
                &[153, 255, 0, 26, 221, 179],
                153,
            ),
            (
                &[-1., -2.1, -1.3, -2.5, -3.34, -4.],
                &[191, 121, 172, 96, 42, 0],
                255,
            ),
        ];
        for (xs, want, want_zp) in cases {
            let (scale, zp) = scale_and_zero_point(xs);
            assert_eq!(zp, want_zp);
            let mut got = vec![0u8; xs.len()];
            quantize(xs, scale, zp, &mut got);
            assert_eq!(got, want);
            check(xs);
        }
    }

    #[test]
    fn ties_round_to_even() {
        // Scale 1 (range 0..255), so x / scale is x: halves must go to the even neighbour.
        let mut xs: Vec<f32> = vec![0.0, 255.0];
        xs.extend([0.5, 1.5, 2.5, 3.5, 100.5, 253.5, 254.5]);
        check(&xs);
        let (scale, zp) = scale_and_zero_point(&xs);
        let mut got = vec![0u8; xs.len()];
        quantize(&xs, scale, zp, &mut got);
        assert_eq!(&got[2..], &[0, 2, 2, 4, 100, 254, 254]);
    }

    #[test]
    fn degenerate_inputs() {
        check(&[0.0; 40]);
        check(&[3.0; 33]);
        check(&[-7.0; 17]);
        check(&[]);
        check(&[1e30, -1e30, 5.0, 0.0]);
        // Subnormals, with a normal scale (flushed) and as the whole range (not flushed).
        let tiny = f32::MIN_POSITIVE / 8.0;
        check(&[tiny, -tiny, 2.0, -1.0, 3.0 * tiny]);
        check(&[tiny, -tiny, 2.0 * tiny, -5.0 * tiny, 0.0]);
        // The same past one 16-value step of the vector builds.
        check(&[1e30, -1e30, 5.0, 0.0].repeat(9));
        check(&[tiny, -tiny, 2.0, -1.0, 3.0 * tiny].repeat(7));
        check(&[tiny, -tiny, 2.0 * tiny, -5.0 * tiny, 0.0].repeat(7));
    }

    /// GELU's two steps around tract's erf, in each build, as tract's `GeluExact` computes them.
    #[test]
    fn gelu_steps_match_tract_in_every_build() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let erfs: Vec<f32> = xs.iter().map(|x| (x * 0.37).tanh()).collect();
        let c = (2.0f32).sqrt().recip();
        for isa in Isa::available() {
            let mut scaled = vec![0f32; xs.len()];
            isa.gelu_scale(&xs, &mut scaled);
            let mut finished = xs.clone();
            isa.gelu_finish(&mut finished, &erfs);
            for i in 0..xs.len() {
                assert_eq!(scaled[i].to_bits(), (xs[i] * c).to_bits(), "{isa:?}");
                let want = (xs[i] * 0.5) * (erfs[i] + 1.0);
                assert_eq!(finished[i].to_bits(), want.to_bits(), "{isa:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_tract_bit_for_bit(xs in proptest::collection::vec(-1e4f32..1e4, 0..300),
                                     scale_by in -8i32..8) {
            let k = 2f32.powi(scale_by);
            let xs: Vec<f32> = xs.iter().map(|x| x * k).collect();
            check(&xs);
        }
    }
}
