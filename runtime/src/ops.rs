//! Operators that replace tract's own where ours is measurably faster on the int8 path.
//!
//! `DynamicQuantizeLinear` runs once per activation that feeds a quantized matrix product (four
//! times per BERT layer). tract 0.23 evaluates it one element at a time: a branchy min/max fold
//! over an ndarray view, a division and a `round_ties_even` call per element (a libm call on
//! x86_64 without SSE4.1). On the shipped student that was about a third of the int8 graph's
//! time. This version computes the same result (ONNX's definition: `x / scale`, rounded half to
//! even, plus the zero point, saturated to u8) in loops the compiler vectorises on x86_64 and
//! ARM; tests check it bit for bit against tract's own operator.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_hir::internal::*;

/// Puts our operators into a parser's register, over tract's.
pub fn register(ops: &mut OnnxOpRegister) {
    ops.insert("DynamicQuantizeLinear", dynamic_quantize_linear);
}

fn dynamic_quantize_linear(
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

/// `y = f32(acc) · scale + bias [+ residual]`, `scale` and `bias` along the last axis: what
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
            scale.len() == n && bias.len() == n && n > 0,
            "DequantizeBias: scale and bias must have the product's {n} columns"
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
struct Finish<'a> {
    scale: &'a [f32],
    bias: &'a [f32],
    /// tract's erf kernel and one row of scratch, with GELU.
    gelu: Option<(
        Box<dyn tract_linalg::element_wise::ElementWise<f32>>,
        Vec<f32>,
    )>,
}

