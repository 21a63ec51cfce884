//! A decision threshold held to a false-positive budget, chosen on held-out examples and stored
//! in the bundle ([`edgebert_runtime::manifest::Decision`]): a spam filter that may call at most
//! 1% of good mail spam answers "spam" only above the probability that keeps it there.

use std::path::PathBuf;

use edgebert_runtime::manifest::Decision;
use edgebert_runtime::text::LongText;
use edgebert_runtime::{Bundle, Classifier, ClassifierOptions};

use crate::data::{read_examples, Columns};
use crate::error::Error;

/// What `edgebert-quantize threshold` does.
#[derive(Debug, Clone)]
pub struct ThresholdJob {
    pub input: PathBuf,
    pub output: PathBuf,
    /// The label the threshold is for (e.g. `spam`); every other label counts as negative.
    pub label: String,
    /// Largest share of negative examples that may be answered `label` (0.01 = 1%).
    pub max_false_positive_rate: f64,
    /// Held-out labelled examples the threshold is chosen on (not the test split).
    pub data: PathBuf,
    pub columns: Columns,
    /// How long texts are read, stored in the bundle too (none: as the bundle already says).
    pub long: Option<LongText>,
    /// A Markdown report of the choice.
    pub report: Option<PathBuf>,
}

/// A threshold and what it does on the examples it was chosen on.
#[derive(Debug, Clone, PartialEq)]
pub struct Operating {
    pub threshold: f32,
    /// Share of the positive examples answered `label`.
    pub recall: f64,
    /// Share of the negative examples answered `label`.
    pub false_positive_rate: f64,
    pub false_positives: usize,
}

/// The threshold with the highest recall at which at most `max_rate` of the negatives'
/// probabilities reach it; of those, one with the fewest false positives, placed in the middle
/// (in logit space) of the thresholds that give the same answers on these examples, so that no
/// example sits on its edge. `p` holds each example's probability of the label, `positive`
/// whether that is its gold label.
pub fn choose(p: &[f32], positive: &[bool], max_rate: f64) -> Operating {
    let mut negatives: Vec<f32> = p
        .iter()
        .zip(positive)
        .filter(|(_, &pos)| !pos)
        .map(|(&x, _)| x)
        .collect();
    negatives.sort_by(|a, b| b.total_cmp(a));
    // Allowed false positives; the threshold must lie above the next negative.
    let allowed = (max_rate.max(0.0) * negatives.len() as f64 + 1e-9).floor() as usize;
    let lowest = match negatives.get(allowed) {
        Some(&x) => next_up(x).min(1.0),
        None => 0.0,
    };
    // Up to the least probable positive it catches, recall stays the same; from just above the
    // negative below that positive, false positives are fewest.
    let highest = p
        .iter()
        .zip(positive)
        .filter(|(&x, &pos)| pos && x >= lowest)
        .map(|(&x, _)| x)
        .fold(f32::NAN, f32::min);
    let threshold = if highest.is_nan() {
        lowest
    } else {
        let below = negatives
            .iter()
            .copied()
            .filter(|&x| x < highest)
            .fold(f32::NEG_INFINITY, f32::max);
        let low = if below.is_finite() {
            next_up(below).max(lowest)
        } else {
            lowest
        };
        logit_middle(low, highest).clamp(low, highest)
    };
    operating(p, positive, threshold)
}

/// The probability halfway between `a` and `b` in logit space (ends clamped to 1e-7 of 0 and 1).
fn logit_middle(a: f32, b: f32) -> f32 {
    let logit = |x: f32| {
        let x = f64::from(x).clamp(1e-7, 1.0 - 1e-7);
        (x / (1.0 - x)).ln()
    };
    let m = (logit(a) + logit(b)) / 2.0;
    (1.0 / (1.0 + (-m).exp())) as f32
}

