//! An independent BERT forward pass in plain ndarray, for one unpadded sequence.
//!
//! It shares nothing with the exporter or tract but the checkpoint reader: attention sees only
//! the real tokens (no mask trick), GELU uses erf from libm, LayerNorm is written out. So a wrong
//! mask, a wrong activation or a transposed weight in the exported graph shows up as different
//! logits.

use ndarray::{s, Array1, Array2, ArrayView1, Axis};

use edgebert_quantize::Checkpoint;

fn mat(ckpt: &Checkpoint, name: &str) -> Array2<f32> {
    let w = &ckpt.weights[name];
    Array2::from_shape_vec((w.shape[0], w.shape[1]), w.data.clone()).expect("matrix weight")
}

fn vec1(ckpt: &Checkpoint, name: &str) -> Array1<f32> {
    Array1::from(ckpt.weights[name].data.clone())
}

/// `x · Wᵀ + b` for HF Linear weights `[out, in]`.
fn linear(ckpt: &Checkpoint, x: &Array2<f32>, name: &str) -> Array2<f32> {
    x.dot(&mat(ckpt, &format!("{name}.weight")).t()) + &vec1(ckpt, &format!("{name}.bias"))
}

fn layer_norm(ckpt: &Checkpoint, x: &Array2<f32>, name: &str, eps: f32) -> Array2<f32> {
    let (g, b) = (
        vec1(ckpt, &format!("{name}.weight")),
        vec1(ckpt, &format!("{name}.bias")),
    );
    let mut out = x.clone();
    for mut row in out.rows_mut() {
        let n = row.len() as f32;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * g[j] + b[j];
        }
    }
    out
}

fn softmax_row(row: ArrayView1<f32>) -> Array1<f32> {
    let max = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e = row.mapv(|v| (v - max).exp());
    let sum = e.sum();
    e / sum
}

/// The logits of `BertForSequenceClassification` for one sequence of token ids (special tokens
/// included, no padding).
pub fn logits(ckpt: &Checkpoint, ids: &[i64], type_ids: &[i64]) -> Vec<f32> {
    let cfg = &ckpt.config;
    let p = ckpt.prefix();
    let (n, h, heads) = (ids.len(), cfg.hidden_size, cfg.num_attention_heads);
    let dh = h / heads;
    let eps = cfg.layer_norm_eps as f32;
    let words = mat(ckpt, &format!("{p}embeddings.word_embeddings.weight"));
    let pos = mat(ckpt, &format!("{p}embeddings.position_embeddings.weight"));
    let types = mat(ckpt, &format!("{p}embeddings.token_type_embeddings.weight"));
    let mut x = Array2::<f32>::zeros((n, h));
    for t in 0..n {
        let row = &words.row(ids[t] as usize) + &pos.row(t) + types.row(type_ids[t] as usize);
        x.row_mut(t).assign(&row);
    }
    x = layer_norm(ckpt, &x, &format!("{p}embeddings.LayerNorm"), eps);
    for l in 0..cfg.num_hidden_layers {
        let w = format!("{p}encoder.layer.{l}");
        let q = linear(ckpt, &x, &format!("{w}.attention.self.query"));
        let k = linear(ckpt, &x, &format!("{w}.attention.self.key"));
        let v = linear(ckpt, &x, &format!("{w}.attention.self.value"));
        let mut ctx = Array2::<f32>::zeros((n, h));
        for head in 0..heads {
            let cols = s![.., head * dh..(head + 1) * dh];
            let scores = q.slice(cols).dot(&k.slice(cols).t()) / (dh as f32).sqrt();
            let mut probs = Array2::<f32>::zeros((n, n));
            for (i, row) in scores.axis_iter(Axis(0)).enumerate() {
                probs.row_mut(i).assign(&softmax_row(row));
            }
            ctx.slice_mut(cols).assign(&probs.dot(&v.slice(cols)));
        }
        let a = linear(ckpt, &ctx, &format!("{w}.attention.output.dense")) + &x;
        let a = layer_norm(ckpt, &a, &format!("{w}.attention.output.LayerNorm"), eps);
        let i = linear(ckpt, &a, &format!("{w}.intermediate.dense"));
        let i = match cfg.hidden_act.as_str() {
            "relu" => i.mapv(|v| v.max(0.0)),
            "gelu" => i.mapv(|v| 0.5 * v * (1.0 + libm::erff(v / std::f32::consts::SQRT_2))),
            other => panic!("reference has no activation {other}"),
        };
        let o = linear(ckpt, &i, &format!("{w}.output.dense")) + &a;
        x = layer_norm(ckpt, &o, &format!("{w}.output.LayerNorm"), eps);
    }
    let first = x.slice(s![0..1, ..]).to_owned();
    let pooled = linear(ckpt, &first, &format!("{p}pooler.dense")).mapv(f32::tanh);
    linear(ckpt, &pooled, "classifier").row(0).to_vec()
}
