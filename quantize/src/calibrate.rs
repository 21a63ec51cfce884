//! Calibration for static int8: the f32 model is run by tract on calibration texts (padded to the
//! runtime's length buckets, as on the device), the inputs of every quantized MatMul are recorded,
//! and a range per activation is chosen by min/max, percentile or entropy (KL divergence).

use std::collections::BTreeMap;

use edgebert_runtime::text::TextEncoder;
use edgebert_runtime::Bundle;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::error::Error;

/// How an activation's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// The smallest and largest values seen.
    Minmax,
    /// The 0.01th and 99.99th percentiles: a few outliers are clipped for finer steps.
    Percentile,
    /// The symmetric threshold whose 128-level quantization loses the least information (KL
    /// divergence of the |x| histogram, as TensorRT's entropy calibration).
    Entropy,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Minmax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
        }
    }
}

const BINS: usize = 2048;

/// What calibration saw of one activation.
#[derive(Debug, Clone)]
struct Stats {
    min: f32,
    max: f32,
    /// Histogram of values over [min, max] (second pass).
    hist: Vec<u64>,
}

/// Runs `texts` through the f32 bundle and returns a range `(lo, hi)` per activation name.
pub fn calibrate(
    bundle: &Bundle,
    activations: &[String],
    texts: &[String],
    method: Method,
    progress: &indicatif::ProgressBar,
) -> Result<BTreeMap<String, (f32, f32)>, Error> {
    let usage = |m: String| Error::Usage(m);
    let (pad, by_len) = by_bucket(bundle, texts, "calibration")?;
    let rows: Vec<_> = by_len.values().flatten().collect();
    if by_len.len() == 1 && rows.iter().all(|r| r.ids.len() == rows[0].ids.len()) && rows.len() > 1
    {
        return Err(usage(format!(
            "every calibration text has {} tokens: give texts of the lengths the model will see",
            rows[0].ids.len()
        )));
    }
    let proto = crate::onnx::decode(&bundle.graph).map_err(|e| usage(e.to_string()))?;
    let mut plans = BTreeMap::new();
    for &len in by_len.keys() {
        plans.insert(
            len,
            plan(&proto, activations, len).map_err(|e| usage(format!("calibration: {e:#}")))?,
        );
    }
    progress.set_length(2 * rows.len() as u64);
    let mut stats: Vec<Stats> = vec![
        Stats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: vec![0; BINS],
        };
        activations.len()
    ];
    // Pass 1: ranges; pass 2: histograms over them.
    for pass in 0..2 {
        for (len, group) in &by_len {
            let p = &plans[len];
            for r in group {
                let batch = edgebert_runtime::engine::TokenBatch::padded(&[r], *len, pad);
                let outs = run(p, &batch).map_err(|e| usage(format!("calibration: {e:#}")))?;
                for (s, v) in stats.iter_mut().zip(outs.iter().skip(1)) {
                    let v = v
                        .to_plain_array_view::<f32>()
                        .map_err(|e| usage(format!("{e:#}")))?;
                    if pass == 0 {
                        for &x in v.iter() {
                            s.min = s.min.min(x);
                            s.max = s.max.max(x);
                        }
                    } else {
                        let width = (s.max - s.min).max(f32::MIN_POSITIVE);
                        for &x in v.iter() {
                            let b = (((x - s.min) / width) * BINS as f32) as usize;
                            s.hist[b.min(BINS - 1)] += 1;
                        }
                    }
                }
                progress.inc(1);
            }
        }
    }
    Ok(activations
        .iter()
        .zip(&stats)
        .map(|(name, s)| (name.clone(), range(s, method)))
        .collect())
}

