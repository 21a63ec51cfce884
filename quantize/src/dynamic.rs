//! Dynamic int8 quantization of an ONNX graph.
//!
//! Every `MatMul` whose second input is a constant 2-D f32 weight `[K, N]` becomes
//!
//! ```text
//! x ─ DynamicQuantizeLinear ─ x_q (u8), x_scale, x_zero      (one per activation, shared)
//! MatMulInteger(x_q, W_q (i8 [K, N]), x_zero, 0) ─ Cast(f32) ─ Mul(x_scale · w_scale[N])
//! ```
//!
//! with symmetric int8 weights per output channel. The per-channel scale is applied as an f32
//! `Mul` after the i32 product, so the graph does not depend on per-axis `DequantizeLinear`
//! support (read as a scalar by tract before PR #2849). This is the form onnxruntime's
//! `quantize_dynamic` writes, and tract turns `MatMulInteger` into an i32-accumulating int8 EinSum.
//!
//! Constant tables read by rows (64 rows or more) are stored int8 per row, with a per-row scale looked
//! up alongside by the same `Gather` or `Slice` and applied after it: the word embeddings (a
//! `Gather` on `input_ids`), and the position table (our exporter `Slice`s its first rows;
//! PyTorch's exporter `Gather`s them). LayerNorm, softmax, GELU and the attention products (no
//! constant operand) stay f32.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

use crate::onnx::attr_int;

/// Why a graph could not be quantized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantizeError {
    #[error("the graph has no MatMul with a constant weight to quantize")]
    NothingToQuantize,
    #[error(
        "--keep-f32 names `{0}`, which is not a quantizable MatMul or embedding in this graph"
    )]
    UnknownKeep(String),
    #[error("the ONNX model has no graph")]
    NoGraph,
    #[error("initializer `{0}` is not f32 stored as raw data")]
    UnsupportedInitializer(String),
}

/// What to quantize.
#[derive(Debug, Clone, Default)]
pub struct DynamicOptions {
    /// Node names (MatMul nodes, or an embedding Gather/Slice) to leave in f32.
    pub keep_f32: Vec<String>,
    /// Leave the embedding tables (words, positions) in f32.
    pub keep_embeddings_f32: bool,
}

/// One quantized weight: how much it shrank and how faithfully (signal-to-quantization-noise
/// ratio of the weight itself, in dB).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// The node that uses it.
    pub node: String,
    /// The weight's initializer name.
    pub weight: String,
    /// The tensor the node computes (the same name in the f32 and the int8 graph).
    pub output: String,
    pub shape: Vec<usize>,
    pub f32_bytes: usize,
    pub int8_bytes: usize,
    pub sqnr_db: f64,
}

impl TensorReport {
    /// Compares `data` with its quantized form `q`, element `i` scaled by `scales[scale_of(i)]`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        node: &str,
        weight: &str,
        output: &str,
        shape: [usize; 2],
        data: &[f32],
        q: &[i8],
        scales: &[f32],
        scale_of: impl Fn(usize) -> usize,
    ) -> TensorReport {
        let approx: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| f32::from(v) * scales[scale_of(i)])
            .collect();
        TensorReport {
            node: node.to_string(),
            weight: weight.to_string(),
            output: output.to_string(),
            shape: shape.to_vec(),
            f32_bytes: data.len() * 4,
            int8_bytes: q.len() + scales.len() * 4,
            sqnr_db: sqnr_db(data, &approx),
        }
    }
}

/// Symmetric int8 quantization of `values` with one scale: `(q, scale)`.
pub fn quantize_symmetric(values: impl Iterator<Item = f32> + Clone) -> (Vec<i8>, f32) {
    let max = values.clone().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    (
        values
            .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        scale,
    )
}