impl<'a> Finish<'a> {
    fn new(scale: &'a [f32], bias: &'a [f32], gelu: bool) -> TractResult<Finish<'a>> {
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
    fn rows(
        &mut self,
        sums: &[i32],
        stride: usize,
        residual: &[f32],
        ys: &mut [f32],
    ) -> TractResult<()> {
        let n = self.scale.len();
        if stride == n && self.gelu.is_none() {
            dequantize_bias(sums, self.scale, self.bias, residual, ys);
            return Ok(());
        }
        for (row, (a, y)) in sums.chunks(stride).zip(ys.chunks_exact_mut(n)).enumerate() {
            let r = residual.get(row * n..(row + 1) * n).unwrap_or(&[]);
            dequantize_bias(&a[..n], self.scale, self.bias, r, y);
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

/// An int8 linear layer in one operator, on x86_64 CPUs with AVX2 or AVX-512 VNNI
/// ([`crate::kernels::qgemm`]): tract's
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
            scale.len() == n && bias.len() == n,
            "QuantLinear: scale and bias must have the product's {n} columns"
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

/// Runs `share(first_row, rows)` over `ys` (rows of `width`): in one call, or, on tract's
/// executor's threads when it has some and there are at least `min_rows` rows, in contiguous
/// shares of whole multiples of `unit` rows, one per thread.
fn by_rows(
    ys: &mut [f32],
    width: usize,
    unit: usize,
    min_rows: usize,
    share: impl Fn(usize, &mut [f32]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    use rayon::prelude::*;
    let width = width.max(1);
    let rows = ys.len() / width;
    match tract_linalg::multithread::current_tract_executor() {
        tract_linalg::multithread::Executor::MultiThread(pool) if rows >= min_rows => {
            let threads = pool.current_num_threads().max(1);
            let per = rows.div_ceil(unit).div_ceil(threads) * unit;
            pool.install(|| {
                ys.par_chunks_mut(per * width)
                    .enumerate()
                    .try_for_each(|(i, ys)| share(i * per, ys))
            })
        }
        _ => share(0, ys),
    }
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

/// Replaces each `Cast(i32 → f32) → Mul(scale) → Add(bias)`, and the `Add` of a value of the same
/// shape (the residual) after it if there is one, of `model` whose scale and bias vary only along
/// the last axis (and whose middle values nothing else reads) by one [`DequantizeBias`]; returns
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
        if per_column(model.outlet_fact(scale)?)
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

/// Replaces each layer normalisation over the last axis, as tract's analysis leaves it —
/// `x → Reduce<Sum> → × 1/n (or ÷ n) → x − mean → RmsNorm → Mul(γ) → Add(β)`, with γ and β per
/// column and the middle values read by nothing else — by one [`LayerNorm`]; returns how many.
pub fn fuse_layer_norm(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::math::{Add, Div, Mul, Sub};
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};

    let read_only_by = |outlet: OutletId, reader: usize| {
        sole_reader(model, outlet).is_some_and(|r| r.id == reader)
    };
    let bin_is = |node: &TypedNode, f: fn(&dyn BinMiniOp) -> bool| {
        node.inputs.len() == 2 && node.op_as::<TypedBinOp>().is_some_and(|b| f(&*b.0))
    };
    let mut matches = Vec::new();
    for node in &model.nodes {
        let Some(rms) = node.op_as::<RmsNorm>() else {
            continue;
        };
        let centred = node.inputs[0];
        let fact = model.outlet_fact(centred)?;
        let rank = fact.rank();
        let Some(n) = fact.shape.last().and_then(|d| d.to_usize().ok()) else {
            continue;
        };
        let Ok(eps) = rms.eps.cast_to_scalar::<f32>() else {
            continue;
        };
        if fact.datum_type != f32::datum_type() || rank == 0 || rms.axis != rank - 1 || n == 0 {
            continue;
        }
        // x − mean, read by the RmsNorm only.
        let sub = &model.nodes[centred.node];
        if !read_only_by(centred, node.id) || !bin_is(sub, |b| b.is::<Sub>()) {
            continue;
        }
        let (x, mean) = (sub.inputs[0], sub.inputs[1]);
        if model.outlet_fact(x)?.shape != fact.shape || !read_only_by(mean, sub.id) {
            continue;
        }
        // mean = Reduce<Sum>(x) × 1/n, or ÷ n.
        let scaling = &model.nodes[mean.node];
        let is_mul = bin_is(scaling, |b| b.is::<Mul>());
        if !(is_mul || bin_is(scaling, |b| b.is::<Div>())) {
            continue;
        }
        let (sum, by) = (scaling.inputs[0], scaling.inputs[1]);
        let by = model.outlet_fact(by)?.konst.as_ref();
        let Some(by) = by.and_then(|k| (k.len() == 1).then(|| k.cast_to_scalar::<f32>().ok()))
        else {
            continue;
        };
        let Some(by) = by else { continue };
        let len = n as f32;
        let is_mean = if is_mul {
            (by * len - 1.0).abs() <= 1e-6
        } else {
            by == len
        };
        let reduce = &model.nodes[sum.node];
        let sums_x = reduce.op_as::<Reduce>().is_some_and(|r| {
            r.reducer == Reducer::Sum && r.axes[..] == [rank - 1] && reduce.inputs[0] == x
        });
        if !is_mean || !sums_x || !read_only_by(sum, scaling.id) {
            continue;
        }
        // × γ + β.
        let Some((mul, gamma)) = next_bin::<Mul>(model, OutletId::new(node.id, 0)) else {
            continue;
        };
        let Some((add, beta)) = next_bin::<Add>(model, OutletId::new(mul, 0)) else {
            continue;
        };
        let same_shape = |o: OutletId| model.outlet_fact(o).is_ok_and(|f| f.shape == fact.shape);
        if per_column(model.outlet_fact(gamma)?, rank, n)
            && per_column(model.outlet_fact(beta)?, rank, n)
            && same_shape(OutletId::new(mul, 0))
            && same_shape(OutletId::new(add, 0))
        {
            matches.push((x, gamma, beta, eps, add, node.name.clone()));
        }
    }
    for (x, gamma, beta, eps, last, name) in &matches {
        let mut patch = TypedModelPatch::default();
        let inputs = [
            patch.tap_model(model, *x)?,
            patch.tap_model(model, *gamma)?,
            patch.tap_model(model, *beta)?,
        ];
        let y = patch.wire_node(format!("{name}.layer_norm"), LayerNorm::new(*eps), &inputs)?;
        patch.shunt_outside(model, OutletId::new(*last, 0), y[0])?;
        patch.apply(model)?;
    }
    Ok(matches.len())
}

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

#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(tail) {
        *a += f(x);
    }
    acc.iter().sum()
}

#[inline(always)]
fn layer_norm_body(xs: &[f32], gamma: &[f32], beta: &[f32], eps: f32, ys: &mut [f32]) {
    let n = gamma.len();
    let len = n as f32;
    for (x, y) in xs.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
        let mean = lane_sum(x, |v| v) / len;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / len;
        let inv = 1.0 / (var + eps).sqrt();
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *y = (x - mean) * inv * g + b;
        }
    }
}

