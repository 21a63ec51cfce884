//! Scoring a model on labelled examples: accuracy, macro-F1 and the confusion matrix, with candle
//! (a checkpoint) or the runtime (an ONNX file or a bundle, i.e. tract as on the device).

use candle_core::Tensor;
use serde::Serialize;

use crate::data::{eval_batches, Tokens};
use crate::error::Result;
use crate::model::{Batch, Bert};

/// How a model did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scores {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// `confusion[gold][predicted]`; predictions that failed are not counted in any column.
    pub confusion: Vec<Vec<usize>>,
}

impl Scores {
    pub fn new(gold: &[usize], predicted: &[Option<usize>], labels: usize) -> Scores {
        let mut confusion = vec![vec![0; labels]; labels];
        for (g, p) in gold.iter().zip(predicted) {
            if let Some(p) = p {
                confusion[*g][*p] += 1;
            }
        }
        Scores {
            examples: gold.len(),
            accuracy: edgebert_quantize::eval::accuracy(gold, predicted),
            macro_f1: edgebert_quantize::eval::macro_f1(gold, predicted, labels),
            confusion,
        }
    }

    /// Half-width of the 95% (Wilson) interval of the accuracy, in points.
    pub fn ci95_points(&self) -> f64 {
        let n = self.examples.max(1) as f64;
        let p = self.accuracy;
        let z = 1.96f64;
        let denom = 1.0 + z * z / n;
        z * ((p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / denom * 100.0
    }

    /// The confusion matrix as a Markdown table.
    pub fn confusion_markdown(&self, labels: &[String]) -> String {
        let mut s = String::from("| gold \\ predicted |");
        for l in labels {
            s.push_str(&format!(" {l} |"));
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(labels.len()));
        s.push('\n');
        for (l, row) in labels.iter().zip(&self.confusion) {
            s.push_str(&format!("| {l} |"));
            for n in row {
                s.push_str(&format!(" {n} |"));
            }
            s.push('\n');
        }
        s
    }
}

/// Logits of every example, in input order (eval mode: no dropout).
pub fn logits(
    model: &Bert,
    tokens: &[Tokens],
    batch_size: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Vec<f32>>> {
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let mut out = vec![Vec::new(); tokens.len()];
    let pad = pad_id(model);
    for idx in eval_batches(&lengths, batch_size) {
        let batch = batch_of(tokens, &idx, pad, model)?;
        let rows: Vec<Vec<f32>> = model.forward(&batch, None)?.logits.to_vec2()?;
        for (i, r) in idx.iter().zip(rows) {
            out[*i] = r;
        }
        progress.inc(idx.len() as u64);
    }
    Ok(out)
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Scores a candle model on tokenized examples.
pub fn score(
    model: &Bert,
    tokens: &[Tokens],
    gold: &[usize],
    batch_size: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Scores> {
    let preds: Vec<Option<usize>> = logits(model, tokens, batch_size, progress)?
        .iter()
        .map(|l| Some(argmax(l)))
        .collect();
    Ok(Scores::new(gold, &preds, model.labels.len()))
}

/// Each example's logits from its windows' (`data::tokenize_windows`): `owners[w]` is window
/// `w`'s example and weight, as the runtime averages them.
pub fn averaged(windows: &[Vec<f32>], owners: &[(usize, f32)], examples: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); examples];
    for (logits, &(ix, weight)) in windows.iter().zip(owners) {
        let sum = &mut out[ix];
        sum.resize(logits.len(), 0.0);
        for (s, x) in sum.iter_mut().zip(logits) {
            *s += weight * x;
        }
    }
    out
}

/// The padding id training batches use: the config's `pad_token_id`.
pub(crate) fn pad_id(model: &Bert) -> u32 {
    model.config.pad_token_id as u32
}

/// A batch of the examples `idx`.
pub(crate) fn batch_of(tokens: &[Tokens], idx: &[usize], pad: u32, model: &Bert) -> Result<Batch> {
    let rows: Vec<(&[u32], &[u32])> = idx
        .iter()
        .map(|&i| (tokens[i].ids.as_slice(), tokens[i].types.as_slice()))
        .collect();
    Batch::new(&rows, pad, model.device())
}

/// Labels of examples `idx` as a `u32` tensor.
pub(crate) fn labels_of(gold: &[usize], idx: &[usize], model: &Bert) -> Result<Tensor> {
    let v: Vec<u32> = idx.iter().map(|&i| gold[i] as u32).collect();
    Ok(Tensor::from_vec(v, idx.len(), model.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_interval() {
        let s = Scores::new(&[0, 0, 1, 1], &[Some(0), Some(1), Some(1), None], 2);
        assert_eq!(s.confusion, vec![vec![1, 1], vec![0, 1]]);
        assert_eq!(s.accuracy, 0.5);
        // Wilson interval for 50% of 4: ±1.96·√(1/16 + 1.96²/64)/(1 + 1.96²/4) = ±35.0 points.
        assert!((s.ci95_points() - 35.0).abs() < 0.05, "{}", s.ci95_points());
        assert_eq!(argmax(&[0.1, 3.0, -1.0]), 1);
    }

    #[test]
    fn windows_are_averaged_into_their_examples_by_weight() {
        let windows = [
            vec![1.0, 0.0],
            vec![4.0, 2.0],
            vec![0.0, 8.0],
            vec![-1.0, 1.0],
        ];
        let owners = [(0, 0.5), (1, 1.0), (0, 0.5), (2, 1.0)];
        let got = averaged(&windows, &owners, 3);
        assert_eq!(got, vec![vec![0.5, 4.0], vec![4.0, 2.0], vec![-1.0, 1.0]]);
    }
}
