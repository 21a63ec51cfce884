//! [`Attention`]: BERT's self-attention for all heads in one operator.

use tract_onnx::tract_hir::internal::*;

use crate::kernels::by_rows;

/// BERT's self-attention for all heads in one operator, on x86_64 CPUs with AVX-512 or AVX2 + FMA
/// ([`crate::kernels::attention`]): from the three projections `q`, `k`, `v` (`[batch, len, heads · d]`)
/// and the additive mask (one value per key: `[batch or 1, 1, 1, len]`) to the heads' outputs side
/// by side (`[batch, len, heads · d]`), replacing tract's reshapes, two batched products, their
/// packings, the scale, the mask's `Add` and the softmax. Equal to tract's within float rounding.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Attention {
    pub heads: usize,
    pub d: usize,
    /// The scores' scale (1/√d), as bits.
    pub scale: u32,
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "Attention (edgebert)".into()
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for Attention {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 4);
        let shape = inputs[0].shape();
        ensure!(
            shape.len() == 3
                && shape[2] == self.heads * self.d
                && inputs[1].shape() == shape
                && inputs[2].shape() == shape,
            "Attention: q, k, v must be [batch, len, {}]",
            self.heads * self.d
        );
        let dims = crate::kernels::attention::Shape {
            batch: shape[0],
            len: shape[1],
            heads: self.heads,
            d: self.d,
        };
        let width = shape[2];
        let plain =
            |i: usize| -> TractResult<&[f32]> { inputs[i].try_as_plain_ram()?.as_slice::<f32>() };
        let (q, k, v, mask) = (plain(0)?, plain(1)?, plain(2)?, plain(3)?);
        let mut out = unsafe { Tensor::uninitialized_dt(f32::datum_type(), shape)? };
        let mut ys = out.try_as_plain_ram_mut()?;
        let ys = ys.as_slice_mut::<f32>()?;
        let exp = tract_linalg::routines::Func::Exp.ew_f32()?;
        let scale = f32::from_bits(self.scale);
        let share = |first: usize, ys: &mut [f32]| -> TractResult<()> {
            let range = first..first + ys.len() / width.max(1);
            crate::kernels::attention::attention(
                dims,
                q,
                k,
                v,
                mask,
                scale,
                exp.as_ref(),
                range,
                ys,
            )
            .map_err(|e| format_err!("{e}"))
        };
        by_rows(ys, width, 1, 8, share)?;
        Ok(tvec!(out.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.iter().all(|f| f.datum_type == f32::datum_type()));
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}
