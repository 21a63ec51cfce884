//! Measurements behind `edgebert bench`: latency per text at several lengths, throughput, peak
//! memory. Timing lives here and in `benches/`, never in tests.

use std::time::{Duration, Instant};

use edgebert_boards::marker;
use serde::Serialize;

use crate::classifier::Classifier;
use crate::engine::OpTime;
use crate::error::Result;

/// Latency and throughput at one sequence length.
#[derive(Debug, Clone, Serialize)]
pub struct LengthStats {
    /// Tokens per text, special tokens included.
    pub tokens: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// One text at a time.
    pub texts_per_s: f64,
    /// Texts given together (`classify_batch`), batched as the classifier is configured.
    pub batched_texts_per_s: f64,
}

/// A text of exactly `tokens` tokens (special tokens included) for this model's tokenizer, made
/// by repeating one word that is a single token; `None` if the model cannot take that many.
pub fn synthetic_text(classifier: &Classifier, tokens: usize) -> Option<String> {
    let candidates = ["good", "the", "movie", "a", "film", "b", "c", "x"];
    let word = candidates
        .iter()
        .find(|w| classifier.encode(w).is_ok_and(|e| e.ids.len() == 3))?;
    let text = vec![*word; tokens.checked_sub(2)?].join(" ");
    let e = classifier.encode(&text).ok()?;
    (e.ids.len() == tokens && !e.truncated).then_some(text)
}

/// The lengths this model can take, each with its synthetic text.
fn length_texts(classifier: &Classifier, lengths: &[usize]) -> Vec<(usize, String)> {
    lengths
        .iter()
        .filter_map(|&n| synthetic_text(classifier, n).map(|t| (n, t)))
        .collect()
}

/// Times `iterations` single-text runs (after one warm-up run) and one batched run per length.
pub fn measure(
    classifier: &mut Classifier,
    lengths: &[usize],
    iterations: usize,
) -> Result<Vec<LengthStats>> {
    let mut out = Vec::new();
    for (tokens, text) in length_texts(classifier, lengths) {
        classifier.classify(&text)?;
        let mut times: Vec<Duration> = Vec::with_capacity(iterations);
        // Timed passes carry their length as mark, for instruction counts under emulation.
        let mark = marker::length_mark(tokens);
        for _ in 0..iterations.max(1) {
            marker::mark(mark);
            let start = Instant::now();
            classifier.classify(&text)?;
            times.push(start.elapsed());
            marker::mark(0);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = times.iter().map(|&d| ms(d)).sum::<f64>() / times.len() as f64;
        let batch = vec![text.as_str(); iterations.max(1)];
        // Warm up with the same batch, so plan preparation is not timed.
        classifier.classify_batch(&batch)?;
        let start = Instant::now();
        classifier.classify_batch(&batch)?;
        let batched = start.elapsed().as_secs_f64();
        out.push(LengthStats {
            tokens,
            p50_ms: ms(percentile(&times, 0.50)),
            p95_ms: ms(percentile(&times, 0.95)),
            texts_per_s: 1e3 / mean,
            batched_texts_per_s: batch.len() as f64 / batched,
        });
    }
    Ok(out)
}

/// Where one length's time goes: every operator kind of its plan, most expensive first.
#[derive(Debug, Clone, Serialize)]
pub struct LengthProfile {
    pub tokens: usize,
    /// Sum over operators: close to one run's latency.
    pub total_ms: f64,
    pub ops: Vec<OpTime>,
}

/// Profiles `runs` single-text runs per length (see [`Classifier::profile`]).
pub fn profile(
    classifier: &mut Classifier,
    lengths: &[usize],
    runs: usize,
) -> Result<Vec<LengthProfile>> {
    let mut out = Vec::new();
    for (tokens, text) in length_texts(classifier, lengths) {
        let ops = classifier.profile(&text, runs)?;
        out.push(LengthProfile {
            tokens,
            total_ms: ops.iter().map(|o| o.ms_per_run).sum(),
            ops,
        });
    }
    Ok(out)
}

/// A profile as a plain-text table per length, operators below 1% of the time folded into one
/// line.
pub fn profile_table(profiles: &[LengthProfile]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for p in profiles {
        let _ = writeln!(s, "{} tokens: {:.3} ms per run", p.tokens, p.total_ms);
        let _ = writeln!(
            s,
            "  {:<40} {:>5} {:>9} {:>6}",
            "operator", "nodes", "ms", "share"
        );
        let (mut rest_nodes, mut rest_ms) = (0, 0.0);
        for o in &p.ops {
            if o.ms_per_run < 0.01 * p.total_ms {
                rest_nodes += o.nodes;
                rest_ms += o.ms_per_run;
                continue;
            }
            let share = 100.0 * o.ms_per_run / p.total_ms;
            let _ = writeln!(
                s,
                "  {:<40} {:>5} {:>9.3} {share:>5.1}%",
                o.op, o.nodes, o.ms_per_run
            );
        }
        if rest_nodes > 0 {
            let share = 100.0 * rest_ms / p.total_ms;
            let _ = writeln!(
                s,
                "  {:<40} {:>5} {:>9.3} {share:>5.1}%",
                "(others, <1% each)", rest_nodes, rest_ms
            );
        }
    }
    s
}

/// `edgebert bench`'s table: one line per length, then the cold start and the peak RSS.
pub fn stats_table(
    threads: usize,
    iterations: usize,
    stats: &[LengthStats],
    cold_ms: f64,
    peak_rss_kib: Option<u64>,
) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "threads {threads}, {iterations} runs per length");
    let _ = writeln!(
        s,
        "{:>7} {:>9} {:>9} {:>10} {:>14}",
        "tokens", "p50 ms", "p95 ms", "texts/s", "batched/s"
    );
    for l in stats {
        let _ = writeln!(
            s,
            "{:>7} {:>9.3} {:>9.3} {:>10.1} {:>14.1}",
            l.tokens, l.p50_ms, l.p95_ms, l.texts_per_s, l.batched_texts_per_s
        );
    }
    let _ = writeln!(s, "cold start (load + first answer): {cold_ms:.1} ms");
    let _ = match peak_rss_kib {
        Some(kib) => writeln!(s, "peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => writeln!(s, "peak RSS: not reported by this OS"),
    };
    s
}

/// The nearest-rank percentile of sorted durations.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident memory of this process in KiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&d, 0.95), Duration::from_millis(95));
        assert_eq!(percentile(&d[..1], 0.95), Duration::from_millis(1));
    }
}
