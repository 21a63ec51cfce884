//! The distillation objective: α·KL·T² + β·CE + γ·(1 − cos), each term from differentiable ops.

use candle_core::{DType, Tensor, D};

use crate::error::{DistillError, Result};
use crate::eval::labels_of;
use crate::model::{Batch, Bert, Output};
use crate::train::Kind;

/// Weights of the loss terms and the softmax temperature.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    /// Soft-target term: KL(teacher/T ‖ student/T)·T².
    pub alpha: f64,
    /// Hard-label cross-entropy.
    pub beta: f64,
    /// Hidden-state cosine term.
    pub gamma: f64,
    pub temperature: f64,
}

impl Default for LossWeights {
    /// Fine-tuning-time distillation: half soft targets, half labels, no cosine term, T = 2.
    fn default() -> Self {
        LossWeights {
            alpha: 0.5,
            beta: 0.5,
            gamma: 0.0,
            temperature: 2.0,
        }
    }
}

/// `log softmax` over the last axis.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(x, D::Minus1)?)
}

/// Mean over the batch of KL(softmax(teacher/T) ‖ softmax(student/T)), times T² so that its
/// gradients keep their scale as T changes (Hinton et al.; DistilBERT's `KLDivLoss(batchmean)·T²`).
pub fn kl_t2(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let s = log_softmax(&(student / temperature)?)?;
    let t = log_softmax(&(teacher / temperature)?)?;
    let kl = (t.exp()? * (t - s)?)?.sum(D::Minus1)?.mean_all()?;
    Ok((kl * (temperature * temperature))?)
}

/// Mean cross-entropy of logits against integer labels (`u32 [batch]`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Mean over real tokens (`mask` `[batch, len]`, 1 for tokens) of `1 − cos(student, teacher)`
/// between hidden states `[batch, len, hidden]`.
pub fn cosine(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let dot = (student * teacher)?.sum(D::Minus1)?;
    let norms =
        (student.sqr()?.sum(D::Minus1)?.sqrt()? * teacher.sqr()?.sum(D::Minus1)?.sqrt()?)?;
    let cos = (dot / (norms + 1e-8)?)?;
    let per_token = ((1.0 - cos)? * mask)?;
    Ok((per_token.sum_all()? / mask.sum_all()?)?)
}

/// What a batch's rows are trained towards: labels for rows below `labelled` (the rest are a
/// transfer set's), and the teacher's logits for every row when the soft-target term is on.
pub struct Targets<'a> {
    pub gold: &'a [usize],
    pub labelled: usize,
    pub soft: Option<&'a [Vec<f32>]>,
}

/// The training objective of a batch (rows `idx`, the model's output `out`): cross-entropy for a
/// teacher; β·CE + α·KL·T² + γ·(1 − cos) for a student, each term as its weights say.
pub fn objective(
    kind: &Kind,
    model: &Bert,
    batch: &Batch,
    out: &Output,
    idx: &[usize],
    targets: &Targets,
) -> Result<Tensor> {
    let hard = labelled_cross_entropy(&out.logits, idx, targets.labelled, targets.gold, model)?;
    let (teacher, layers, w) = match kind {
        Kind::Teacher => {
            return hard.ok_or_else(|| {
                DistillError::Usage("a teacher is trained on labelled texts only".into())
            })
        }
        Kind::Student {
            teacher,
            layers,
            loss,
            ..
        } => (teacher, layers, loss),
    };
    let mut total = match hard {
        Some(ce) => (ce * w.beta)?,
        None => Tensor::zeros((), DType::F32, model.device())?,
    };
    if let Some(soft) = targets.soft {
        let rows: Vec<f32> = idx.iter().flat_map(|&i| soft[i].iter().copied()).collect();
        let t = Tensor::from_vec(rows, (idx.len(), model.labels.len()), model.device())?;
        total = (total + (kl_t2(&out.logits, &t, w.temperature)? * w.alpha)?)?;
    }
    if w.gamma > 0.0 {
        let t_out = teacher.forward(batch, None)?;
        let targets = cosine_targets(layers, teacher.config.num_hidden_layers);
        let mut cos = Tensor::zeros((), DType::F32, model.device())?;
        for (j, &t_layer) in targets.iter().enumerate() {
            let term = cosine(
                &out.hidden[j + 1],
                &t_out.hidden[t_layer + 1].detach(),
                &batch.mask,
            )?;
            cos = (cos + term)?;
        }
        total = (total + (cos * (w.gamma / targets.len() as f64))?)?;
    }
    Ok(total)
}