/// Recall and false positives of `threshold`.
pub fn operating(p: &[f32], positive: &[bool], threshold: f32) -> Operating {
    let (mut tp, mut pos, mut fp, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for (&x, &is_pos) in p.iter().zip(positive) {
        let hit = x >= threshold;
        if is_pos {
            pos += 1;
            tp += usize::from(hit);
        } else {
            neg += 1;
            fp += usize::from(hit);
        }
    }
    Operating {
        threshold,
        recall: tp as f64 / pos.max(1) as f64,
        false_positive_rate: fp as f64 / neg.max(1) as f64,
        false_positives: fp,
    }
}

/// The smallest f32 above `x` (for x in [0, 1]).
fn next_up(x: f32) -> f32 {
    if x.is_nan() || x >= 1.0 {
        return 1.0;
    }
    f32::from_bits(x.max(0.0).to_bits() + u32::from(x > 0.0)).max(f32::MIN_POSITIVE)
}

/// Runs `job`: reads the bundle, classifies the examples, chooses the threshold and writes the
/// bundle with it (atomically, never over the input). Returns the choice.
pub fn run(job: &ThresholdJob) -> Result<Operating, Error> {
    if !(0.0..1.0).contains(&job.max_false_positive_rate) {
        return Err(Error::Usage(format!(
            "--max-false-positives {} is not a share below 1 (0.01 = 1%)",
            job.max_false_positive_rate
        )));
    }
    let mut bundle = Bundle::read(&job.input)?;
    let labels = bundle.manifest.labels.clone();
    let Some(label) = labels.iter().position(|l| *l == job.label) else {
        return Err(Error::Usage(format!(
            "the model has no label `{}` (its labels: {})",
            job.label,
            labels.join(", ")
        )));
    };
    let examples = read_examples(&job.data, &job.columns, &labels)?;
    let positive: Vec<bool> = examples.iter().map(|e| e.label == label).collect();
    if positive.iter().all(|&x| x) || !positive.iter().any(|&x| x) {
        return Err(Error::Usage(format!(
            "{}: a threshold needs examples of `{}` and of other labels",
            job.data.display(),
            job.label
        )));
    }
    // Probabilities are the same under any decision rule; long texts read as they will be.
    let mut classifier = Classifier::from_bundle(
        &bundle,
        ClassifierOptions {
            long: job.long,
            ..ClassifierOptions::default()
        },
    )?;
    let bar = edgebert_runtime::progress::bar(examples.len() as u64, "threshold");
    let scored = crate::eval::evaluate(&mut classifier, &examples, &bar)?;
    bar.finish_and_clear();
    // A text that cannot be read is answered by nobody: count it as never `label`.
    let p: Vec<f32> = scored
        .probabilities
        .iter()
        .map(|x| x.as_ref().map_or(0.0, |x| x[label]))
        .collect();
    let chosen = choose(&p, &positive, job.max_false_positive_rate);
    if chosen.false_positive_rate > job.max_false_positive_rate {
        return Err(Error::Usage(format!(
            "no threshold keeps false positives within {:.2}%: {} of the other examples have \
             probability 1 of `{}`",
            100.0 * job.max_false_positive_rate,
            chosen.false_positives,
            job.label
        )));
    }
    let m = &mut bundle.manifest;
    m.defaults.decision = Some(Decision {
        label: job.label.clone(),
        threshold: chosen.threshold,
    });
    if job.long.is_some() {
        m.defaults.long = job.long;
    }
    crate::job::set_metric(
        &mut m.provenance.metrics,
        "threshold_dev_recall",
        chosen.recall,
    );
    crate::job::set_metric(
        &mut m.provenance.metrics,
        "threshold_dev_false_positive_rate",
        chosen.false_positive_rate,
    );
    if let Some(path) = &job.report {
        let text = report(job, &p, &positive, &chosen);
        edgebert_runtime::fsutil::write_atomic(path, text.as_bytes(), &[&job.input, &job.data])?;
    }
    bundle.write(&job.output, &[job.input.as_path(), job.data.as_path()])?;
    Ok(chosen)
}

/// The choice, and what other budgets would have given, as Markdown.
fn report(job: &ThresholdJob, p: &[f32], positive: &[bool], chosen: &Operating) -> String {
    let (pos, neg) = (
        positive.iter().filter(|&&x| x).count(),
        positive.iter().filter(|&&x| !x).count(),
    );
    let mut out = format!(
        "# Decision threshold for `{label}`\n\n\
         - Chosen on: `{data}` ({pos} `{label}`, {neg} other), long texts read as `{long}`\n\
         - Budget: at most {budget:.2}% of the others answered `{label}`\n\
         - Chosen: answer `{label}` when its probability is at least **{t}**: recall {r:.2}%, \
         false positives {fp} of {neg} ({fpr:.2}%)\n\n\
         | false-positive budget | threshold | recall | false positives |\n|---:|---:|---:|---:|\n",
        label = job.label,
        data = job.data.display(),
        long = job
            .long
            .map_or("as the bundle says".into(), |l| l.to_string()),
        budget = 100.0 * job.max_false_positive_rate,
        t = chosen.threshold,
        r = 100.0 * chosen.recall,
        fp = chosen.false_positives,
        fpr = 100.0 * chosen.false_positive_rate,
    );
    for budget in [0.0, 0.0025, 0.005, 0.01, 0.02, 0.05] {
        let o = choose(p, positive, budget);
        out.push_str(&format!(
            "| {:.2}% | {} | {:.2}% | {} ({:.2}%) |\n",
            100.0 * budget,
            o.threshold,
            100.0 * o.recall,
            o.false_positives,
            100.0 * o.false_positive_rate
        ));
    }
    let argmax = operating(p, positive, 0.5);
    out.push_str(&format!(
        "\nAt 0.5 (the most probable label, two labels): recall {:.2}%, false positives {} \
         ({:.2}%).\n",
        100.0 * argmax.recall,
        argmax.false_positives,
        100.0 * argmax.false_positive_rate
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_recall_within_the_budget_wins() {
        // Negatives at 0.9, 0.6, 0.2, 0.1; positives at 0.95, 0.7, 0.5.
        let p = [0.9, 0.6, 0.2, 0.1, 0.95, 0.7, 0.5];
        let pos = [false, false, false, false, true, true, true];
        // No false positive: above 0.9, so one positive of three.
        let none = choose(&p, &pos, 0.0);
        assert!(none.threshold > 0.9 && none.threshold < 0.95);
        assert_eq!((none.false_positives, none.recall), (0, 1.0 / 3.0));
        // One of four allowed (25%): above 0.6, two positives.
        let one = choose(&p, &pos, 0.25);
        assert!(one.threshold > 0.6 && one.threshold <= 0.7);
        assert_eq!(one.false_positives, 1);
        assert!((one.recall - 2.0 / 3.0).abs() < 1e-12);
        // Just under two of four still allows one.
        assert_eq!(choose(&p, &pos, 0.49).false_positives, 1);
        // Everything allowed: every positive, the threshold below the least probable one.
        let all = choose(&p, &pos, 1.0);
        assert!(all.threshold < 0.5);
        assert_eq!(all.recall, 1.0);
        // Halfway in logit space between the last negative it must exclude and the last
        // positive it catches: 0.6 and 0.7 give about 0.652.
        assert!((one.threshold - logit_middle(0.6, 0.7)).abs() < 1e-6);
        assert!((logit_middle(0.6, 0.7) - 0.6518).abs() < 1e-3);
    }

    #[test]
    fn of_equal_recalls_the_fewest_false_positives() {
        // Three negatives close together; two allowed. Catching the positive at 0.3 needs no
        // false positive at all, so none is taken.
        let p = [0.2772, 0.2404, 0.2402, 0.1, 0.9, 0.3, 0.05];
        let pos = [false, false, false, false, true, true, true];
        let o = choose(&p, &pos, 0.5);
        assert_eq!(o.false_positives, 0);
        assert!((o.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            o.threshold > 0.2772 && o.threshold <= 0.3,
            "{}",
            o.threshold
        );
    }

    #[test]
    fn ties_with_a_negative_stay_out() {
        // A positive tied with the negative that must stay out is left out with it.
        let p = [0.8, 0.8, 0.3];
        let pos = [false, true, true];
        let o = choose(&p, &pos, 0.0);
        assert_eq!(o.false_positives, 0);
        assert!((o.recall - 0.0).abs() < 1e-12);
        // A probability of 1.0 among the negatives: nothing can be above it.
        let o = choose(&[1.0, 1.0], &[false, true], 0.0);
        assert_eq!(o.threshold, 1.0);
        assert_eq!(
            o.false_positives, 1,
            "1.0 ≥ 1.0: the rule cannot exclude it"
        );
    }

    #[test]
    fn next_up_is_the_next_float() {
        assert!(next_up(0.5) > 0.5);
        assert_eq!(next_up(0.5), f32::from_bits(0.5f32.to_bits() + 1));
        assert_eq!(next_up(0.0), f32::MIN_POSITIVE);
        assert_eq!(next_up(1.0), 1.0);
    }
}
