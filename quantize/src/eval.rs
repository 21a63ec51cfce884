//! Accuracy of a classifier through the runtime (tract), as the device will run it.

use edgebert_runtime::Classifier;
use serde::Serialize;

use crate::data::Example;

/// How a model did on labelled examples.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Predicted label per example; `None` where the text could not be classified (counted wrong).
    #[serde(skip)]
    pub predictions: Vec<Option<usize>>,
    /// Each label's probability per example, in the model's label order; `None` where the text
    /// could not be classified.
    #[serde(skip)]
    pub probabilities: Vec<Option<Vec<f32>>>,
}

/// Texts classified per call, so the progress bar moves and batching still pays.
const CHUNK: usize = 64;

/// Classifies every example and scores the answers.
pub fn evaluate(
    classifier: &mut Classifier,
    examples: &[Example],
    progress: &indicatif::ProgressBar,
) -> Result<Evaluation, edgebert_runtime::Error> {
    let labels = classifier.labels().to_vec();
    let mut predictions = Vec::with_capacity(examples.len());
    let mut probabilities = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(CHUNK) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        for r in classifier.classify_batch(&texts)? {
            let p = r.ok();
            predictions.push(
                p.as_ref()
                    .and_then(|p| labels.iter().position(|l| *l == p.label)),
            );
            probabilities.push(p.map(|p| {
                labels
                    .iter()
                    .map(|l| {
                        p.scores
                            .iter()
                            .find(|s| s.label == *l)
                            .map_or(0.0, |s| s.probability)
                    })
                    .collect()
            }));
        }
        progress.inc(chunk.len() as u64);
    }
    let gold: Vec<usize> = examples.iter().map(|e| e.label).collect();
    Ok(Evaluation {
        examples: examples.len(),
        accuracy: accuracy(&gold, &predictions),
        macro_f1: macro_f1(&gold, &predictions, labels.len()),
        predictions,
        probabilities,
    })
}

/// Share of predictions equal to the gold label.
pub fn accuracy(gold: &[usize], predicted: &[Option<usize>]) -> f64 {
    let right = gold
        .iter()
        .zip(predicted)
        .filter(|(g, p)| Some(**g) == **p)
        .count();
    right as f64 / gold.len().max(1) as f64
}

/// Unweighted mean over labels of F1; a label never predicted nor present scores 0 and still counts.
pub fn macro_f1(gold: &[usize], predicted: &[Option<usize>], labels: usize) -> f64 {
    let mut total = 0.0;
    for label in 0..labels {
        let tp = gold
            .iter()
            .zip(predicted)
            .filter(|(g, p)| **g == label && **p == Some(label))
            .count();
        let fp = gold
            .iter()
            .zip(predicted)
            .filter(|(g, p)| **g != label && **p == Some(label))
            .count();
        let fn_ = gold
            .iter()
            .zip(predicted)
            .filter(|(g, p)| **g == label && **p != Some(label))
            .count();
        let denom = 2 * tp + fp + fn_;
        total += if denom == 0 {
            0.0
        } else {
            2.0 * tp as f64 / denom as f64
        };
    }
    total / labels.max(1) as f64
}

/// Share of examples where two models gave the same label.
pub fn agreement(a: &[Option<usize>], b: &[Option<usize>]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_hand_computed_values() {
        let gold = [0, 0, 1, 1];
        let pred = [Some(0), Some(1), Some(1), None];
        assert_eq!(accuracy(&gold, &pred), 0.5);
        // label 0: tp 1, fp 0, fn 1 → 2/3; label 1: tp 1, fp 1, fn 1 → 1/2.
        assert!((macro_f1(&gold, &pred, 2) - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(agreement(&pred, &[Some(0), Some(0), Some(1), None]), 0.75);
    }
}