/// The only reader of `outlet`, when it is a binary `B` (and not a model output), with the
/// outlet of its other operand.
fn next_bin<B: BinMiniOp>(model: &TypedModel, outlet: OutletId) -> Option<(usize, OutletId)> {
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
fn sole_reader(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let successors = &model.nodes[outlet.node].outputs[outlet.slot].successors;
    if successors.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    Some(&model.nodes[successors[0].node])
}

/// Whether `fact` is f32 values per column of a rank-`rank` tensor with `n` columns: all its
/// axes 1 but the last, which is `n`.
fn per_column(fact: &TypedFact, rank: usize, n: usize) -> bool {
    fact.datum_type == f32::datum_type()
        && fact.rank() <= rank
        && fact.shape.last().and_then(|d| d.to_usize().ok()) == Some(n)
        && fact.shape.iter().rev().skip(1).all(|d| d.is_one())
}

#[inline(always)]
fn dequantize_bias_body(
    acc: &[i32],
    scale: &[f32],
    bias: &[f32],
    residual: &[f32],
    ys: &mut [f32],
) {
    let n = scale.len();
    // Each step rounded on its own, in tract's order (no fused multiply-add).
    if residual.is_empty() {
        for (a, y) in acc.chunks_exact(n).zip(ys.chunks_exact_mut(n)) {
            for (((y, &a), &s), &b) in y.iter_mut().zip(a).zip(scale).zip(bias) {
                *y = a as f32 * s + b;
            }
        }
    } else {
        let rows = acc.chunks_exact(n).zip(residual.chunks_exact(n));
        for ((a, r), y) in rows.zip(ys.chunks_exact_mut(n)) {
            let columns = y.iter_mut().zip(a).zip(r).zip(scale).zip(bias);
            for ((((y, &a), &r), &s), &b) in columns {
                *y = a as f32 * s + b + r;
            }
        }
    }
}

/// Lanes of the min/max and quantize loops: wide enough for AVX-512 and four NEON registers.
const LANES: usize = 16;

/// The instruction sets the two loops below are compiled for. A portable x86_64 build may only
/// assume SSE2 (4 lanes, and no packing of i32 to u8 in one step), so on x86_64 the same loops are
/// compiled twice more, for AVX2 and for AVX-512, and the widest this CPU has is picked at run
/// time (std caches the CPU's answer). On a 64-token text this took the operator from ≈ 0.9 to
/// ≈ 0.4 ns per element (≈ 5% of the int8 student's time). aarch64 has NEON in its baseline and
/// needs one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// One function, compiled for each `Isa`: `$name` dispatches, `$body` (`#[inline(always)]`) is
/// the code, inlined into a `#[target_feature]` wrapper per instruction set.
macro_rules! multiversion {
    ($(#[$doc:meta])* $vis:vis fn $name:ident / $body:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            Isa::best().$name($($arg),*)
        }

        impl Isa {
            pub(crate) fn $name(self, $($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match self {
                    Isa::Baseline => $body($($arg),*),
                    // SAFETY: `Isa::available` only offers what the CPU has.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { avx2($($arg),*) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { avx512($($arg),*) },
                }
            }
        }
    };
}

impl Isa {
    /// The instruction sets this CPU runs, narrowest first.
    pub(crate) fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut isas = vec![Isa::Baseline];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                isas.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
            {
                isas.push(Isa::Avx512);
            }
        }
        isas
    }

    /// The widest instruction set this CPU runs.
    pub(crate) fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            *Isa::available()
                .last()
                .expect("the baseline is always there")
        })
    }
}

multiversion! {
    /// ONNX's scale and zero point for `xs`: the range `[min(xs, 0), max(xs, 0)]` mapped onto
    /// 0..=255.
    pub fn scale_and_zero_point / scale_and_zero_point_body(xs: &[f32]) -> (f32, u8)
}

