//! Graph rewrites the engine runs once on the analysed graph: one rule per file. [`fuse`] puts
//! the runtime's fused operators ([`crate::ops`]) in place of tract's patterns; the int8 weight
//! layout and the identity casts are load-time fixes of the graph tract's readers leave
//! ([`int8_weights`], [`identity_casts`]).

pub mod attention;
pub mod dequantize_bias;
pub mod identity_casts;
pub mod int8_weights;
pub mod layer_norm;
pub mod quant_linear;

pub use attention::fuse_attention;
pub use dequantize_bias::fuse_dequantize_bias;
pub use layer_norm::fuse_layer_norm;
pub use quant_linear::fuse_quant_linear;

use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_hir::internal::*;

/// Whether the engine fuses at all: `EDGEBERT_FUSE=off` leaves tract's operators everywhere (with
/// `EDGEBERT_QGEMM=off EDGEBERT_ATTENTION=off`, tract's stock path, for comparisons such as
/// `scripts/arm-bench`'s).
pub fn enabled() -> bool {
    std::env::var_os("EDGEBERT_FUSE").is_none_or(|v| v != "off")
}

/// Puts the runtime's fused operators into `model` ([`fuse_dequantize_bias`],
/// [`fuse_quant_linear`], [`fuse_attention`], then [`fuse_layer_norm`]); returns how many nodes were fused. The engine runs it once on the
/// analysed graph, before cutting it into pieces and building plans; the analysed graph it keeps
/// for `edgebert compile` stays tract's own.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    Ok(fuse_dequantize_bias(model)?
        + fuse_quant_linear(model)?
        + fuse_attention(model)?
        + fuse_layer_norm(model)?)
}

/// The only reader of `outlet`, when it is a binary `B` (and not a model output), with the
/// outlet of its other operand.
pub(crate) fn next_bin<B: BinMiniOp>(
    model: &TypedModel,
    outlet: OutletId,
) -> Option<(usize, OutletId)> {
    let node = sole_reader(model, outlet)?;
    let bin = node.op_as::<TypedBinOp>()?;
    if !bin.0.is::<B>() || node.inputs.len() != 2 {
        return None;
    }
    let other = if node.inputs[0] == outlet {
        node.inputs[1]
    } else {
        node.inputs[0]
    };
    Some((node.id, other))
}

/// The only node that reads `outlet`, when it is not also a model output.
pub(crate) fn sole_reader(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let successors = &model.nodes[outlet.node].outputs[outlet.slot].successors;
    if successors.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    Some(&model.nodes[successors[0].node])
}

/// Whether `fact` is f32 values per column of a rank-`rank` tensor with `n` columns: all its
/// axes 1 but the last, which is `n`.
pub(crate) fn per_column(fact: &TypedFact, rank: usize, n: usize) -> bool {
    fact.datum_type == f32::datum_type()
        && fact.rank() <= rank
        && fact.shape.last().and_then(|d| d.to_usize().ok()) == Some(n)
        && fact.shape.iter().rev().skip(1).all(|d| d.is_one())
}