/// The texts tokenized as on the device and grouped by the length bucket each is padded to;
/// and the pad id. `what` names the texts in errors.
pub(crate) fn by_bucket(
    bundle: &Bundle,
    texts: &[String],
    what: &str,
) -> Result<(i64, BTreeMap<usize, Vec<edgebert_runtime::text::Encoded>>), Error> {
    let max = bundle.manifest.max_seq_len as usize;
    let encoder = TextEncoder::from_json(&bundle.tokenizer_json, max)
        .map_err(edgebert_runtime::Error::from)?;
    let (_, pad) = encoder.pad();
    let mut by_len: BTreeMap<usize, Vec<_>> = BTreeMap::new();
    for r in texts.iter().filter_map(|t| encoder.encode(t).ok()) {
        let len = edgebert_runtime::classifier::LENGTH_BUCKETS
            .iter()
            .copied()
            .find(|&b| b >= r.ids.len())
            .unwrap_or(max)
            .min(max);
        by_len.entry(len).or_default().push(r);
    }
    if by_len.is_empty() {
        return Err(Error::Usage(format!("the {what} file has no usable text")));
    }
    Ok((i64::from(pad), by_len))
}

/// A batch-1 plan at `len` tokens whose outputs are the logits, then `activations` by name.
pub(crate) fn plan(
    proto: &ModelProto,
    activations: &[String],
    len: usize,
) -> TractResult<Arc<TypedSimplePlan>> {
    let mut model = tract_onnx::onnx().model_for_proto_model(proto)?;
    let inputs = model.input_outlets()?.len();
    for ix in 0..inputs {
        model.set_input_fact(ix, i64::fact([1, len]).into())?;
    }
    let mut outputs = vec![model.output_outlets()?[0]];
    for name in activations {
        outputs.push(
            model
                .find_outlet_label(name)
                .ok_or_else(|| anyhow::anyhow!("no tensor `{name}` in the graph"))?,
        );
    }
    model.select_output_outlets(&outputs)?;
    model.into_optimized()?.into_runnable()
}

/// Runs one padded batch through a [`plan`].
pub(crate) fn run(
    plan: &Arc<TypedSimplePlan>,
    t: &edgebert_runtime::engine::TokenBatch,
) -> TractResult<TVec<TValue>> {
    let shape = [t.batch, t.len];
    let mut inputs = tvec![];
    for (i, input) in plan.model().input_outlets()?.iter().enumerate() {
        let name = &plan.model().node(input.node).name;
        let data = match name.as_str() {
            "attention_mask" => &t.mask,
            "token_type_ids" => &t.type_ids,
            _ if i == 0 || name == "input_ids" => &t.ids,
            _ => &t.type_ids,
        };
        inputs.push(Tensor::from_shape(&shape, data)?.into_tvalue());
    }
    plan.run(inputs)
}

/// The range of one activation by `method` (always containing 0, so 0 is exact).
fn range(s: &Stats, method: Method) -> (f32, f32) {
    if !s.min.is_finite() || !s.max.is_finite() {
        return (0.0, 0.0);
    }
    let width = (s.max - s.min) / BINS as f32;
    let at = |bin: usize| s.min + bin as f32 * width;
    let (lo, hi) = match method {
        Method::Minmax => (s.min, s.max),
        Method::Percentile => {
            let total: u64 = s.hist.iter().sum();
            let cut = (total as f64 * 1e-4).floor() as u64;
            let (mut below, mut lo_bin) = (0u64, 0);
            while lo_bin < BINS && below + s.hist[lo_bin] <= cut {
                below += s.hist[lo_bin];
                lo_bin += 1;
            }
            let (mut above, mut hi_bin) = (0u64, BINS);
            while hi_bin > 0 && above + s.hist[hi_bin - 1] <= cut {
                above += s.hist[hi_bin - 1];
                hi_bin -= 1;
            }
            (at(lo_bin), at(hi_bin))
        }
        Method::Entropy => {
            let t = entropy_threshold(s);
            (-t, t)
        }
    };
    (lo.min(0.0), hi.max(0.0))
}