/// Signal-to-quantization-noise ratio in dB of `approx` against `exact` (∞ when equal).
pub fn sqnr_db(exact: &[f32], approx: &[f32]) -> f64 {
    let signal: f64 = exact.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let noise: f64 = exact
        .iter()
        .zip(approx)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

fn f32_data(t: &TensorProto) -> Result<Vec<f32>, QuantizeError> {
    if t.data_type == DataType::Float as i32 && !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    } else if t.data_type == DataType::Float as i32 && !t.float_data.is_empty() {
        Ok(t.float_data.clone())
    } else {
        Err(QuantizeError::UnsupportedInitializer(t.name.clone()))
    }
}

/// The values of an int64 initializer (raw or typed storage); `None` for another type.
fn i64_data(t: &TensorProto) -> Option<Vec<i64>> {
    if t.data_type != DataType::Int64 as i32 {
        None
    } else if t.raw_data.is_empty() {
        Some(t.int64_data.clone())
    } else {
        Some(
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        )
    }
}

fn tensor(name: String, dt: DataType, dims: &[usize], raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        raw_data,
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name,
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn cast(name: String, input: &str, output: &str, to: DataType) -> NodeProto {
    let mut n = node("Cast", name, &[input], &[output]);
    n.attribute.push(attr_int("to", to as i64));
    n
}

/// Quantizes `model` dynamically; returns the new model and a report per quantized weight.
pub fn quantize_dynamic(
    model: &ModelProto,
    options: &DynamicOptions,
) -> Result<(ModelProto, Vec<TensorReport>), QuantizeError> {
    quantize(model, options, None)
}

/// Static int8: as [`quantize_dynamic`], but each activation is quantized with a fixed scale and
/// zero point (`QuantizeLinear`, uint8 asymmetric) from the calibrated `ranges` (activation name →
/// `(lo, hi)`), so no min/max pass runs at inference.
pub fn quantize_static(
    model: &ModelProto,
    options: &DynamicOptions,
    ranges: &std::collections::BTreeMap<String, (f32, f32)>,
) -> Result<(ModelProto, Vec<TensorReport>), QuantizeError> {
    quantize(model, options, Some(ranges))
}

/// The activations that int8 MatMuls would quantize (their first inputs), in graph order, for
/// calibration.
pub fn activation_inputs(
    model: &ModelProto,
    options: &DynamicOptions,
) -> Result<Vec<String>, QuantizeError> {
    let graph = model.graph.as_ref().ok_or(QuantizeError::NoGraph)?;
    let weights: HashSet<&str> = graph
        .initializer
        .iter()
        .filter(|t| t.dims.len() == 2 && t.data_type == DataType::Float as i32)
        .map(|t| t.name.as_str())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for n in &graph.node {
        if n.op_type == "MatMul"
            && n.input.len() == 2
            && weights.contains(n.input[1].as_str())
            && !options.keep_f32.contains(&n.name)
            && !out.contains(&n.input[0])
        {
            out.push(n.input[0].clone());
        }
    }
    Ok(out)
}

/// Tables with fewer rows stay f32 (BERT's 2-row token-type table): the bytes saved would not
/// pay for three more nodes.
const MIN_TABLE_ROWS: i64 = 64;

fn quantize(
    model: &ModelProto,
    options: &DynamicOptions,
    ranges: Option<&std::collections::BTreeMap<String, (f32, f32)>>,
) -> Result<(ModelProto, Vec<TensorReport>), QuantizeError> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or(QuantizeError::NoGraph)?;
    let initializers: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let is_weight = |name: &str| {
        initializers
            .get(name)
            .is_some_and(|t| t.dims.len() == 2 && t.data_type == DataType::Float as i32)
    };
    let matmuls: HashSet<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "MatMul" && n.input.len() == 2 && is_weight(&n.input[1]))
        .map(|n| n.name.clone())
        .collect();
    // Constant tables read by rows: a `Gather` along axis 0 (word embeddings, and the position /
    // token-type lookups of other exporters) or a `Slice` along axis 0 (our position table).
    let axis_zero = |name: &str| {
        initializers
            .get(name)
            .and_then(i64_data)
            .is_some_and(|v| v == [0])
    };
    let tables: HashSet<String> = graph
        .node
        .iter()
        .filter(|n| match n.op_type.as_str() {
            "Gather" => {
                n.input.len() == 2
                    && n.attribute.iter().all(|a| a.name != "axis" || a.i == 0)
                    && is_weight(&n.input[0])
            }
            "Slice" => n.input.len() >= 4 && axis_zero(&n.input[3]) && is_weight(&n.input[0]),
            _ => false,
        })
        .filter(|n| initializers[&n.input[0]].dims[0] >= MIN_TABLE_ROWS)
        .map(|n| n.name.clone())
        .collect();
    for keep in &options.keep_f32 {
        if !matmuls.contains(keep) && !tables.contains(keep) {
            return Err(QuantizeError::UnknownKeep(keep.clone()));
        }
    }
    let keep: HashSet<&String> = options.keep_f32.iter().collect();
    if matmuls.iter().all(|m| keep.contains(m)) {
        return Err(QuantizeError::NothingToQuantize);
    }

    let mut reports = Vec::new();
    let mut quantized_activations: HashMap<String, [String; 3]> = HashMap::new();
    let mut new_nodes = Vec::with_capacity(graph.node.len() * 2);
    let mut new_inits = Vec::new();
    for n in std::mem::take(&mut graph.node) {
        if matmuls.contains(&n.name) && !keep.contains(&n.name) {
            let (x, w, y) = (n.input[0].clone(), n.input[1].clone(), n.output[0].clone());
            let t = &initializers[&w];
            let (k, cols) = (t.dims[0] as usize, t.dims[1] as usize);
            let data = f32_data(t)?;
            // Per output channel (column n of [K, N]).
            let mut q = vec![0i8; k * cols];
            let mut scales = vec![0f32; cols];
            for c in 0..cols {
                let (col, s) = quantize_symmetric((0..k).map(|r| data[r * cols + c]));
                for (r, v) in col.into_iter().enumerate() {
                    q[r * cols + c] = v;
                }
                scales[c] = s;
            }
            reports.push(TensorReport::new(
                &n.name,
                &w,
                &y,
                [k, cols],
                &data,
                &q,
                &scales,
                |i| i % cols,
            ));
            let (wq, ws, wz) = (
                format!("{w}_quantized"),
                format!("{w}_scale"),
                format!("{w}_zero_point"),
            );
            new_inits.push(tensor(
                wq.clone(),
                DataType::Int8,
                &[k, cols],
                q.iter().map(|&v| v as u8).collect(),
            ));
            new_inits.push(tensor(
                ws.clone(),
                DataType::Float,
                &[cols],
                scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ));
            new_inits.push(tensor(wz.clone(), DataType::Int8, &[], vec![0]));
            let [xq, xs, xz] = quantized_activations
                .entry(x.clone())
                .or_insert_with(|| {
                    let names = [
                        format!("{x}_quantized"),
                        format!("{x}_scale"),
                        format!("{x}_zero_point"),
                    ];
                    match ranges.map(|r| r.get(&x).copied().unwrap_or((0.0, 0.0))) {
                        None => new_nodes.push(node(
                            "DynamicQuantizeLinear",
                            format!("{x}_DynamicQuantizeLinear"),
                            &[&x],
                            &[&names[0], &names[1], &names[2]],
                        )),
                        Some((lo, hi)) => {
                            let (scale, zp) = crate::calibrate::uint8_params(lo, hi);
                            new_inits.push(tensor(
                                names[1].clone(),
                                DataType::Float,
                                &[],
                                scale.to_le_bytes().to_vec(),
                            ));
                            new_inits.push(tensor(
                                names[2].clone(),
                                DataType::Uint8,
                                &[],
                                vec![zp],
                            ));
                            new_nodes.push(node(
                                "QuantizeLinear",
                                format!("{x}_QuantizeLinear"),
                                &[&x, &names[1], &names[2]],
                                &[&names[0]],
                            ));
                        }
                    }
                    names
                })
                .clone();
            let name = &n.name;
            let acc = format!("{name}_output_quantized");
            let acc_f = format!("{acc}_cast");
            let both = format!("{name}_quant_scales");
            new_nodes.push(node(
                "Mul",
                format!("{name}_quant_scales_mul"),
                &[&xs, &ws],
                &[&both],
            ));
            new_nodes.push(node(
                "MatMulInteger",
                format!("{name}_quant"),
                &[&xq, &wq, &xz, &wz],
                &[&acc],
            ));
            new_nodes.push(cast(
                format!("{name}_output_cast"),
                &acc,
                &acc_f,
                DataType::Float,
            ));
            new_nodes.push(node(
                "Mul",
                format!("{name}_output_scale"),
                &[&acc_f, &both],
                &[&y],
            ));
        } else if tables.contains(&n.name)
            && !options.keep_embeddings_f32
            && !keep.contains(&n.name)
        {
            let (table, y) = (n.input[0].clone(), n.output[0].clone());
            let t = &initializers[&table];
            let (rows, cols) = (t.dims[0] as usize, t.dims[1] as usize);
            let data = f32_data(t)?;
            let mut q = Vec::with_capacity(rows * cols);
            let mut scales = Vec::with_capacity(rows);
            for r in 0..rows {
                let (row, s) = quantize_symmetric(data[r * cols..(r + 1) * cols].iter().copied());
                q.extend(row);
                scales.push(s);
            }
            reports.push(TensorReport::new(
                &n.name,
                &table,
                &y,
                [rows, cols],
                &data,
                &q,
                &scales,
                |i| i / cols,
            ));
            // Scales stored [rows, 1] so the gathered scale broadcasts over the hidden axis.
            let (tq, ts) = (format!("{table}_quantized"), format!("{table}_row_scale"));
            new_inits.push(tensor(
                tq.clone(),
                DataType::Int8,
                &[rows, cols],
                q.iter().map(|&v| v as u8).collect(),
            ));
            new_inits.push(tensor(
                ts.clone(),
                DataType::Float,
                &[rows, 1],
                scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ));
            let name = &n.name;
            let (gq, gf, gs) = (
                format!("{name}_quantized"),
                format!("{name}_quantized_cast"),
                format!("{name}_scale"),
            );
            // The same lookup (Gather or Slice, same indices) on the int8 rows and on the scales.
            let lookup = |data: &str, out: &str, suffix: &str| {
                let mut l = n.clone();
                l.name = format!("{name}_{suffix}");
                l.input[0] = data.to_string();
                l.output = vec![out.to_string()];
                l
            };
            new_nodes.push(lookup(&tq, &gq, "quant"));
            new_nodes.push(cast(format!("{name}_cast"), &gq, &gf, DataType::Float));
            new_nodes.push(lookup(&ts, &gs, "scale_lookup"));
            new_nodes.push(node(
                "Mul",
                format!("{name}_dequantize"),
                &[&gf, &gs],
                &[&y],
            ));
        } else {
            new_nodes.push(n);
        }
    }
    graph.node = new_nodes;
    graph.initializer.extend(new_inits);
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    Ok((model, reports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn symmetric_quantization_error_is_at_most_half_a_step(
            v in proptest::collection::vec(-100f32..100f32, 1..200)
        ) {
            let (q, scale) = quantize_symmetric(v.iter().copied());
            for (x, q) in v.iter().zip(&q) {
                prop_assert!((x - f32::from(*q) * scale).abs() <= scale * 0.5 + 1e-4);
                prop_assert!(*q >= -127);
            }
        }
    }

    #[test]
    fn sqnr_of_exact_copy_is_infinite_and_of_noise_is_finite() {
        assert!(sqnr_db(&[1.0, 2.0], &[1.0, 2.0]).is_infinite());
        let db = sqnr_db(&[1.0, 2.0], &[1.1, 2.0]);
        assert!((db - 10.0 * (5.0f64 / 0.01).log10()).abs() < 1e-3);
    }

    #[test]
    fn all_zero_weights_quantize_to_zero_with_unit_scale() {
        let (q, s) = quantize_symmetric([0.0f32; 4].into_iter());
        assert_eq!((q, s), (vec![0; 4], 1.0));
    }
}
