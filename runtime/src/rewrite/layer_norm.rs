//! [`fuse_layer_norm`]: tract's five-node layer normalisation → [`LayerNorm`].

use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_hir::internal::*;

use super::{next_bin, per_column, sole_reader};
use crate::ops::LayerNorm;

/// Replaces each layer normalisation over the last axis, as tract's analysis leaves it —
/// `x → Reduce<Sum> → × 1/n (or ÷ n) → x − mean → RmsNorm → Mul(γ) → Add(β)`, with γ and β per
/// column and the middle values read by nothing else — by one [`LayerNorm`]; returns how many.
pub fn fuse_layer_norm(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::math::{Add, Div, Mul, Sub};
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

    let read_only_by = |outlet: OutletId, reader: usize| {
        sole_reader(model, outlet).is_some_and(|r| r.id == reader)
    };
    let bin_is = |node: &TypedNode, f: fn(&dyn BinMiniOp) -> bool| {
        node.inputs.len() == 2 && node.op_as::<TypedBinOp>().is_some_and(|b| f(&*b.0))
    };
    let mut matches = Vec::new();
    for node in &model.nodes {
        let Some(rms) = node.op_as::<RmsNorm>() else {
            continue;
        };
        let centred = node.inputs[0];
        let fact = model.outlet_fact(centred)?;
        let rank = fact.rank();
        let Some(n) = fact.shape.last().and_then(|d| d.to_usize().ok()) else {
            continue;
        };
        let Ok(eps) = rms.eps.cast_to_scalar::<f32>() else {
            continue;
        };
        if fact.datum_type != f32::datum_type() || rank == 0 || rms.axis != rank - 1 || n == 0 {
            continue;
        }
        // x − mean, read by the RmsNorm only.
        let sub = &model.nodes[centred.node];
        if !read_only_by(centred, node.id) || !bin_is(sub, |b| b.is::<Sub>()) {
            continue;
        }
        let (x, mean) = (sub.inputs[0], sub.inputs[1]);
        if model.outlet_fact(x)?.shape != fact.shape || !read_only_by(mean, sub.id) {
            continue;
        }
        // mean = Reduce<Sum>(x) × 1/n, or ÷ n.
        let scaling = &model.nodes[mean.node];
        let is_mul = bin_is(scaling, |b| b.is::<Mul>());
        if !(is_mul || bin_is(scaling, |b| b.is::<Div>())) {
            continue;
        }
        let (sum, by) = (scaling.inputs[0], scaling.inputs[1]);
        let by = model.outlet_fact(by)?.konst.as_ref();
        let Some(by) = by.and_then(|k| (k.len() == 1).then(|| k.cast_to_scalar::<f32>().ok()))
        else {
            continue;
        };
        let Some(by) = by else { continue };
        let len = n as f32;
        let is_mean = if is_mul {
            (by * len - 1.0).abs() <= 1e-6
        } else {
            by == len
        };
        let reduce = &model.nodes[sum.node];
        let sums_x = reduce.op_as::<Reduce>().is_some_and(|r| {
            r.reducer == Reducer::Sum && r.axes[..] == [rank - 1] && reduce.inputs[0] == x
        });
        if !is_mean || !sums_x || !read_only_by(sum, scaling.id) {
            continue;
        }
        // × γ + β.
        let Some((mul, gamma)) = next_bin::<Mul>(model, OutletId::new(node.id, 0)) else {
            continue;
        };
        let Some((add, beta)) = next_bin::<Add>(model, OutletId::new(mul, 0)) else {
            continue;
        };
        let same_shape = |o: OutletId| model.outlet_fact(o).is_ok_and(|f| f.shape == fact.shape);
        if per_column(model.outlet_fact(gamma)?, rank, n)
            && per_column(model.outlet_fact(beta)?, rank, n)
            && same_shape(OutletId::new(mul, 0))
            && same_shape(OutletId::new(add, 0))
        {
            matches.push((x, gamma, beta, eps, add, node.name.clone()));
        }
    }
    for (x, gamma, beta, eps, last, name) in &matches {
        let mut patch = TypedModelPatch::default();
        let inputs = [
            patch.tap_model(model, *x)?,
            patch.tap_model(model, *gamma)?,
            patch.tap_model(model, *beta)?,
        ];
        let y = patch.wire_node(format!("{name}.layer_norm"), LayerNorm::new(*eps), &inputs)?;
        patch.shunt_outside(model, OutletId::new(*last, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(matches.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// tract's layer normalisation (`Reduce<Sum>`, × 1/n, −, `RmsNorm`, × γ, + β) and the fused
    /// [`LayerNorm`], and each build of its loop, against the same sums in f64.
    #[test]
    fn layer_norm_matches_tract_and_f64() {
        use tract_onnx::tract_core::ops::math;
        use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};
        let mut seed = 0x9e37_79b9_u32;
        let mut uniform = move |count: usize, scale: f32, offset: f32| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 10_007) as f32 / 10_007.0 * scale + offset
                })
                .collect()
        };
        let eps = 1e-12f32;
        for (rows, n) in [(5usize, 40usize), (3, 384), (2, 7)] {
            // Rows far from zero, as after a residual: centring must happen before squaring.
            let xs = uniform(rows * n, 8.0, 20.0);
            let gamma = uniform(n, 2.0, -1.0);
            let beta = uniform(n, 1.0, -0.5);
            let want: Vec<f64> = xs
                .chunks(n)
                .flat_map(|row| {
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                    let var =
                        row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                    let inv = 1.0 / (var + eps as f64).sqrt();
                    let (gamma, beta) = (&gamma, &beta);
                    row.iter().enumerate().map(move |(c, &v)| {
                        (v as f64 - mean) * inv * gamma[c] as f64 + beta[c] as f64
                    })
                })
                .collect();
            let close = |got: &[f32], what: &str| {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
                        "{what} ({rows}×{n}): {g} vs {w}"
                    );
                }
            };
            for isa in Isa::available() {
                let mut ys = vec![0f32; xs.len()];
                isa.layer_norm(&xs, &gamma, &beta, eps, &mut ys);
                close(&ys, &format!("{isa:?}"));
            }

            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, rows, n])).unwrap();
            let column = |v: &[f32]| tensor1(v).into_shape(&[1, 1, n]).unwrap();
            let g = model.add_const("gamma", column(&gamma)).unwrap();
            let b = model.add_const("beta", column(&beta)).unwrap();
            let inv_n = model
                .add_const("inv_n", tensor3(&[[[1.0 / n as f32]]]))
                .unwrap();
            let sum = Reduce::new(tvec!(2), Reducer::Sum);
            let sum = model.wire_node("sum", sum, &[x]).unwrap();
            let mean = model
                .wire_node("mean", math::mul(), &[sum[0], inv_n])
                .unwrap();
            let d = model.wire_node("d", math::sub(), &[x, mean[0]]).unwrap();
            let rms = RmsNorm {
                axis: 2,
                eps: tensor0(eps).into_arc_tensor(),
            };
            let normed = model.wire_node("rms", rms, &d).unwrap();
            let scaled = model
                .wire_node("gamma_mul", math::mul(), &[normed[0], g])
                .unwrap();
            let y = model
                .wire_node("beta_add", math::add(), &[scaled[0], b])
                .unwrap();
            model.select_output_outlets(&y).unwrap();
            let mut fused = model.clone();
            assert_eq!(fuse_layer_norm(&mut fused).unwrap(), 1);
            let run = |m: TypedModel| {
                let input = tensor1(&xs).into_shape(&[1, rows, n]).unwrap();
                let out = m
                    .into_optimized()
                    .unwrap()
                    .into_runnable()
                    .unwrap()
                    .run(tvec!(input.into_tvalue()))
                    .unwrap();
                let out = out[0].try_as_plain_ram().unwrap();
                out.as_slice::<f32>().unwrap().to_vec()
            };
            close(&run(model), "tract");
            close(&run(fused), "fused");
        }
    }
}