/// TensorRT-style entropy calibration on the |x| histogram: the threshold whose clipped,
/// 128-level version of the distribution has the smallest KL divergence from it.
fn entropy_threshold(s: &Stats) -> f32 {
    let amax = s.min.abs().max(s.max.abs());
    if amax == 0.0 {
        return 0.0;
    }
    // Re-bin the signed histogram by |x| into BINS bins over [0, amax].
    let width = (s.max - s.min) / BINS as f32;
    let mut h = vec![0f64; BINS];
    for (b, &n) in s.hist.iter().enumerate() {
        let centre = (s.min + (b as f32 + 0.5) * width).abs();
        h[((centre / amax * BINS as f32) as usize).min(BINS - 1)] += n as f64;
    }
    const LEVELS: usize = 128;
    let mut best = (f64::INFINITY, BINS);
    for i in (LEVELS..=BINS).step_by(16) {
        let mut p: Vec<f64> = h[..i].to_vec();
        p[i - 1] += h[i..].iter().sum::<f64>();
        // Quantize the first i bins into LEVELS levels, spread back over the non-empty bins.
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let (a, b) = (
                l * i / LEVELS,
                ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1),
            );
            let sum: f64 = h[a..b].iter().sum();
            let nonzero = h[a..b].iter().filter(|&&x| x > 0.0).count();
            if nonzero > 0 {
                for j in a..b {
                    if h[j] > 0.0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for j in 0..i {
            if p[j] > 0.0 {
                let pj = p[j] / ps;
                let qj = (q[j] / qs).max(1e-12);
                kl += pj * (pj / qj).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 / BINS as f32 * amax
}

/// Scale and zero point of asymmetric uint8 for a range containing 0.
pub fn uint8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo <= f32::MIN_POSITIVE {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(values: &[f32]) -> Stats {
        let min = values.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut hist = vec![0; BINS];
        let width = (max - min).max(f32::MIN_POSITIVE);
        for &x in values {
            hist[((((x - min) / width) * BINS as f32) as usize).min(BINS - 1)] += 1;
        }
        Stats { min, max, hist }
    }

    #[test]
    fn percentile_and_entropy_clip_rare_outliers_minmax_does_not() {
        let mut v: Vec<f32> = (0..100_000)
            .map(|i| ((i % 2001) as f32 - 1000.0) / 1000.0)
            .collect();
        v.push(50.0);
        let s = stats(&v);
        assert_eq!(range(&s, Method::Minmax), (-1.0, 50.0));
        let (lo, hi) = range(&s, Method::Percentile);
        assert!(hi < 2.0 && lo <= -0.99, "{lo} {hi}");
        let (lo, hi) = range(&s, Method::Entropy);
        assert!((0.9..10.0).contains(&hi) && lo == -hi, "{lo} {hi}");
    }

    proptest! {
        #[test]
        fn uint8_params_keep_zero_exact_and_cover_the_range(lo in -100f32..0.0, hi in 0f32..100.0) {
            let (scale, zp) = uint8_params(lo, hi);
            prop_assert!(scale > 0.0 && scale.is_finite());
            // Zero is representable exactly: q = zp.
            let deq = |q: u8| (f32::from(q) - f32::from(zp)) * scale;
            prop_assert_eq!(deq(zp), 0.0);
            // The ends are within half a step of representable values.
            prop_assert!(deq(0) <= lo + scale * 0.51 + 1e-4);
            prop_assert!(deq(255) >= hi - scale * 0.51 - 1e-4);
        }
    }

    #[test]
    fn degenerate_ranges_do_not_make_nan() {
        assert_eq!(uint8_params(0.0, 0.0), (1.0, 0));
        let s = stats(&[0.0; 10]);
        for m in [Method::Minmax, Method::Percentile, Method::Entropy] {
            let (lo, hi) = range(&s, m);
            assert!(lo.is_finite() && hi.is_finite());
        }
    }
}
