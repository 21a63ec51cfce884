//! [`drop_identity_casts`]: the casts to a value's own type tract's NNEF reader inserts.

use tract_onnx::tract_hir::internal::*;

/// Removes the casts to a value's own type that tract's NNEF reader puts before the operands of
/// every binary operator (about 200 in the student's graph, a third of its nodes): each plan's
/// optimiser would otherwise remove them one patch at a time.
pub fn drop_identity_casts(model: &mut TypedModel) -> TractResult<()> {
    use tract_onnx::tract_core::ops::cast::Cast;
    for id in 0..model.nodes.len() {
        let Some(cast) = model.nodes[id].op_as::<Cast>() else {
            continue;
        };
        let input = model.nodes[id].inputs[0];
        let (from, to) = (model.outlet_fact(input)?, &model.nodes[id].outputs[0].fact);
        if cast.to != from.datum_type
            || from.datum_type != to.datum_type
            || from.shape != to.shape
            || model.outputs.contains(&OutletId::new(id, 0))
        {
            continue;
        }
        for succ in model.nodes[id].outputs[0].successors.clone() {
            model.add_edge(input, succ)?;
        }
    }
    model.compact()
}
