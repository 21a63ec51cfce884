//! The distillation objective: α·KL·T² + β·CE + γ·(1 − cos), each term from differentiable ops.

use candle_core::{Tensor, D};

use crate::error::Result;

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
