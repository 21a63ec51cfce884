//! Test-only int8 rewrites of an exported graph, to prove that the runtime runs every int8 form
//! tract supports. Not the product's quantizer (that is `quantize/`'s job): per-tensor symmetric
//! weights, activation ranges from one calibration batch, no accuracy guard.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use edgebert_quantize::onnx::pb::tensor_proto::DataType;
use edgebert_quantize::onnx::pb::{ModelProto, NodeProto, TensorProto};
use edgebert_quantize::onnx::{attr_int, encode};
use edgebert_runtime::engine::TokenBatch;
use tract_onnx::prelude::*;

/// Which int8 graph form to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `DynamicQuantizeLinear` → `MatMulInteger` → rescale (activations quantized at run time).
    Dynamic,
    /// `QuantizeLinear` → `DequantizeLinear` on activations, `DequantizeLinear` on int8 weights.
    Qdq,
    /// `QuantizeLinear` → `QLinearMatMul` → `DequantizeLinear`, fixed scales.
    QLinear,
}

/// Min and max of every named tensor over a calibration batch, computed by tract.
pub fn ranges(
    onnx: &[u8],
    batch: &TokenBatch,
    names: &[String],
) -> Result<HashMap<String, (f32, f32)>> {
    let mut model = tract_onnx::onnx().model_for_read(&mut &onnx[..])?;
    let shape = [batch.batch, batch.len];
    for ix in 0..3 {
        model.set_input_fact(ix, InferenceFact::dt_shape(i64::datum_type(), shape))?;
    }
    let outlets: Vec<OutletId> = names
        .iter()
        .map(|n| {
            model
                .find_outlet_label(n)
                .ok_or_else(|| anyhow!("no tensor {n}"))
        })
        .collect::<Result<_>>()?;
    model.select_output_outlets(&outlets)?;
    let plan = model.into_optimized()?.into_runnable()?;
    let inputs: TVec<TValue> = [&batch.ids, &batch.mask, &batch.type_ids]
        .iter()
        .map(|d| Ok(Tensor::from_shape(&shape, d)?.into_tvalue()))
        .collect::<Result<_>>()?;
    let outputs = plan.run(inputs)?;
    let mut out = HashMap::new();
    for (name, t) in names.iter().zip(outputs) {
        let v = t.to_plain_array_view::<f32>()?;
        let (lo, hi) = v
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        out.insert(name.clone(), (lo, hi));
    }
    Ok(out)
}

fn tensor_f32(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn scalar(name: &str, dt: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Initializers for a u8 scale and zero point.
fn u8_quant_params(scale_name: &str, zero_name: &str, scale: f32, zero: u8) -> [TensorProto; 2] {
    [
        scalar(scale_name, DataType::Float, scale.to_le_bytes().to_vec()),
        scalar(zero_name, DataType::Uint8, vec![zero]),
    ]
}

/// u8 scale and zero point covering `[lo, hi]` (widened to include 0, with a margin).
fn u8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0) * 1.25, hi.max(0.0) * 1.25);
    let scale = ((hi - lo) / 255.0).max(1e-8);
    (scale, (-lo / scale).round().clamp(0.0, 255.0) as u8)
}