multiversion! {
    /// `ys[i] = saturate(round_half_even(xs[i] / scale) + zero_point)`.
    pub fn quantize / quantize_body(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8])
}

multiversion! {
    /// GELU's first step, as tract's `GeluExact` does it: `ys[i] = xs[i] · (1/√2)`.
    fn gelu_scale / gelu_scale_body(xs: &[f32], ys: &mut [f32])
}

multiversion! {
    /// GELU's last step, as tract's `GeluExact` does it: `xs[i] = (xs[i] · 0.5) · (erfs[i] + 1)`.
    fn gelu_finish / gelu_finish_body(xs: &mut [f32], erfs: &[f32])
}

/// tract's constant for GELU (`GeluExact`), computed the same way.
fn inv_sqrt2() -> f32 {
    2f32.sqrt().recip()
}

#[inline(always)]
fn gelu_scale_body(xs: &[f32], ys: &mut [f32]) {
    let c = inv_sqrt2();
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = x * c;
    }
}

#[inline(always)]
fn gelu_finish_body(xs: &mut [f32], erfs: &[f32]) {
    for (x, &e) in xs.iter_mut().zip(erfs) {
        *x = (*x * 0.5) * (e + 1.0);
    }
}

multiversion! {
    /// Each row of `xs` (rows as long as `gamma`) normalised: `(x − mean) / √(var + eps) · γ + β`.
    fn layer_norm / layer_norm_body(xs: &[f32], gamma: &[f32], beta: &[f32], eps: f32, ys: &mut [f32])
}

multiversion! {
    /// `ys[i] = f32(acc[i]) · scale[c] + bias[c] (+ residual[i] unless it is empty)`, `c = i mod n`,
    /// `n` the length of `scale`.
    fn dequantize_bias / dequantize_bias_body(acc: &[i32], scale: &[f32], bias: &[f32], residual: &[f32], ys: &mut [f32])
}

#[inline(always)]
fn scale_and_zero_point_body(xs: &[f32]) -> (f32, u8) {
    let mut lo = [0f32; LANES];
    let mut hi = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            // Written as compares, not f32::min/max, so they compile to plain SIMD min/max.
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &x in lo.iter().chain(tail) {
        if x < min {
            min = x;
        }
    }
    for &x in hi.iter().chain(tail) {
        if x > max {
            max = x;
        }
    }
    let scale = (max - min) / 255.0;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zero_point)
}

/// Rounds half to even for |x| < 2^22 by the float adder's own rounding (the default
/// round-to-nearest-even mode): exact there, and larger values saturate below anyway.
#[inline(always)]
fn round_ties_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (x + MAGIC) - MAGIC
}

#[inline(always)]
fn quantize_body(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    // Subnormal inputs (GELU and masked softmax outputs are full of them) make the division
    // several times slower on x86_64. With a scale this large they quantize to the zero point
    // whatever their value, so they are replaced by 0 first: the result is the same bit for bit.
    if scale >= 1e-30 {
        quantize_with(xs, scale, zero_point, ys, |x| {
            if x.abs() >= f32::MIN_POSITIVE {
                x
            } else {
                0.0
            }
        })
    } else {
        quantize_with(xs, scale, zero_point, ys, |x| x)
    }
}

#[inline(always)]
fn quantize_with(
    xs: &[f32],
    scale: f32,
    zero_point: u8,
    ys: &mut [u8],
    flush: impl Fn(f32) -> f32,
) {
    let zp = f32::from(zero_point);
    let one = |x: f32| -> u8 {
        let q = flush(x) / scale;
        // Beyond ±2^22 the rounding trick is inexact but the result saturates all the same;
        // NaN (an all-zero input has scale 0) becomes 0 as in tract's version.
        let q = if q.abs() < 4_194_304.0 {
            round_ties_even_small(q)
        } else {
            q
        };
        let y = q + zp;
        // Written so that NaN fails both tests and lands on 0.
        let y = if y >= 0.0 { y } else { 0.0 };
        let y = if y <= 255.0 { y } else { 255.0 };
        // SAFETY: y is finite and in 0..=255 here, so the conversion is exact. (The checked
        // `as` conversion is half this loop's time on x86_64.)
        unsafe { y.to_int_unchecked::<i32>() as u8 }
    };
    let mut xc = xs.chunks_exact(LANES);
    let mut yc = ys.chunks_exact_mut(LANES);
    for (x, y) in (&mut xc).zip(&mut yc) {
        for i in 0..LANES {
            y[i] = one(x[i]);
        }
    }
    for (x, y) in xc.remainder().iter().zip(yc.into_remainder()) {
        *y = one(*x);
    }
}