/// The cross-entropy of a batch's rows that have labels (rows `< labelled`), or `None` when it has
/// none (a batch of transfer texts only).
fn labelled_cross_entropy(
    logits: &Tensor,
    idx: &[usize],
    labelled: usize,
    gold: &[usize],
    model: &Bert,
) -> Result<Option<Tensor>> {
    let rows: Vec<u32> = (0..idx.len() as u32)
        .filter(|&r| idx[r as usize] < labelled)
        .collect();
    if rows.len() == idx.len() {
        return Ok(Some(cross_entropy(logits, &labels_of(gold, idx, model)?)?));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let of: Vec<usize> = rows.iter().map(|&r| idx[r as usize]).collect();
    let picked = logits.index_select(&Tensor::new(rows, model.device())?, 0)?;
    Ok(Some(cross_entropy(&picked, &labels_of(gold, &of, model)?)?))
}

/// The teacher layer whose output each student layer's output is pulled towards by the cosine
/// term: a student layer copied from teacher layer `l` stands for the teacher's layers up to the
/// next mapped one, so it is aligned with the output of the layer just before that (the last
/// student layer with the teacher's last): `[0, 2, 4]` of 6 → `[1, 3, 5]`.
pub fn cosine_targets(layers: &[usize], teacher_layers: usize) -> Vec<usize> {
    (0..layers.len())
        .map(|j| {
            layers
                .get(j + 1)
                .map_or(teacher_layers - 1, |&next| next - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
    }

    fn scalar(x: Tensor) -> f64 {
        f64::from(x.to_scalar::<f32>().unwrap())
    }

    /// Softmax by hand in f64.
    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn kl_with_temperature_squared_matches_a_hand_computation() {
        let student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]];
        let teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]];
        let temp = 2.5;
        let mut want = 0.0;
        for (s, tt) in student.iter().zip(&teacher) {
            let ps = softmax(&s.map(|v| v / temp));
            let pt = softmax(&tt.map(|v| v / temp));
            want += pt
                .iter()
                .zip(&ps)
                .map(|(p, q)| p * (p / q).ln())
                .sum::<f64>();
        }
        want = want / 2.0 * temp * temp;
        let flat = |a: &[[f64; 3]; 2]| a.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>();
        let got = scalar(
            kl_t2(
                &t(&flat(&student), &[2, 3]),
                &t(&flat(&teacher), &[2, 3]),
                temp,
            )
            .unwrap(),
        );
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Same distributions: zero.
        let same = t(&flat(&student), &[2, 3]);
        assert!(scalar(kl_t2(&same, &same, temp).unwrap()).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        let logits = [0.5f64, -1.0, 2.0, 1.0];
        let want = (-softmax(&logits[..2])[1].ln() - softmax(&logits[2..])[0].ln()) / 2.0;
        let got = scalar(
            cross_entropy(
                &t(&logits.map(|v| v as f32), &[2, 2]),
                &Tensor::new(&[1u32, 0], &Device::Cpu).unwrap(),
            )
            .unwrap(),
        );
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn cosine_counts_real_tokens_only() {
        // batch 1, len 3, hidden 2: token 0 same direction (cos 1), token 1 orthogonal (cos 0),
        // token 2 opposite but masked out.
        let s = t(&[1.0, 0.0, 0.0, 2.0, 1.0, 1.0], &[1, 3, 2]);
        let tt = t(&[3.0, 0.0, 5.0, 0.0, -1.0, -1.0], &[1, 3, 2]);
        let mask = t(&[1.0, 1.0, 0.0], &[1, 3]);
        let got = scalar(cosine(&s, &tt, &mask).unwrap());
        assert!((got - 0.5).abs() < 1e-6, "{got}");
        let all = t(&[1.0, 1.0, 1.0], &[1, 3]);
        let got = scalar(cosine(&s, &tt, &all).unwrap());
        assert!((got - 1.0).abs() < 1e-6, "(0 + 1 + 2) / 3: {got}");
    }
}
