//! What a run leaves behind for people: training curves (PNG/SVG) and a Markdown report.

use std::path::Path;

use edgebert_quantize::plot::{write_charts, Chart, Series};

use crate::error::{DistillError, Result};
use crate::eval::Scores;
use crate::train::{Job, Kind, MetricRecord, Outcome};

/// `training.png` / `training.svg`: training loss by step, dev accuracy by epoch.
pub fn training_curves(dir: &Path, records: &[MetricRecord], kind: &str) -> Result<()> {
    let losses = loss_points(records);
    let dev = dev_by_epoch(records);
    let charts = [
        Chart {
            title: format!("{kind}: training loss"),
            x_label: "step".into(),
            y_label: "loss (mean of each window of steps)".into(),
            series: vec![Series {
                name: "train".into(),
                points: losses,
            }],
            whole_x: true,
            ..Default::default()
        },
        Chart {
            title: format!("{kind}: dev accuracy"),
            x_label: "epoch".into(),
            y_label: "accuracy (%)".into(),
            series: vec![Series {
                name: "dev".into(),
                points: dev,
            }],
            whole_x: true,
            // One dev example is 0.1 to 0.2 points here: at least 2 points tall.
            min_y_span: 2.0,
            ..Default::default()
        },
    ];
    write_charts(&dir.join("training"), &charts).map_err(|e| DistillError::Plot {
        path: e.path,
        message: e.message,
    })?;
    Ok(())
}

/// (step, loss) of each step record, the step at the middle of the window its loss is the mean
/// of: a short window at an epoch's end (its last steps only) sits where its steps are, not after
/// them, so the curve shows no drop that training did not make.
fn loss_points(records: &[MetricRecord]) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| match r {
            MetricRecord::Step {
                step, loss, window, ..
            } => Some((*step as f64 - (*window).max(1) as f64 / 2.0 + 0.5, *loss)),
            MetricRecord::Epoch { .. } => None,
        })
        .collect()
}

fn pct(s: &Scores) -> String {
    format!(
        "{:.2}% ± {:.2} | {:.4} | {}",
        s.accuracy * 100.0,
        s.ci95_points(),
        s.macro_f1,
        s.examples
    )
}

/// (epoch, dev accuracy in %) of each epoch record.
fn dev_by_epoch(records: &[MetricRecord]) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| match r {
            MetricRecord::Epoch {
                epoch,
                dev_accuracy,
                ..
            } => Some((*epoch as f64, dev_accuracy * 100.0)),
            MetricRecord::Step { .. } => None,
        })
        .collect()
}

/// The Markdown report of a finished run.
pub fn training_report(job: &Job, out: &Outcome, records: &[MetricRecord]) -> String {
    let m = &job.model;
    let c = &m.config;
    let s = &job.settings;
    let mut r = String::new();
    let kind = match &job.kind {
        Kind::Teacher => "Teacher fine-tuning".to_string(),
        Kind::Student { layers, .. } => format!("Student distillation (teacher layers {layers:?})"),
    };
    r.push_str(&format!("# {kind}\n\n"));
    r.push_str(&format!("- From: `{}`\n", job.source));
    r.push_str(&format!(
        "- Model: {} layers, hidden {}, {} heads, {} parameters ({:.1} MB as f32)\n",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        m.parameter_count(),
        m.parameter_count() as f64 * 4.0 / 1e6
    ));
    r.push_str(&format!("- Labels: {}\n", m.labels.join(", ")));
    r.push_str(&format!(
        "- Data: {} train / {} dev / {} test examples\n",
        job.data.train.len(),
        job.data.dev.len(),
        job.data.test.len()
    ));
    r.push_str(&format!(
        "- Settings: {} epochs (ran {}), batch {}, lr {:e}, warm-up {:.0}%, weight decay {}, clip {}, max length {}, seed {}\n",
        s.epochs, out.epochs_run, s.batch_size, s.lr, s.warmup * 100.0, s.adamw.weight_decay, s.adamw.clip_norm, s.max_len, s.seed
    ));
    if let Kind::Student { loss, .. } = &job.kind {
        r.push_str(&format!(
            "- Loss: {}·KL·T² + {}·CE + {}·(1 − cos), T = {}\n",
            loss.alpha, loss.beta, loss.gamma, loss.temperature
        ));
    }
    r.push_str(&format!(
        "- Time: {:.1} min, {} steps, {:.1} training examples/s\n\n",
        out.seconds / 60.0,
        out.steps,
        out.examples_per_second
    ));
    r.push_str("## Accuracy\n\n| model | split | accuracy (95% CI) | macro-F1 | examples |\n|---|---|---|---|---|\n");
    if let Some(t) = &out.teacher_test {
        r.push_str(&format!("| teacher | test | {} |\n", pct(t)));
    }
    if let Some(d) = &out.dev {
        r.push_str(&format!("| this model | dev | {} |\n", pct(d)));
    }
    if let Some(t) = &out.test {
        r.push_str(&format!("| this model | test | {} |\n", pct(t)));
        if let Some(teacher) = &out.teacher_test {
            r.push_str(&format!(
                "\nStudent / teacher test accuracy: {:.1}%.\n",
                t.accuracy / teacher.accuracy.max(1e-9) * 100.0
            ));
        }
        r.push_str("\nTest confusion matrix:\n\n");
        r.push_str(&t.confusion_markdown(&m.labels));
    }
    let dev_by_epoch: Vec<String> = dev_by_epoch(records)
        .iter()
        .map(|(epoch, accuracy)| format!("{epoch}: {accuracy:.2}%"))
        .collect();
    r.push_str(&format!(
        "\nDev accuracy by epoch: {}.\n\n",
        dev_by_epoch.join(", ")
    ));
    r.push_str("![training curves](training.png)\n");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, loss: f64, window: usize) -> MetricRecord {
        MetricRecord::Step {
            step,
            epoch: 0.0,
            loss,
            window,
            lr: 1e-4,
            grad_norm: 1.0,
            examples_per_s: 1.0,
        }
    }

    #[test]
    fn loss_points_sit_in_the_middle_of_their_window() {
        let records = [
            step(10, 0.9, 10),
            step(20, 0.7, 10),
            step(23, 0.6, 3),
            MetricRecord::Epoch {
                step: 23,
                epoch: 1,
                dev_accuracy: 0.8,
                dev_macro_f1: 0.8,
            },
            // A record from before `window` existed: at its step.
            step(30, 0.5, 0),
        ];
        assert_eq!(
            loss_points(&records),
            [(5.5, 0.9), (15.5, 0.7), (22.0, 0.6), (30.0, 0.5)]
        );
    }
}
