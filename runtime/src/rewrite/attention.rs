//! [`fuse_attention`]: BERT's self-attention as tract leaves it → [`Attention`].

use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::internal::*;

use super::sole_reader;
use crate::ops::Attention;

/// Replaces each BERT self-attention of `model`, as tract's analysis leaves it, by one
/// [`Attention`]; returns how many. The pattern, from the three projections `q`, `k`, `v`
/// (`[b, s, h·d]`) to the heads' outputs side by side:
/// `Reshape(2, [h·d], [h, d])` of each; `EinSum ambk,anbk->abmn`; `Mul` by a scalar constant
/// (the scale); `Add` of the mask (`[b or 1, 1, 1, s]`); `Softmax` over the last axis; `EinSum
/// abmk,akbn->ambn` with v's heads; `Reshape(2, [h, d], [h·d])`. Or, as tract reads back a
/// compiled graph: with `Move(1, 2)` of q's heads and `Move(1, 3)` of k's before `EinSum
/// abmk,abkn->abmn`, and batch and heads merged (`Reshape(0, [b, h], [h·b])`) around an `EinSum
/// amk,ank->amn` with v's heads (after `Move(1, 3)`), unmerged and moved back (`Move(1, 2)`). Every middle value must be read by the next step only. Only where
/// [`crate::kernels::attention::enabled`].
pub fn fuse_attention(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::change_axes::AxisOp;
    use tract_onnx::tract_core::ops::einsum::EinSum;
    use tract_onnx::tract_core::ops::math::{Add, Mul};
    use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};
    if !crate::kernels::attention::enabled() {
        return Ok(0);
    }
    // The producer of `outlet` if it is the only reader's input and of type `O`.
    fn producer<O: Op + 'static>(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, &O)> {
        let node = &model.nodes[outlet.node];
        let op = node.op_as::<O>()?;
        let successors = &node.outputs[outlet.slot].successors;
        (successors.len() == 1 && !model.outputs.contains(&outlet)).then_some((node, op))
    }
    // The `[b, s, h·d]` tensor under `Reshape(2, [h·d], [h, d])`, and (h, d).
    let split = |outlet: OutletId| -> Option<(OutletId, usize, usize)> {
        let (node, op) = producer::<AxisOp>(model, outlet)?;
        let AxisOp::Reshape(2, from, to) = op else {
            return None;
        };
        let (w, h, d) = (
            from.first()?.to_usize().ok()?,
            to.first()?.to_usize().ok()?,
            to.get(1)?.to_usize().ok()?,
        );
        (from.len() == 1
            && to.len() == 2
            && w == h * d
            && model.outlet_fact(node.inputs[0]).ok()?.rank() == 3)
            .then_some((node.inputs[0], h, d))
    };
    let moved = |outlet: OutletId, to: usize| -> Option<(OutletId, usize, usize)> {
        let (node, op) = producer::<AxisOp>(model, outlet)?;
        (*op == AxisOp::Move(1, to))
            .then(|| split(node.inputs[0]))
            .flatten()
    };
    // An einsum of two f32 inputs whose axes are `spec` (per axis: positions in input 0,
    // input 1, output).
    let einsum = |node: &TypedNode, spec: &[(&[usize], &[usize], &[usize])]| -> bool {
        let Some(op) = node.op_as::<EinSum>() else {
            return false;
        };
        let axes: Vec<_> = op.axes.iter_all_axes().collect();
        op.q_params.is_none()
            && node.inputs.len() == 2
            && axes.len() == spec.len()
            && spec.iter().all(|(a, b, o)| {
                axes.iter().any(|ax| {
                    ax.inputs.len() == 2
                        && ax.inputs[0].as_slice() == *a
                        && ax.inputs[1].as_slice() == *b
                        && ax.outputs.len() == 1
                        && ax.outputs[0].as_slice() == *o
                })
            })
    };
    fn bin(node: &TypedNode) -> Option<&TypedBinOp> {
        node.op_as::<TypedBinOp>()
            .filter(|_| node.inputs.len() == 2)
    }
    let mut matches = Vec::new();
    for node in &model.nodes {
        let Some(softmax) = node.op_as::<Softmax>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        if fact.rank() != 4
            || fact.datum_type != f32::datum_type()
            || softmax.axes.as_slice() != [3]
            || softmax.kind != SoftmaxKind::Softmax
            || softmax.quant_output_dt.is_some()
        {
            continue;
        }
        let found = (|| {
            let (add, _) = producer::<TypedBinOp>(model, node.inputs[0])?;
            if !bin(add)?.0.is::<Add>() {
                return None;
            }
            let (scaled, mask) = if producer::<TypedBinOp>(model, add.inputs[0])
                .is_some_and(|(n, b)| b.0.is::<Mul>() && n.inputs.len() == 2)
            {
                (add.inputs[0], add.inputs[1])
            } else {
                (add.inputs[1], add.inputs[0])
            };
            let mask_fact = model.outlet_fact(mask).ok()?;
            if mask_fact.rank() != 4
                || mask_fact.datum_type != f32::datum_type()
                || !mask_fact.shape[1].is_one()
                || !mask_fact.shape[2].is_one()
                || mask_fact.shape[3] != fact.shape[3]
            {
                return None;
            }
            let (mul, op) = producer::<TypedBinOp>(model, scaled)?;
            if !op.0.is::<Mul>() || mul.inputs.len() != 2 {
                return None;
            }
            let konst = |o: OutletId| {
                model
                    .outlet_fact(o)
                    .ok()
                    .and_then(|f| f.konst.clone())
                    .filter(|t| t.len() == 1 && t.datum_type() == f32::datum_type())
            };
            let (scores, scale) = match (konst(mul.inputs[0]), konst(mul.inputs[1])) {
                (None, Some(c)) => (mul.inputs[0], c),
                (Some(c), None) => (mul.inputs[1], c),
                _ => return None,
            };
            let scale = *scale
                .try_as_plain_ram()
                .ok()?
                .as_slice::<f32>()
                .ok()?
                .first()?;
            let (product, _) = producer::<EinSum>(model, scores)?;
            // Two forms: as tract analyses the ONNX graph (the heads' axes stay where the reshape
            // put them, the products' axes say the rest) and as it reads back its own compiled
            // graph (moves, and batch and heads merged around the second product).
            type Spec<'s> = [(&'s [usize], &'s [usize], &'s [usize])];
            let qk_plain: &Spec = &[
                (&[0], &[0], &[0]),
                (&[1], &[], &[2]),
                (&[2], &[2], &[1]),
                (&[3], &[3], &[]),
                (&[], &[1], &[3]),
            ];
            let qk_moved: &Spec = &[
                (&[0], &[0], &[0]),
                (&[1], &[1], &[1]),
                (&[2], &[], &[2]),
                (&[3], &[2], &[]),
                (&[], &[3], &[3]),
            ];
            let ((q, h, d), (k, hk, dk)) = if einsum(product, qk_plain) {
                (split(product.inputs[0])?, split(product.inputs[1])?)
            } else if einsum(product, qk_moved) {
                (moved(product.inputs[0], 2)?, moved(product.inputs[1], 3)?)
            } else {
                return None;
            };
            let forward = |outlet: OutletId, ok: &dyn Fn(&AxisOp) -> bool| {
                let next = sole_reader(model, outlet)?;
                ok(next.op_as::<AxisOp>()?).then_some(OutletId::new(next.id, 0))
            };
            let probs = OutletId::new(node.id, 0);
            let pv_plain: &Spec = &[
                (&[0], &[0], &[0]),
                (&[1], &[2], &[2]),
                (&[2], &[], &[1]),
                (&[3], &[1], &[]),
                (&[], &[3], &[3]),
            ];
            let plain_context =
                sole_reader(model, probs).filter(|c| c.inputs[0] == probs && einsum(c, pv_plain));
            let ((v, hv, dv), heads_side_by_side) = if let Some(context) = plain_context {
                (split(context.inputs[1])?, OutletId::new(context.id, 0))
            } else {
                // Batch and heads merged on both sides, `amk,ank->amn`, unmerged, the heads
                // moved back beside each other.
                let merges = |op: &AxisOp| {
                    matches!(op, AxisOp::Reshape(0, from, to) if from.len() == 2 && to.len() == 1
                        && from[1].to_usize().ok() == Some(h))
                };
                let merged = forward(probs, &merges)?;
                let context = sole_reader(model, merged)?;
                let pv_merged: &Spec = &[
                    (&[0], &[0], &[0]),
                    (&[1], &[], &[1]),
                    (&[2], &[2], &[]),
                    (&[], &[1], &[2]),
                ];
                if context.inputs[0] != merged || !einsum(context, pv_merged) {
                    return None;
                }
                let (merged_v, _) = producer::<AxisOp>(model, context.inputs[1])?;
                if !merges(merged_v.op_as::<AxisOp>()?) {
                    return None;
                }
                let v = moved(merged_v.inputs[0], 3)?;
                let unmerged = forward(OutletId::new(context.id, 0), &|op| {
                    matches!(op, AxisOp::Reshape(0, from, to) if from.len() == 1 && to.len() == 2
                        && to[1].to_usize().ok() == Some(h))
                })?;
                (v, forward(unmerged, &|op| *op == AxisOp::Move(1, 2))?)
            };
            let merge = sole_reader(model, heads_side_by_side)?;
            let AxisOp::Reshape(2, from, to) = merge.op_as::<AxisOp>()? else {
                return None;
            };
            let heads_ok = (hk, dk) == (h, d) && (hv, dv) == (h, d);
            let merge_ok = from.len() == 2
                && to.len() == 1
                && from[0].to_usize().ok() == Some(h)
                && from[1].to_usize().ok() == Some(d)
                && to[0].to_usize().ok() == Some(h * d);
            let same = |a: OutletId, b: OutletId| {
                model.outlet_fact(a).ok().map(|f| f.without_value())
                    == model.outlet_fact(b).ok().map(|f| f.without_value())
            };
            (heads_ok
                && merge_ok
                && crate::kernels::attention::supported_head(d)
                && same(q, k)
                && same(q, v)
                && model.outlet_fact(q).ok()?.datum_type == f32::datum_type())
            .then_some((q, k, v, mask, scale, h, d, merge.id, merge.name.clone()))
        })();
        if let Some(found) = found {
            matches.push(found);
        }
    }
    for (q, k, v, mask, scale, heads, d, last, name) in &matches {
        let mut patch = TypedModelPatch::default();
        let taps = [*q, *k, *v, *mask]
            .iter()
            .map(|&o| patch.tap_model(model, o))
            .collect::<TractResult<TVec<_>>>()?;
        let op = Attention {
            heads: *heads,
            d: *d,
            scale: scale.to_bits(),
        };
        let y = patch.wire_node(format!("{name}.attention"), op, &taps)?;
        patch.shunt_outside(model, OutletId::new(*last, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(matches.len())
}
