//! [`LayerNorm`]: layer normalisation over the last axis with its affine step, one operator.

use tract_onnx::tract_hir::internal::*;

use crate::kernels::elementwise::layer_norm;

/// Layer normalisation over the last axis with its affine step, `(x − mean) / √(var + eps) · γ + β`,
/// in one operator: two passes over each row (the sums, then the answer) instead of tract's five
/// nodes for it (`Reduce<Sum>`, a scalar multiply, a subtraction, `RmsNorm` and a `Mul`+`Add`
/// chain), whose row sum is a scalar ndarray fold. Not bit-identical to tract's: the sums run in
/// 16 lanes (a different order of additions), so answers differ in the last places of f32.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct LayerNorm {
    /// `eps`'s bits (an `f32` is neither `Eq` nor `Hash`).
    eps: u32,
}

impl LayerNorm {
    pub fn new(eps: f32) -> LayerNorm {
        LayerNorm { eps: eps.to_bits() }
    }
}

impl Op for LayerNorm {
    fn name(&self) -> StaticName {
        "LayerNorm (edgebert)".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for LayerNorm {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, gamma, beta) = args_3!(inputs);
        let n = x.shape().last().copied().unwrap_or(0);
        let (gamma, beta) = (gamma.cast_to::<f32>()?, beta.cast_to::<f32>()?);
        let (gamma, beta) = (
            gamma.try_as_plain_ram()?.as_slice::<f32>()?,
            beta.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        ensure!(
            gamma.len() == n && beta.len() == n && n > 0,
            "LayerNorm: scale and bias must have the input's {n} columns"
        );
        let mut out = unsafe { Tensor::uninitialized_dt(f32::datum_type(), x.shape())? };
        layer_norm(
            x.try_as_plain_ram()?.as_slice::<f32>()?,
            gamma,
            beta,
            f32::from_bits(self.eps),
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(out.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for LayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}
