//! Activation-level error: what each quantized node's *output* loses, measured by running the
//! f32 and the int8 graph side by side on real texts (padded to the runtime's length buckets, as
//! on the device). The weight SQNR says how well a tensor was stored; this says how much error
//! reaches the next layer, which is where int8 inputs, clipping and accumulated error show.

use std::collections::BTreeMap;

use edgebert_runtime::Bundle;

use crate::calibrate::{by_bucket, plan, run};
use crate::error::Error;

/// One quantized node's output, f32 graph against int8 graph.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationError {
    pub node: String,
    /// The tensor compared (the node's output; the same name in both graphs).
    pub tensor: String,
    /// 10·log10(Σx² / Σ(x − x̂)²) over every value of every text.
    pub sqnr_db: f64,
    /// ‖x − x̂‖ / ‖x‖.
    pub relative_error: f64,
    /// Values compared.
    pub values: u64,
}

/// Runs `texts` through `f32` and through `int8_onnx` (the same graph quantized: the tensors of
/// `nodes` = (node, output tensor) exist in both) and compares each output.
pub fn activation_errors(
    f32: &Bundle,
    int8_onnx: &[u8],
    nodes: &[(String, String)],
    texts: &[String],
    progress: &indicatif::ProgressBar,
) -> Result<Vec<ActivationError>, Error> {
    let usage = |m: String| Error::Usage(m);
    let (pad, by_len) = by_bucket(f32, texts, "evaluation")?;
    let tensors: Vec<String> = nodes.iter().map(|(_, t)| t.clone()).collect();
    let decode = |bytes: &[u8]| crate::onnx::decode(bytes).map_err(|e| usage(e.to_string()));
    let (p32, p8) = (decode(&f32.graph)?, decode(int8_onnx)?);
    // Σx², Σ(x − x̂)², count per tensor; the logits are compared too, as the last row.
    let mut sums = vec![(0f64, 0f64, 0u64); tensors.len() + 1];
    progress.set_length(by_len.values().map(Vec::len).sum::<usize>() as u64);
    for (len, group) in &by_len {
        let probe = |proto| {
            plan(proto, &tensors, *len).map_err(|e| usage(format!("activation error: {e:#}")))
        };
        let (a, b) = (probe(&p32)?, probe(&p8)?);
        for r in group {
            let batch = edgebert_runtime::engine::TokenBatch::padded(&[r], *len, pad);
            let ra = run(&a, &batch).map_err(|e| usage(format!("{e:#}")))?;
            let rb = run(&b, &batch).map_err(|e| usage(format!("{e:#}")))?;
            // Output 0 is the logits: store it last.
            for (i, (x, y)) in ra.iter().zip(rb.iter()).enumerate() {
                let slot = if i == 0 { tensors.len() } else { i - 1 };
                let view = |t: &tract_onnx::prelude::TValue| {
                    t.to_plain_array_view::<f32>()
                        .map(|v| v.iter().copied().collect::<Vec<f32>>())
                        .map_err(|e| usage(format!("{e:#}")))
                };
                let (x, y) = (view(x)?, view(y)?);
                if x.len() != y.len() {
                    return Err(usage(format!(
                        "`{}` has {} values in f32 and {} in int8",
                        tensors.get(slot).map_or("logits", |s| s.as_str()),
                        x.len(),
                        y.len()
                    )));
                }
                let s = &mut sums[slot];
                for (&u, &v) in x.iter().zip(&y) {
                    s.0 += f64::from(u) * f64::from(u);
                    s.1 += f64::from(u - v) * f64::from(u - v);
                }
                s.2 += x.len() as u64;
            }
            progress.inc(1);
        }
    }
    let names: BTreeMap<usize, (&str, &str)> = nodes
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .chain(std::iter::once(("logits", "logits")))
        .enumerate()
        .collect();
    Ok(sums
        .iter()
        .enumerate()
        .map(|(i, &(signal, noise, values))| ActivationError {
            node: names[&i].0.to_owned(),
            tensor: names[&i].1.to_owned(),
            sqnr_db: if noise > 0.0 {
                10.0 * (signal / noise).log10()
            } else {
                f64::INFINITY
            },
            relative_error: if signal > 0.0 {
                (noise / signal).sqrt()
            } else {
                0.0
            },
            values,
        })
        .collect())
}