/// Rewrites every MatMul with a constant weight of `model` into `form`, calibrating on `batch`.
pub fn quantize(model: &ModelProto, form: Form, batch: &TokenBatch) -> Result<ModelProto> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or_else(|| anyhow!("no graph"))?;
    let weights: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let targets: Vec<NodeProto> = graph
        .node
        .iter()
        .filter(|n| {
            n.op_type == "MatMul" && weights.get(&n.input[1]).is_some_and(|w| w.dims.len() == 2)
        })
        .cloned()
        .collect();
    let names: Vec<String> = targets
        .iter()
        .flat_map(|n| [n.input[0].clone(), n.output[0].clone()])
        .collect();
    let ranges = ranges(&encode(&model), batch, &names)?;
    let graph = model.graph.as_mut().ok_or_else(|| anyhow!("no graph"))?;
    let mut replaced: HashMap<String, Vec<NodeProto>> = HashMap::new();
    for mm in &targets {
        let (x, w, y, n) = (&mm.input[0], &mm.input[1], &mm.output[0], &mm.name);
        let data = tensor_f32(&weights[w]);
        let w_scale = data.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-8) / 127.0;
        let wq: Vec<u8> = data
            .iter()
            .map(|v| (v / w_scale).round().clamp(-127.0, 127.0) as i8 as u8)
            .collect();
        let mut wq_t = weights[w].clone();
        wq_t.name = format!("{w}.int8");
        wq_t.data_type = DataType::Int8 as i32;
        wq_t.raw_data = wq;
        graph.initializer.push(wq_t);
        graph.initializer.push(scalar(
            &format!("{w}.scale"),
            DataType::Float,
            w_scale.to_le_bytes().to_vec(),
        ));
        graph
            .initializer
            .push(scalar(&format!("{w}.zero"), DataType::Int8, vec![0]));
        let (wq, ws, wz) = (
            format!("{w}.int8"),
            format!("{w}.scale"),
            format!("{w}.zero"),
        );
        let (x_scale, x_zero) = u8_params(ranges[x].0, ranges[x].1);
        let (xs, xz) = (format!("{n}/x_scale"), format!("{n}/x_zero"));
        let t = |s: &str| format!("{n}/{s}");
        let nodes = match form {
            Form::Dynamic => {
                let mut cast = node("Cast", &t("cast"), &[&t("acc")], &[&t("acc_f32")]);
                cast.attribute.push(attr_int("to", DataType::Float as i64));
                vec![
                    node(
                        "DynamicQuantizeLinear",
                        &t("dql"),
                        &[x],
                        &[&t("xq"), &t("xs"), &t("xz")],
                    ),
                    node(
                        "MatMulInteger",
                        &t("mmi"),
                        &[&t("xq"), &wq, &t("xz"), &wz],
                        &[&t("acc")],
                    ),
                    cast,
                    node(
                        "Mul",
                        &t("rescale_x"),
                        &[&t("acc_f32"), &t("xs")],
                        &[&t("y_x")],
                    ),
                    node("Mul", &t("rescale_w"), &[&t("y_x"), &ws], &[y]),
                ]
            }
            Form::Qdq => {
                graph
                    .initializer
                    .extend(u8_quant_params(&xs, &xz, x_scale, x_zero));
                vec![
                    node("QuantizeLinear", &t("q"), &[x, &xs, &xz], &[&t("xq")]),
                    node(
                        "DequantizeLinear",
                        &t("dq"),
                        &[&t("xq"), &xs, &xz],
                        &[&t("xdq")],
                    ),
                    node(
                        "DequantizeLinear",
                        &t("wdq"),
                        &[&wq, &ws, &wz],
                        &[&t("wdq_out")],
                    ),
                    node("MatMul", n, &[&t("xdq"), &t("wdq_out")], &[y]),
                ]
            }
            Form::QLinear => {
                let (y_scale, y_zero) = u8_params(ranges[y].0, ranges[y].1);
                let (ys, yz) = (t("y_scale"), t("y_zero"));
                graph
                    .initializer
                    .extend(u8_quant_params(&xs, &xz, x_scale, x_zero));
                graph
                    .initializer
                    .extend(u8_quant_params(&ys, &yz, y_scale, y_zero));
                vec![
                    node("QuantizeLinear", &t("q"), &[x, &xs, &xz], &[&t("xq")]),
                    node(
                        "QLinearMatMul",
                        &t("qlmm"),
                        &[&t("xq"), &xs, &xz, &wq, &ws, &wz, &ys, &yz],
                        &[&t("yq")],
                    ),
                    node("DequantizeLinear", &t("dq"), &[&t("yq"), &ys, &yz], &[y]),
                ]
            }
        };
        replaced.insert(n.clone(), nodes);
    }
    let old = std::mem::take(&mut graph.node);
    for n in old {
        match replaced.remove(&n.name) {
            Some(nodes) => graph.node.extend(nodes),
            None => graph.node.push(n),
        }
    }
    let used: std::collections::HashSet<String> =
        graph.node.iter().flat_map(|n| n.input.clone()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    Ok(model)
}
