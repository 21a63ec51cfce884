//! [`DequantizeBias`]: what follows an int8 product, in one pass; and [`Finish`], the same
//! dequantization for [`super::QuantLinear`].

use tract_onnx::tract_hir::internal::*;

use crate::kernels::elementwise::{dequantize_bias, gelu_finish, gelu_scale};

/// `y = f32(acc) · scale + bias [+ residual]`, `scale` along the last axis or one for all, `bias`
/// along the last axis: what
/// follows each int8 matrix product in the graph the quantizer writes (the i32 sums cast to f32,
/// times the activation's scale times each column's weight scale, then the layer's bias, and
/// after the attention output and the second feed-forward product the residual stream), in one
/// pass. tract runs it as a `Cast` and then a `Mul`+`Add`(+`Add`) chain: two passes over the
/// product's output. The same operations in the same order, so the same answers to the bit.
///
/// With `gelu`, tract's exact GELU follows in the same pass, row by row while the row is in
/// cache (after the first feed-forward product): tract's own erf kernel between the same
/// multiplications as its `GeluExact`, which it compiles for baseline x86_64 (SSE2); here they
/// are AVX2/AVX-512 builds. Same bits again.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct DequantizeBias {
    /// Whether tract's exact GELU follows (fused from a `GeluExact` after the bias).
    pub gelu: bool,
}

impl Op for DequantizeBias {
    fn name(&self) -> StaticName {
        if self.gelu {
            "DequantizeBias+Gelu (edgebert)".into()
        } else {
            "DequantizeBias (edgebert)".into()
        }
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for DequantizeBias {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3 || inputs.len() == 4);
        let acc = &inputs[0];
        let n = acc.shape().last().copied().unwrap_or(1);
        let scale = inputs[1].cast_to::<f32>()?;
        let bias = inputs[2].cast_to::<f32>()?;
        let residual = match inputs.get(3) {
            Some(r) => {
                ensure!(
                    r.shape() == acc.shape(),
                    "DequantizeBias: residual of another shape"
                );
                r.try_as_plain_ram()?.as_slice::<f32>()?
            }
            None => &[],
        };
        let (scale, bias) = (
            scale.try_as_plain_ram()?.as_slice::<f32>()?,
            bias.try_as_plain_ram()?.as_slice::<f32>()?,
        );
        ensure!(
            (scale.len() == n || scale.len() == 1) && bias.len() == n && n > 0,
            "DequantizeBias: scale (one, or per column) and bias must have the product's {n} columns"
        );
        let mut out = unsafe { Tensor::uninitialized_dt(f32::datum_type(), acc.shape())? };
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        let mut ys = out.try_as_plain_ram_mut()?;
        let ys = ys.as_slice_mut::<f32>()?;
        Finish::new(scale, bias, self.gelu)?.rows(acc, n, residual, ys)?;
        Ok(tvec!(out.into_tvalue()))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

/// The dequantization after an int8 product, shared by [`DequantizeBias`] and [`QuantLinear`]:
/// `sum · scale + bias (+ residual)`, then tract's exact GELU when asked, row by row.
pub(crate) struct Finish<'a> {
    /// One per column (a per-tensor scale is repeated for each).
    scale: std::borrow::Cow<'a, [f32]>,
    bias: &'a [f32],
    /// tract's erf kernel and one row of scratch, with GELU.
    gelu: Option<(
        Box<dyn tract_linalg::element_wise::ElementWise<f32>>,
        Vec<f32>,
    )>,
}

impl<'a> Finish<'a> {
    /// `scale`: one per column, or one for all (a per-tensor weight scale); `bias`: one per column.
    pub(crate) fn new(scale: &'a [f32], bias: &'a [f32], gelu: bool) -> TractResult<Finish<'a>> {
        let scale = match scale {
            [one] => std::borrow::Cow::Owned(vec![*one; bias.len()]),
            _ => std::borrow::Cow::Borrowed(scale),
        };
        let gelu = if gelu {
            Some((
                tract_linalg::routines::Func::Erf.ew_f32()?,
                vec![0f32; scale.len()],
            ))
        } else {
            None
        };
        Ok(Finish { scale, bias, gelu })
    }

    /// `sums`: rows of `stride` (≥ n) sums, the first n of each used; `residual`: rows of n, or
    /// empty; `ys`: rows of n.
    pub(crate) fn rows(
        &mut self,
        sums: &[i32],
        stride: usize,
        residual: &[f32],
        ys: &mut [f32],
    ) -> TractResult<()> {
        let n = self.scale.len();
        if stride == n && self.gelu.is_none() {
            dequantize_bias(sums, &self.scale, self.bias, residual, ys);
            return Ok(());
        }
        for (row, (a, y)) in sums.chunks(stride).zip(ys.chunks_exact_mut(n)).enumerate() {
            let r = residual.get(row * n..(row + 1) * n).unwrap_or(&[]);
            dequantize_bias(&a[..n], &self.scale, self.bias, r, y);
            if let Some((erf, erfs)) = &mut self.gelu {
                gelu_scale(y, erfs);
                erf.run(erfs)?;
                gelu_finish(y, erfs);
            }
        }
        Ok(())
    }
}

impl TypedOp for DequantizeBias {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == i32::datum_type());
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    tract_onnx::tract_core::as_op!();
}
