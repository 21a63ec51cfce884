//! `bench-train`: training speed of a model on synthetic batches, and how much of a step is matrix
//! products. A benchmark, not a test: its numbers depend on the machine and its load.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use edgebert_quantize::checkpoint::Checkpoint;
use serde::Serialize;

use crate::error::Result;
use crate::loss::cross_entropy;
use crate::model::{every_other_layer, Batch, Bert};
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchTrain {
    /// Layers of the checkpoint the measured model keeps (`None`: every other one, the student).
    pub layers: Option<Vec<usize>>,
    pub seq: usize,
    pub batch: usize,
    pub steps: usize,
}

/// Measured figures (medians over the steps).
#[derive(Debug, Clone, Serialize)]
pub struct BenchTrainResult {
    pub layers: usize,
    pub parameters: usize,
    pub seq: usize,
    pub batch: usize,
    pub steps: usize,
    pub examples_per_second: f64,
    pub step_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// The step's matrix products run alone (forward shapes, ×3 for the backward's two products
    /// per forward one): an estimate of the time in matmul.
    pub matmul_ms: f64,
    pub matmul_share: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `steps` training steps (after one warm-up step) on random token ids.
pub fn bench_train(checkpoint: &Path, b: &BenchTrain, device: &Device) -> Result<BenchTrainResult> {
    let ckpt = Checkpoint::open(checkpoint)?;
    let labels = vec!["negative".to_string(), "positive".to_string()];
    let full = Bert::from_checkpoint(&ckpt, &labels, 1, device)?;
    drop(ckpt);
    let layers = b
        .layers
        .clone()
        .unwrap_or_else(|| every_other_layer(full.config.num_hidden_layers));
    let model = full.student(&layers)?;
    drop(full);
    let cfg = model.config.clone();
    let mut rng = Rng::new(5);
    let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..b.batch)
        .map(|_| {
            let ids = (0..b.seq)
                .map(|_| 1000 + rng.below(cfg.vocab_size - 1000) as u32)
                .collect();
            (ids, vec![0; b.seq])
        })
        .collect();
    let r: Vec<(&[u32], &[u32])> = rows
        .iter()
        .map(|(a, c)| (a.as_slice(), c.as_slice()))
        .collect();
    let batch = Batch::new(&r, 0, device)?;
    let gold: Vec<u32> = (0..b.batch as u32).map(|i| i % 2).collect();
    let gold = Tensor::from_vec(gold, b.batch, device)?;
    let mut opt = AdamW::new(model.vars(), AdamWConfig::default());
    let (mut fw, mut bw, mut op, mut total) = (vec![], vec![], vec![], vec![]);
    for step in 0..=b.steps {
        let t0 = Instant::now();
        let mut drop_rng = Rng::derived(1, "dropout", step as u64);
        let out = model.forward(&batch, Some(&mut drop_rng))?;
        let loss = cross_entropy(&out.logits, &gold)?;
        let _ = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads, 1e-5)?;
        let t3 = Instant::now();
        if step > 0 {
            fw.push((t1 - t0).as_secs_f64() * 1e3);
            bw.push((t2 - t1).as_secs_f64() * 1e3);
            op.push((t3 - t2).as_secs_f64() * 1e3);
            total.push((t3 - t0).as_secs_f64() * 1e3);
        }
    }
    let matmul_ms = matmul_time(&cfg, b, device)? * 3.0;
    let step_ms = median(total);
    Ok(BenchTrainResult {
        layers: cfg.num_hidden_layers,
        parameters: model.parameter_count(),
        seq: b.seq,
        batch: b.batch,
        steps: b.steps,
        examples_per_second: b.batch as f64 / (step_ms / 1e3),
        step_ms,
        forward_ms: median(fw),
        backward_ms: median(bw),
        optimizer_ms: median(op),
        matmul_ms,
        matmul_share: (matmul_ms / step_ms).min(1.0),
    })
}

/// Median time of one forward pass's matrix products, run alone with the same shapes.
fn matmul_time(
    cfg: &edgebert_quantize::BertConfig,
    b: &BenchTrain,
    device: &Device,
) -> Result<f64> {
    let (h, i, heads) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_attention_heads,
    );
    let rows = b.batch * b.seq;
    let rand = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, device);
    let x = rand(&[rows, h])?;
    let xi = rand(&[rows, i])?;
    let w_hh = rand(&[h, h])?;
    let w_ih = rand(&[i, h])?;
    let w_hi = rand(&[h, i])?;
    let q = rand(&[b.batch, heads, b.seq, h / heads])?;
    let p = rand(&[b.batch, heads, b.seq, b.seq])?;
    let mut times = vec![];
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..cfg.num_hidden_layers {
            for _ in 0..4 {
                x.matmul(&w_hh.t()?)?;
            }
            x.matmul(&w_ih.t()?)?;
            xi.matmul(&w_hi.t()?)?;
            q.matmul(&q.t()?)?;
            p.matmul(&q)?;
        }
        let _ = x.to_dtype(DType::F32)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}
