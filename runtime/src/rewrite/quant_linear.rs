//! [`fuse_quant_linear`]: tract's int8 product + [`DequantizeBias`] → [`QuantLinear`].

use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use super::sole_reader;
use crate::ops::{DequantizeBias, QuantLinear};

/// Replaces each tract int8 product of a u8 activation by a constant `[n, k]` i8 weight (zero
/// points 0 but the activation's, scales 1, i32 sums) whose only reader is a [`DequantizeBias`]
/// by one [`QuantLinear`]; returns how many. Only where [`crate::kernels::qgemm::enabled`].
pub fn fuse_quant_linear(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    if !crate::kernels::qgemm::enabled() {
        return Ok(0);
    }
    let is_scalar = |outlet: OutletId, want: Option<f32>| -> bool {
        let Ok(fact) = model.outlet_fact(outlet) else {
            return false;
        };
        if fact.shape.volume() != 1.to_dim() {
            return false;
        }
        match want {
            None => true,
            Some(v) => fact
                .konst
                .as_ref()
                .and_then(|t| t.cast_to_scalar::<f32>().ok())
                .is_some_and(|x| x == v),
        }
    };
    let mut matches = Vec::new();
    for node in &model.nodes {
        let Some(dequantize) = node.op_as::<DequantizeBias>() else {
            continue;
        };
        let product = &model.nodes[node.inputs[0].node];
        let Some(einsum) = product.op_as::<EinSum>() else {
            continue;
        };
        let i = &product.inputs;
        if einsum.q_params != Some(i32::datum_type())
            || i.len() != 9
            || sole_reader(model, node.inputs[0]).map(|n| n.id) != Some(node.id)
        {
            continue;
        }
        let (a, w) = (model.outlet_fact(i[0])?, model.outlet_fact(i[1])?);
        let Some(weights) = w.konst.clone() else {
            continue;
        };
        let rank = a.rank();
        if a.datum_type != u8::datum_type()
            || weights.datum_type() != i8::datum_type()
            || weights.rank() != 2
            || rank < 1
            || model.outlet_fact(i[3])?.datum_type != u8::datum_type()
            || !is_scalar(i[3], None)
            || ![(2, 0.0), (4, 1.0), (5, 0.0), (6, 1.0), (7, 0.0), (8, 1.0)]
                .iter()
                .all(|&(at, v)| is_scalar(i[at], Some(v)))
        {
            continue;
        }
        // a: [.., k], w: [n, k], out: [.., n], every other axis of a passed through in order.
        let axes: Vec<_> = einsum.axes.iter_all_axes().collect();
        let is =
            |ax: &&tract_onnx::tract_core::axes::Axis, x: &[usize], y: &[usize], o: &[usize]| {
                ax.inputs.len() == 9
                    && ax.inputs[0].as_slice() == x
                    && ax.inputs[1].as_slice() == y
                    && ax.inputs[2..].iter().all(|v| v.is_empty())
                    && ax.outputs.len() == 1
                    && ax.outputs[0].as_slice() == o
            };
        let shaped = axes.len() == rank + 1
            && axes.iter().any(|ax| is(ax, &[rank - 1], &[1], &[]))
            && axes.iter().any(|ax| is(ax, &[], &[0], &[rank - 1]))
            && (0..rank - 1).all(|d| axes.iter().any(|ax| is(ax, &[d], &[], &[d])));
        let (n, k) = (weights.shape()[0], weights.shape()[1]);
        if !shaped || a.shape.last().and_then(|d| d.to_usize().ok()) != Some(k) {
            continue;
        }
        let Some(packed) = crate::kernels::qgemm::PackedWeights::pack_nk(
            weights.try_as_plain_ram()?.as_slice::<i8>()?,
            n,
            k,
        ) else {
            continue;
        };
        let op = QuantLinear {
            weights: Arc::new(packed),
            gelu: dequantize.gelu,
        };
        let mut inputs = tvec![i[0], i[3]];
        inputs.extend(node.inputs[1..].iter().copied());
        matches.push((node.id, inputs, op, product.name.clone()));
    }
    for (id, inputs, op, name) in &matches {
        let mut patch = TypedModelPatch::default();
        let taps = inputs
            .iter()
            .map(|&o| patch.tap_model(model, o))
            .collect::<TractResult<TVec<_>>>()?;
        let y = patch.wire_node(format!("{name}.quant_linear"), op.clone(), &taps)?;
        patch.shunt_outside(model, OutletId::new(*id, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(matches.len())
}