/// tract's NNEF with what edgebert's compiled graphs use beyond tract's own registries: our
/// `DynamicQuantizeU8`, and exact GELU (tract 0.23 declutters ONNX's erf pattern into
/// `GeluExact` but has no NNEF serialisation for it).
pub fn nnef() -> tract_nnef::framework::Nnef {
    use tract_onnx::WithOnnx;
    tract_nnef::nnef().with_onnx().with_registry(registry())
}

/// [`nnef`] for reading graphs from already loaded resources (`model_for_proto_model`): the same
/// operator registries, without the NNEF standard library's fragments (only the writer uses
/// them; `tract_nnef::nnef()` parses their 30 KB of text on every call, 5 ms of a cold start)
/// and without resource loaders.
pub(crate) fn nnef_reader() -> tract_nnef::framework::Nnef {
    use tract_onnx::WithOnnx;
    tract_nnef::framework::Nnef {
        stdlib: Vec::new(),
        registries: vec![tract_nnef::ops::tract_nnef(), tract_nnef::ops::tract_core()],
        resource_loaders: Vec::new(),
        allow_extended_identifier_syntax: false,
        extern_all_constants: false,
    }
    .with_onnx()
    .with_registry(registry())
}

fn registry() -> tract_nnef::internal::Registry {
    use tract_nnef::internal::{Registry, TypeName};
    let mut registry = Registry::new("edgebert");
    registry.register_dumper(nnef_dump_dynamic_quantize);
    registry.register_primitive(
        NNEF_DYNAMIC_QUANTIZE,
        &[TypeName::Scalar.tensor().named("input")],
        &[
            ("output", TypeName::Integer.tensor()),
            ("scale", TypeName::Scalar.tensor()),
            ("zero_point", TypeName::Integer.tensor()),
        ],
        nnef_load_dynamic_quantize,
    );
    registry.register_unit_element_wise(
        "edgebert_gelu_exact",
        &tract_onnx::tract_core::ops::nn::gelu_exact::GeluExact {},
    );
    registry
}

const NNEF_DYNAMIC_QUANTIZE: &str = "edgebert_dynamic_quantize_u8";

fn nnef_dump_dynamic_quantize(
    ast: &mut tract_nnef::internal::IntoAst,
    node: &TypedNode,
    _op: &DynamicQuantizeU8,
) -> TractResult<Option<Arc<tract_nnef::internal::RValue>>> {
    let input = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(tract_nnef::internal::invocation(
        NNEF_DYNAMIC_QUANTIZE,
        &[input],
        &[],
    )))
}

