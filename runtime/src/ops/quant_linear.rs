//! [`QuantLinear`]: an int8 linear layer (product and dequantization) in one operator.

use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

use super::dequantize_bias::Finish;
use crate::kernels::by_rows;

/// An int8 linear layer in one operator, where [`crate::kernels::qgemm`] has a kernel (x86_64
/// with AVX2 or AVX-512 VNNI, aarch64): tract's
/// quantized product of a u8 activation by a constant i8 weight (with i32 sums) and the
/// [`DequantizeBias`] after it. Inputs: the activation (u8, `[…, k]`), its zero point (u8), the
/// scale and bias per column, and the residual if the [`DequantizeBias`] had one. The weights
/// are packed once, when the operator is made. Same bits as tract's product and
/// [`DequantizeBias`] (the sums are exact integers; the dequantization is the same code).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct QuantLinear {
    pub weights: Arc<crate::kernels::qgemm::PackedWeights>,
    /// Whether tract's exact GELU follows.
    pub gelu: bool,
}

impl Op for QuantLinear {
    fn name(&self) -> StaticName {
        if self.gelu {
            "QuantLinear+Gelu (edgebert)".into()
        } else {
            "QuantLinear (edgebert)".into()
        }
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for QuantLinear {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        use crate::kernels::qgemm::products;
        let mr = self.weights.kernel().mr();
        ensure!(inputs.len() == 4 || inputs.len() == 5);
        let (k, n) = (self.weights.k(), self.weights.n());
        let a = &inputs[0];
        ensure!(
            a.shape().last() == Some(&k),
            "QuantLinear: activation {:?} has not {k} columns",
            a.shape()
        );
        let mut shape: TVec<usize> = a.shape().into();
        *shape.last_mut().unwrap() = n;
        let a0 = inputs[1].try_as_plain_ram()?;
        let a0 = a0.as_slice::<u8>()?;
        ensure!(a0.len() == 1, "QuantLinear: one zero point");
        let a0 = a0[0];
        let (scale, bias) = (inputs[2].cast_to::<f32>()?, inputs[3].cast_to::<f32>()?);
        let (scale, bias) = (
            scale.try_as_plain_ram()?.as_slice::<f32>()?,
            bias.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        ensure!(
            (scale.len() == n || scale.len() == 1) && bias.len() == n,
            "QuantLinear: scale (one, or per column) and bias must have the product's {n} columns"
        );
        let residual = match inputs.get(4) {
            Some(r) => {
                ensure!(
                    r.shape() == &*shape,
                    "QuantLinear: residual of another shape"
                );
                r.try_as_plain_ram()?.as_slice::<f32>()?
            }
            None => &[],
        };
        let a = a.try_as_plain_ram()?;
        let a = a.as_slice::<u8>()?;
        let mut out = unsafe { Tensor::uninitialized_dt(f32::datum_type(), &shape)? };
        let mut ys = out.try_as_plain_ram_mut()?;
        let ys = ys.as_slice_mut::<f32>()?;
        // One share of the rows: products block by block, each block dequantized while hot.
        let share = |first: usize, ys: &mut [f32]| -> TractResult<()> {
            let count = ys.len() / n;
            let a = &a[first * k..(first + count) * k];
            let residual = residual.get(first * n..first * n + ys.len()).unwrap_or(&[]);
            let mut finish = Finish::new(scale, bias, self.gelu)?;
            let mut failed = Ok(());
            products(a, a0, &self.weights, |first, sums, stride| {
                let count = sums.len() / stride;
                let r = residual.get(first * n..(first + count) * n).unwrap_or(&[]);
                if failed.is_ok() {
                    failed = finish.rows(sums, stride, r, &mut ys[first * n..(first + count) * n]);
                }
            })
            .map_err(|e| format_err!("{e}"))?;
            failed
        };
        by_rows(ys, n, mr, 2 * mr, share)?;
        Ok(tvec!(out.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for QuantLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == u8::datum_type());
        let mut shape = inputs[0].shape.to_tvec();
        ensure!(shape.last().map(|d| d.to_usize()).transpose()? == Some(self.weights.k()));
        *shape.last_mut().unwrap() = self.weights.n().to_dim();
        Ok(tvec!(f32::fact(shape)))
    }

    tract_onnx::tract_core::as_op!();
}
