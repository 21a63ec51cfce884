//! [`fuse_dequantize_bias`]: `Cast → Mul → Add (→ Add) (→ GELU)` after an int8 product →
//! [`DequantizeBias`].

use tract_onnx::tract_hir::internal::*;

use super::{next_bin, per_column, sole_reader};
use crate::ops::DequantizeBias;

/// Replaces each `Cast(i32 → f32) → Mul(scale) → Add(bias)`, and the `Add` of a value of the same
/// shape (the residual) after it if there is one, of `model` whose scale (one value, or one per
/// column) and bias vary only along the last axis (and whose middle values nothing else reads) by one [`DequantizeBias`]; returns
/// how many.
pub fn fuse_dequantize_bias(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::cast::Cast;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::math::{Add, Mul};
    use tract_onnx::tract_core::ops::nn::GeluExact;

    let mut matches = Vec::new();
    for node in &model.nodes {
        let Some(cast) = node.op_as::<Cast>() else {
            continue;
        };
        let acc = model.outlet_fact(node.inputs[0])?;
        if cast.to != f32::datum_type() || acc.datum_type != i32::datum_type() {
            continue;
        }
        let cast_out = OutletId::new(node.id, 0);
        let Some((mul, scale)) = next_bin::<Mul>(model, cast_out) else {
            continue;
        };
        let Some((add, bias)) = next_bin::<Add>(model, OutletId::new(mul, 0)) else {
            continue;
        };
        let Some(n) = acc.shape.last().and_then(|d| d.to_usize().ok()) else {
            continue;
        };
        let per_column = |fact: &TypedFact| per_column(fact, acc.rank(), n);
        let same_shape = |outlet: OutletId| {
            model
                .outlet_fact(outlet)
                .is_ok_and(|f| f.shape == acc.shape && f.datum_type == f32::datum_type())
        };
        // A per-tensor weight scale (onnxruntime's `quantize_dynamic` default) makes the scale
        // one value for all columns.
        let scale_fact = model.outlet_fact(scale)?;
        let one_value = scale_fact.datum_type == f32::datum_type()
            && scale_fact.rank() <= acc.rank()
            && scale_fact.shape.iter().all(|d| d.is_one());
        if (per_column(scale_fact) || one_value)
            && per_column(model.outlet_fact(bias)?)
            && same_shape(OutletId::new(mul, 0))
            && same_shape(OutletId::new(add, 0))
        {
            let residual =
                next_bin::<Add>(model, OutletId::new(add, 0)).filter(|&(add, residual)| {
                    same_shape(OutletId::new(add, 0)) && same_shape(residual)
                });
            let (last, residual) = match residual {
                Some((add, residual)) => (add, Some(residual)),
                None => (add, None),
            };
            let gelu = sole_reader(model, OutletId::new(last, 0)).filter(|n| {
                n.op_as::<ElementWiseOp>()
                    .is_some_and(|e| e.0.is::<GeluExact>() && e.1.is_none())
            });
            let op = DequantizeBias {
                gelu: gelu.is_some(),
            };
            let last = gelu.map_or(last, |n| n.id);
            matches.push((
                node.inputs[0],
                scale,
                bias,
                residual,
                last,
                op,
                node.name.clone(),
            ));
        }
    }
    for (acc, scale, bias, residual, last, op, name) in &matches {
        let mut patch = TypedModelPatch::default();
        let mut inputs = tvec![
            patch.tap_model(model, *acc)?,
            patch.tap_model(model, *scale)?,
            patch.tap_model(model, *bias)?,
        ];
        if let Some(residual) = residual {
            inputs.push(patch.tap_model(model, *residual)?);
        }
        let y = patch.wire_node(format!("{name}.dequantize_bias"), op.clone(), &inputs)?;
        patch.shunt_outside(model, OutletId::new(*last, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(matches.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    /// `Cast(i32 → f32) → Mul(scale) → Add(bias) [→ Add(residual)]` on random sums, as tract
    /// runs it and fused: the same bits (a fused multiply-add, or another order, would differ in
    /// the last place).
    #[test]
    fn dequantize_bias_matches_tract_bit_for_bit() {
        use tract_onnx::tract_core::ops::cast::cast;
        use tract_onnx::tract_core::ops::math;
        let (rows, n) = (7usize, 40usize);
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let acc: Vec<i32> = (0..rows * n)
            .map(|_| (next() % 2_000_001) as i32 - 1_000_000)
            .collect();
        let mut uniform = |count: usize, scale: f32, offset: f32| -> Vec<f32> {
            (0..count)
                .map(|_| (next() % 10_007) as f32 / 10_007.0 * scale + offset)
                .collect()
        };
        let scale = uniform(n, 2e-3, 1e-4);
        let bias = uniform(n, 2.0, -1.0);
        let residual = uniform(rows * n, 6.0, -3.0);

        // The last case: one scale for all columns (a per-tensor weight scale).
        for (with_residual, with_gelu, per_tensor) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (true, true, false),
            (true, false, true),
        ] {
            let mut model = TypedModel::default();
            let x = model.add_source("acc", i32::fact([1, rows, n])).unwrap();
            let r = model
                .add_source("residual", f32::fact([1, rows, n]))
                .unwrap();
            let column = |v: &[f32]| tensor1(v).into_shape(&[1, 1, n]).unwrap();
            let s = if per_tensor {
                model.add_const("scale", tensor3(&[[[scale[0]]]])).unwrap()
            } else {
                model.add_const("scale", column(&scale)).unwrap()
            };
            let b = model.add_const("bias", column(&bias)).unwrap();
            let c = model
                .wire_node("cast", cast(f32::datum_type()), &[x])
                .unwrap();
            let m = model.wire_node("mul", math::mul(), &[c[0], s]).unwrap();
            let mut y = model.wire_node("add", math::add(), &[m[0], b]).unwrap();
            if with_residual {
                y = model
                    .wire_node("add_residual", math::add(), &[r, y[0]])
                    .unwrap();
            }
            if with_gelu {
                use tract_onnx::tract_core::ops::nn::gelu_exact::gelu_exact;
                y = model.wire_node("gelu", gelu_exact(), &y).unwrap();
            }
            model.select_output_outlets(&y).unwrap();
            let mut fused = model.clone();
            assert_eq!(fuse_dequantize_bias(&mut fused).unwrap(), 1);
            let fused_node = fused.nodes.iter().find(|n| n.op_is::<DequantizeBias>());
            let fused_node = fused_node.unwrap();
            assert_eq!(fused_node.inputs.len(), 3 + usize::from(with_residual));
            assert_eq!(
                fused_node.op_as::<DequantizeBias>().unwrap().gelu,
                with_gelu
            );

            let inputs = tvec!(
                tensor1(&acc)
                    .into_shape(&[1, rows, n])
                    .unwrap()
                    .into_tvalue(),
                tensor1(&residual)
                    .into_shape(&[1, rows, n])
                    .unwrap()
                    .into_tvalue()
            );
            let run = |m: TypedModel| {
                let out = m
                    .into_optimized()
                    .unwrap()
                    .into_runnable()
                    .unwrap()
                    .run(inputs.clone())
                    .unwrap();
                let out = out[0].try_as_plain_ram().unwrap();
                let out = out.as_slice::<f32>().unwrap();
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(
                run(fused),
                run(model),
                "residual: {with_residual}, gelu: {with_gelu}, per tensor: {per_tensor}"
            );
            if with_gelu || per_tensor {
                continue;
            }

            // And each build of the loop on its own.
            let r: &[f32] = if with_residual { &residual } else { &[] };
            let want: Vec<u32> = acc
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    let y = a as f32 * scale[i % n] + bias[i % n];
                    (if with_residual { y + residual[i] } else { y }).to_bits()
                })
                .collect();
            for isa in Isa::available() {
                let mut ys = vec![0f32; acc.len()];
                isa.dequantize_bias(&acc, &scale, &bias, r, &mut ys);
                let got: Vec<u32> = ys.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{isa:?}, residual: {with_residual}");
            }
        }
    }
}