fn nnef_load_dynamic_quantize(
    builder: &mut tract_nnef::internal::ModelBuilder,
    invocation: &tract_nnef::internal::ResolvedInvocation,
) -> TractResult<tract_nnef::internal::Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    builder.wire(DynamicQuantizeU8, &[input])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract's own element-wise definition (tract-onnx's `dynamic_quantize_linear_f32_u8`).
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let (mut min, mut max) = (0f32, 0f32);
        for &x in xs {
            if x < min {
                min = x
            } else if x > max {
                max = x
            }
        }
        let scale = (max - min) / 255.0;
        let zp = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let q = xs
            .iter()
            .map(|&x| (((x / scale).round_ties_even() as i32) + zp as i32).clamp(0, 255) as u8)
            .collect();
        (q, scale, zp)
    }

    /// Every build of the loops this CPU runs (baseline, AVX2, AVX-512) against tract's.
    fn check(xs: &[f32]) {
        let (want, want_scale, want_zp) = reference(xs);
        for isa in Isa::available() {
            let (scale, zp) = isa.scale_and_zero_point(xs);
            assert_eq!(
                scale.to_bits(),
                want_scale.to_bits(),
                "{isa:?}: scale of {xs:?}"
            );
            assert_eq!(zp, want_zp, "{isa:?}");
            let mut got = vec![0u8; xs.len()];
            isa.quantize(xs, scale, zp, &mut got);
            assert_eq!(got, want, "{isa:?}: {xs:?}");
        }
    }

    #[test]
    fn the_widest_instruction_set_is_picked() {
        let available = Isa::available();
        assert_eq!(available[0], Isa::Baseline);
        assert_eq!(Isa::best(), *available.last().unwrap());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            available.contains(&Isa::Avx2),
            std::is_x86_feature_detected!("avx2")
        );
    }

    #[test]
    fn onnx_examples() {
        // From the ONNX operator documentation.
        let cases: [(&[f32], &[u8], u8); 2] = [
            (
                &[0., 2., -3., -2.5, 1.34, 0.5],
                &[153, 255, 0, 26, 221, 179],
                153,
            ),
            (
                &[-1., -2.1, -1.3, -2.5, -3.34, -4.],
                &[191, 121, 172, 96, 42, 0],
                255,
            ),
        ];
        for (xs, want, want_zp) in cases {
            let (scale, zp) = scale_and_zero_point(xs);
            assert_eq!(zp, want_zp);
            let mut got = vec![0u8; xs.len()];
            quantize(xs, scale, zp, &mut got);
            assert_eq!(got, want);
            check(xs);
        }
    }

    #[test]
    fn ties_round_to_even() {
        // Scale 1 (range 0..255), so x / scale is x: halves must go to the even neighbour.
        let mut xs: Vec<f32> = vec![0.0, 255.0];
        xs.extend([0.5, 1.5, 2.5, 3.5, 100.5, 253.5, 254.5]);
        check(&xs);
        let (scale, zp) = scale_and_zero_point(&xs);
        let mut got = vec![0u8; xs.len()];
        quantize(&xs, scale, zp, &mut got);
        assert_eq!(&got[2..], &[0, 2, 2, 4, 100, 254, 254]);
    }

    #[test]
    fn degenerate_inputs() {
        check(&[0.0; 40]);
        check(&[3.0; 33]);
        check(&[-7.0; 17]);
        check(&[]);
        check(&[1e30, -1e30, 5.0, 0.0]);
        // Subnormals, with a normal scale (flushed) and as the whole range (not flushed).
        let tiny = f32::MIN_POSITIVE / 8.0;
        check(&[tiny, -tiny, 2.0, -1.0, 3.0 * tiny]);
        check(&[tiny, -tiny, 2.0 * tiny, -5.0 * tiny, 0.0]);
    }

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

        for (with_residual, with_gelu) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let mut model = TypedModel::default();
            let x = model.add_source("acc", i32::fact([1, rows, n])).unwrap();
            let r = model
                .add_source("residual", f32::fact([1, rows, n]))
                .unwrap();
            let column = |v: &[f32]| tensor1(v).into_shape(&[1, 1, n]).unwrap();
            let s = model.add_const("scale", column(&scale)).unwrap();
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
                "residual: {with_residual}, gelu: {with_gelu}"
            );
            if with_gelu {
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

    /// GELU's two steps around tract's erf, in each build, as tract's `GeluExact` computes them.
    #[test]
    fn gelu_steps_match_tract_in_every_build() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        let erfs: Vec<f32> = xs.iter().map(|x| (x * 0.37).tanh()).collect();
        let c = (2.0f32).sqrt().recip();
        for isa in Isa::available() {
            let mut scaled = vec![0f32; xs.len()];
            isa.gelu_scale(&xs, &mut scaled);
            let mut finished = xs.clone();
            isa.gelu_finish(&mut finished, &erfs);
            for i in 0..xs.len() {
                assert_eq!(scaled[i].to_bits(), (xs[i] * c).to_bits(), "{isa:?}");
                let want = (xs[i] * 0.5) * (erfs[i] + 1.0);
                assert_eq!(finished[i].to_bits(), want.to_bits(), "{isa:?}");
            }
        }
    }

    /// tract's layer normalisation (`Reduce<Sum>`, × 1/n, −, `RmsNorm`, × γ, + β) and the fused
    /// [`LayerNorm`], and each build of its loop, against the same sums in f64.
    #[test]
    fn layer_norm_matches_tract_and_f64() {
        use tract_onnx::tract_core::ops::math;
        use tract_onnx::tract_core::ops::nn::{Reduce, Reducer, RmsNorm};
        let mut seed = 0x9e37_79b9_u32;
        let mut uniform = move |count: usize, scale: f32, offset: f32| -> Vec<f32> {
            (0..count)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed % 10_007) as f32 / 10_007.0 * scale + offset
                })
                .collect()
        };
        let eps = 1e-12f32;
        for (rows, n) in [(5usize, 40usize), (3, 384), (2, 7)] {
            // Rows far from zero, as after a residual: centring must happen before squaring.
            let xs = uniform(rows * n, 8.0, 20.0);
            let gamma = uniform(n, 2.0, -1.0);
            let beta = uniform(n, 1.0, -0.5);
            let want: Vec<f64> = xs
                .chunks(n)
                .flat_map(|row| {
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
                    let var =
                        row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                    let inv = 1.0 / (var + eps as f64).sqrt();
                    let (gamma, beta) = (&gamma, &beta);
                    row.iter().enumerate().map(move |(c, &v)| {
                        (v as f64 - mean) * inv * gamma[c] as f64 + beta[c] as f64
                    })
                })
                .collect();
            let close = |got: &[f32], what: &str| {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 2e-5 * (1.0 + w.abs()),
                        "{what} ({rows}×{n}): {g} vs {w}"
                    );
                }
            };
            for isa in Isa::available() {
                let mut ys = vec![0f32; xs.len()];
                isa.layer_norm(&xs, &gamma, &beta, eps, &mut ys);
                close(&ys, &format!("{isa:?}"));
            }

            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, rows, n])).unwrap();
            let column = |v: &[f32]| tensor1(v).into_shape(&[1, 1, n]).unwrap();
            let g = model.add_const("gamma", column(&gamma)).unwrap();
            let b = model.add_const("beta", column(&beta)).unwrap();
            let inv_n = model
                .add_const("inv_n", tensor3(&[[[1.0 / n as f32]]]))
                .unwrap();
            let sum = Reduce::new(tvec!(2), Reducer::Sum);
            let sum = model.wire_node("sum", sum, &[x]).unwrap();
            let mean = model
                .wire_node("mean", math::mul(), &[sum[0], inv_n])
                .unwrap();
            let d = model.wire_node("d", math::sub(), &[x, mean[0]]).unwrap();
            let rms = RmsNorm {
                axis: 2,
                eps: tensor0(eps).into_arc_tensor(),
            };
            let normed = model.wire_node("rms", rms, &d).unwrap();
            let scaled = model
                .wire_node("gamma_mul", math::mul(), &[normed[0], g])
                .unwrap();
            let y = model
                .wire_node("beta_add", math::add(), &[scaled[0], b])
                .unwrap();
            model.select_output_outlets(&y).unwrap();
            let mut fused = model.clone();
            assert_eq!(fuse_layer_norm(&mut fused).unwrap(), 1);
            let run = |m: TypedModel| {
                let input = tensor1(&xs).into_shape(&[1, rows, n]).unwrap();
                let out = m
                    .into_optimized()
                    .unwrap()
                    .into_runnable()
                    .unwrap()
                    .run(tvec!(input.into_tvalue()))
                    .unwrap();
                let out = out[0].try_as_plain_ram().unwrap();
                out.as_slice::<f32>().unwrap().to_vec()
            };
            close(&run(model), "tract");
            close(&run(fused), "fused");
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_tract_bit_for_bit(xs in proptest::collection::vec(-1e4f32..1e4, 0..300),
                                     scale_by in -8i32..8) {
            let k = 2f32.powi(scale_by);
            let xs: Vec<f32> = xs.iter().map(|x| x * k).collect();
            check(&xs);
        }
    }
}
