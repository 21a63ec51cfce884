//! `edgebert bench`: latency, throughput, cold start and peak memory, or a profile per operator.

use std::path::PathBuf;
use std::time::Instant;

use edgebert_runtime::cli::{exit, ModelSource};
use edgebert_runtime::{bench, Classifier, ClassifierOptions};
use serde_json::json;

use crate::Failure;

pub(crate) fn run(
    bundle: Option<PathBuf>,
    options: ClassifierOptions,
    lengths: &[usize],
    iterations: usize,
    profile: bool,
    json: bool,
) -> Result<u8, Failure> {
    let threads = options.threads;
    let start = Instant::now();
    let mut classifier = match &bundle {
        Some(path) => Classifier::open(path, options)?,
        None => {
            crate::built_in()?;
            ModelSource::Embedded.load(options)?
        }
    };
    let first = bench::synthetic_text(&classifier, 16).unwrap_or_else(|| "good".into());
    classifier.classify(&first)?;
    let cold_ms = start.elapsed().as_secs_f64() * 1e3;
    if profile {
        let profiles = bench::profile(&mut classifier, lengths, iterations.max(1))?;
        if json {
            let v = json!({"threads": threads, "runs": iterations, "lengths": profiles});
            println!("{v}");
        } else {
            println!("threads {threads}, {iterations} runs per length");
            print!("{}", bench::profile_table(&profiles));
        }
        return Ok(exit::OK);
    }
    let stats = bench::measure(&mut classifier, lengths, iterations.max(1))?;
    let rss = bench::peak_rss_kib();
    if json {
        let v = json!({"threads": threads, "iterations": iterations, "cold_start_ms": cold_ms,
            "peak_rss_kib": rss, "lengths": stats});
        println!("{v}");
    } else {
        print!(
            "{}",
            bench::stats_table(threads, iterations, &stats, cold_ms, rss)
        );
    }
    Ok(exit::OK)
}
