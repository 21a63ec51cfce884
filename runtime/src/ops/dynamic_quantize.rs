//! Operators that replace tract's own where ours is measurably faster on the int8 path.
//!
//! `DynamicQuantizeLinear` runs once per activation that feeds a quantized matrix product (four
//! times per BERT layer). tract 0.23 evaluates it one element at a time: a branchy min/max fold
//! over an ndarray view, a division and a `round_ties_even` call per element (a libm call on
//! x86_64 without SSE4.1). On the shipped student that was about a third of the int8 graph's
//! time. This version computes the same result (ONNX's definition: `x / scale`, rounded half to
//! even, plus the zero point, saturated to u8) in loops the compiler vectorises on x86_64 and
//! ARM; tests check it bit for bit against tract's own operator.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use crate::kernels::elementwise::{quantize, scale_and_zero_point};

pub(crate) fn dynamic_quantize_linear(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(DynamicQuantize), vec![]))
}

/// ONNX `DynamicQuantizeLinear` while the graph is being typed: one f32 input; the u8 tensor,
/// its scale and its zero point out.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct DynamicQuantize;

impl Expansion for DynamicQuantize {
    fn name(&self) -> StaticName {
        "DynamicQuantizeLinear".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> TractResult<()> {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 3)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&outputs[0].datum_type, u8::datum_type())?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, u8::datum_type())?;
        s.equals(&outputs[2].rank, 0)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        target.wire_node(
            format!("{prefix}.dynamic_quantize"),
            DynamicQuantizeU8,
            &[inputs[0]],
        )
    }
}

/// The typed operator that runs.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct DynamicQuantizeU8;

impl Op for DynamicQuantizeU8 {
    fn name(&self) -> StaticName {
        "DynamicQuantizeU8 (edgebert)".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for DynamicQuantizeU8 {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].cast_to::<f32>()?;
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let (scale, zero_point) = scale_and_zero_point(xs);
        let mut out = unsafe { Tensor::uninitialized_dt(u8::datum_type(), input.shape())? };
        quantize(
            xs,
            scale,
            zero_point,
            out.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?,
        );
        Ok(tvec!(
            out.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for DynamicQuantizeU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut quantized = inputs[0].without_value();
        quantized.datum_type = u8::datum_type();
        Ok(tvec!(quantized, f32::scalar_fact(), u8::scalar_fact()))
    }

    tract_onnx::tract_core::as_op!();
}
